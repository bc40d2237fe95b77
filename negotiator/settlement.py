"""The settlement rail interface: what the runtime needs from a payment network.

``payments.InProcessRail`` (embedded default) and the Lightning rails implement it. Every method is
a coroutine because real rails do I/O; an in-process rail simply never suspends. Failures raise the
typed errors of :mod:`negotiator.errors` (PaymentFailed, AlreadyPaid, InvoiceError).
"""

from __future__ import annotations

import enum
from typing import Protocol

import msgspec

from negotiator.errors import InvoiceError
from negotiator.messages import Invoice
from negotiator.metrics import PaymentStats


class PaymentStatus(enum.StrEnum):
    """What the rail knows about a payment hash."""

    UNKNOWN = "unknown"
    PENDING = "pending"
    COMPLETE = "complete"
    FAILED = "failed"


class PaymentResult(msgspec.Struct, frozen=True, gc=False):
    """A completed payment: the preimage is the proof (sha256(preimage) == payment_hash)."""

    payment_hash: str
    preimage: str
    amount_msat: int
    fee_msat: int


def reissue(existing: Invoice | None, payee: int, amount_msat: int, label: str) -> Invoice | None:
    """The idempotency rule every rail applies to a label it has seen: the same payee and amount
    get the same invoice back, other terms are refused (InvoiceError ``label_reused``)."""
    if existing is None:
        return None
    if existing.payee != payee or existing.amount_msat != amount_msat:
        raise InvoiceError("label_reused", f"label {label!r} has other terms")
    return existing


class Rail(Protocol):
    """A payment network seen from the runtime."""

    name: str
    """Short label for metrics (``inprocess``, ``lightning``, ``cln``)."""
    stats: PaymentStats
    """What the rail did with its payments (filled by the rail, exported by the metrics)."""
    concurrency: int
    """How many of its calls the settler should keep in flight: 1 for a rail that never
    suspends (in-process), more for one that waits on the network."""

    async def create_invoice(
        self, payee: int, amount_msat: int, label: str, description: str
    ) -> Invoice:
        """Issue an invoice from ``payee``'s node; the same label and terms return the same invoice."""
        ...

    async def pay(self, payer: int, invoice: Invoice) -> PaymentResult:
        """Pay ``invoice`` from ``payer``'s node; all or nothing."""
        ...

    async def lookup(self, payment_hash: str) -> PaymentStatus:
        """What became of a payment (for reconciliation after a timeout or a crash)."""
        ...

    async def balance(self, node: int) -> int:
        """Spendable msat of a node (or of an agent's internal account)."""
        ...
