"""A minimal in-process rail: one account per node, invoices locked by sha256(preimage).

It implements :class:`negotiator.settlement.Rail` exactly as the Lightning rails do, so the seam is
the final one: invoices are idempotent by label, a payment is all or nothing, paying twice is refused
with :class:`AlreadyPaid`, and the preimage is the proof of payment. Preimages are derived from a
seed and the label, so the same run pays with the same hashes (the ledger digest depends on it).
It never suspends: every coroutine returns without awaiting.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping

from negotiator.errors import AlreadyPaid, InvoiceError, PaymentFailed
from negotiator.messages import Invoice
from negotiator.metrics import PaymentStats
from negotiator.settlement import PaymentResult, PaymentStatus, reissue


class InProcessRail:
    """Balances in a dict, invoices in a dict, nothing else."""

    name = "inprocess"
    concurrency = 1

    def __init__(
        self,
        balances: Mapping[int, int],
        *,
        seed: int = 0,
        invoice_expiry_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if any(v < 0 for v in balances.values()):
            raise ValueError("balances cannot be negative")
        self._balances = dict(balances)
        self._key = hashlib.sha256(f"inprocess-rail/{seed}".encode()).digest()
        self._expiry = invoice_expiry_s
        self._clock = clock
        self._invoices: dict[str, tuple[Invoice, str]] = {}
        self._by_label: dict[str, Invoice] = {}
        self._status: dict[str, PaymentStatus] = {}
        self.stats = PaymentStats()

    @property
    def total_msat(self) -> int:
        """All money in the rail (conserved by every payment)."""
        return sum(self._balances.values())

    def _preimage(self, label: str) -> str:
        return hmac.digest(self._key, label.encode(), "sha256").hex()  # one-shot C HMAC

    async def create_invoice(
        self, payee: int, amount_msat: int, label: str, description: str
    ) -> Invoice:
        """Issue (or return the existing) invoice ``label`` payable to ``payee``."""
        if payee not in self._balances:
            raise InvoiceError("unknown_payee", f"no account {payee}")
        if amount_msat <= 0:
            raise InvoiceError("bad_amount", f"{amount_msat} msat")
        existing = reissue(self._by_label.get(label), payee, amount_msat, label)
        if existing is not None:
            return existing
        preimage = self._preimage(label)
        payment_hash = hashlib.sha256(bytes.fromhex(preimage)).hexdigest()
        invoice = Invoice(
            payee,
            amount_msat,
            payment_hash,
            label,
            f"inprocess:{payee}:{amount_msat}:{payment_hash}",
            self._clock() + self._expiry,
        )
        self._invoices[payment_hash] = (invoice, preimage)
        self._by_label[label] = invoice
        self._status[payment_hash] = PaymentStatus.PENDING
        return invoice

    async def pay(self, payer: int, invoice: Invoice) -> PaymentResult:
        """Move the amount from ``payer`` to the payee, or raise and move nothing."""
        entry = self._invoices.get(invoice.payment_hash)
        if entry is None or entry[0] != invoice:
            raise PaymentFailed("unknown_invoice", invoice.payment_hash)
        issued, preimage = entry
        status = self._status[issued.payment_hash]
        if status is PaymentStatus.COMPLETE:
            raise AlreadyPaid("already_paid", issued.payment_hash)
        if self._clock() > issued.expires_at:
            raise PaymentFailed("expired", issued.payment_hash)
        balance = self._balances.get(payer)
        if balance is None:
            raise PaymentFailed("unknown_payer", f"no account {payer}")
        amount = issued.amount_msat
        stats = self.stats
        if balance < amount:
            stats.record("insufficient_funds")
            raise PaymentFailed("insufficient_funds", f"{payer} has {balance} < {amount} msat")
        self._balances[payer] = balance - amount
        self._balances[issued.payee] += amount
        self._status[issued.payment_hash] = PaymentStatus.COMPLETE
        stats.record("succeeded")
        stats.attempts += 1
        stats.amount_msat += amount
        return PaymentResult(issued.payment_hash, preimage, amount, 0)

    async def lookup(self, payment_hash: str) -> PaymentStatus:
        """What became of a payment hash."""
        return self._status.get(payment_hash, PaymentStatus.UNKNOWN)

    async def balance(self, node: int) -> int:
        """The account's balance in msat."""
        if node not in self._balances:
            raise PaymentFailed("unknown_node", f"no account {node}")
        return self._balances[node]
