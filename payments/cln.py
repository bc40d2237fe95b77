"""``ClnRail``: settlement through real Core Lightning nodes, over pyln-client.

pyln-client is synchronous and opens a connection per call, so every call runs in a worker thread
(:func:`negotiator.threads.run_sync`, which keeps a busy negotiation loop from starving it) under a
dedicated CapacityLimiter: the negotiation loop never waits on Lightning, and at most
``concurrency`` calls are in flight. Only documented v26.06 RPCs are used (``invoice``, ``xpay``,
``listinvoices``, ``listpays``, ``listsendpays``, ``listpeerchannels``, ``getinfo``); never the
deprecated ``pay``, ``keysend``, ``renepay`` or ``decodepay``.

Agents map onto the available nodes (many agents per node, each with an internal account there);
two agents on one node settle by internal transfer. Idempotency: the invoice label is the
agreement id (namespaced per run) and its preimage is derived from it, so a retry finds the same
invoice (``invoice`` answers 900, duplicate label: the existing one is used) and never makes a
second payment (``xpay`` answers 219, already paid: the earlier payment is looked up). After a
timeout, a lost connection or a cancellation, the payment is reconciled by payment hash with
``listpays`` / ``listsendpays`` before anything is decided.

Two modes: ``per_trade`` (one Lightning payment per agreement) and ``netted`` (agreements between
two nodes are collected for ``net_window_s`` and settled by one payment per ordered node pair
for the net amount; each agreement is then proven by its own preimage, released by the rail once
the net payment that covers it has completed).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from negotiator import threads
from negotiator.errors import AlreadyPaid, InvoiceError, PaymentFailed
from negotiator.messages import Invoice
from negotiator.metrics import PaymentStats
from negotiator.settlement import PaymentResult, PaymentStatus, reissue

_log = structlog.get_logger(__name__)

XPAY_ERRORS: Mapping[int, str] = {
    203: "destination_refused",
    205: "no_route",
    206: "fee_too_high",
    207: "expired",
    209: "payment_failed",
    219: "already_paid",
}
"""xpay's error codes (CLN v26.06 docs and the recorded transcripts) as the rail's reasons."""

_STATUS = {
    "complete": PaymentStatus.COMPLETE,
    "pending": PaymentStatus.PENDING,
    "failed": PaymentStatus.FAILED,
}


@dataclass(frozen=True, slots=True)
class ClnNode:
    """A lightningd to settle through: a name and its JSON-RPC unix socket."""

    name: str
    socket: str


class _Transport(Exception):
    """The node could not be asked or did not answer (socket gone, connection lost, timeout)."""


@dataclass
class _Net:
    """Agreements collected for one netting window."""

    items: list[tuple[int, int, int, str]] = field(default_factory=list)
    """(payer node, payee node, amount, payment hash)."""
    done: anyio.Event = field(default_factory=anyio.Event)
    fees: dict[str, int] = field(default_factory=dict)
    errors: dict[str, PaymentFailed] = field(default_factory=dict)


class ClnRail:
    """A rail over Core Lightning nodes (see the module docstring)."""

    name = "cln"

    def __init__(
        self,
        nodes: Sequence[ClnNode],
        placement: Mapping[int, int],
        *,
        accounts: Mapping[int, int] | None = None,
        mode: str = "per_trade",
        namespace: str | None = None,
        seed: int = 0,
        concurrency: int = 8,
        timeout_s: float = 60.0,
        invoice_expiry_s: int = 3600,
        max_fee_ppm: int = 10_000,
        max_fee_base_msat: int = 5_000,
        net_window_s: float = 0.25,
        rpc_factory: Callable[[str], Any] | None = None,
        stats: PaymentStats | None = None,
    ) -> None:
        if not nodes:
            raise ValueError("at least one node")
        if mode not in ("per_trade", "netted"):
            raise ValueError(f"unknown mode {mode!r}: choose 'per_trade' or 'netted'")
        if any(not 0 <= n < len(nodes) for n in placement.values()):
            raise ValueError("placement names a node that is not in the list")
        self.nodes = list(nodes)
        self.placement = dict(placement)
        self.accounts: dict[int, int] = {a: int((accounts or {}).get(a, 0)) for a in placement}
        self.mode = mode
        self.namespace = namespace or uuid.uuid4().hex[:12]
        """Prefix of every invoice label, so runs against the same nodes never collide; a resumed
        run passes its namespace again to find its own invoices."""
        self.timeout_s = timeout_s
        self.expiry = invoice_expiry_s
        self.max_fee_ppm = max_fee_ppm
        self.max_fee_base_msat = max_fee_base_msat
        self.net_window_s = net_window_s
        self.stats = stats or PaymentStats()
        self.stats.events = self._events
        self._key = hashlib.sha256(f"cln-rail/{seed}/{self.namespace}".encode()).digest()
        factory = rpc_factory or _pyln
        self._rpcs = [factory(n.socket) for n in nodes]
        self._limiter = anyio.CapacityLimiter(concurrency)
        self.concurrency = concurrency if mode == "per_trade" else 10_000
        """What the settler may have in flight: the node calls are bounded by the limiter; in
        netted mode every agreement of a window must be waiting at once."""
        self._invoices: dict[str, tuple[Invoice, str]] = {}
        self._status: dict[str, PaymentStatus] = {}
        self._payer_node: dict[str, int] = {}
        self._net: _Net | None = None
        self._counts = {"reconciled": 0, "net_payments": 0, "internal": 0}

    # -- calling the nodes ---------------------------------------------------------------------

    async def call(self, node: int, method: str, **params: Any) -> Any:
        """One JSON-RPC call to ``node`` in a worker thread; RpcError passes through, transport
        trouble (socket missing, connection lost) becomes _Transport."""
        rpc = self._rpcs[node]
        try:
            return await threads.run_sync(
                functools.partial(rpc.call, method, params),
                abandon_on_cancel=True,
                limiter=self._limiter,
            )
        except OSError as exc:
            raise _Transport(f"{self.nodes[node].name}: {exc}") from None
        except Exception as exc:
            if _rpc_error(exc) is None and type(exc).__name__ == "RpcError":
                raise _Transport(f"{self.nodes[node].name}: {exc}") from None  # lost connection
            raise

    def _label(self, label: str) -> str:
        return f"{self.namespace}/{label}"

    def _preimage(self, label: str) -> str:
        return hmac.digest(self._key, label.encode(), "sha256").hex()

    def _node(self, agent: int, role: str) -> int:
        node = self.placement.get(agent)
        if node is None:
            raise PaymentFailed(f"unknown_{role}", f"agent {agent} is on no node")
        return node

    # -- the Rail interface --------------------------------------------------------------------

    async def create_invoice(
        self, payee: int, amount_msat: int, label: str, description: str
    ) -> Invoice:
        """An invoice from ``payee``'s node labelled with the agreement id (idempotent)."""
        if payee not in self.placement:
            raise InvoiceError("unknown_payee", f"agent {payee} is on no node")
        if amount_msat <= 0:
            raise InvoiceError("bad_amount", f"{amount_msat} msat")
        node = self.placement[payee]
        full = self._label(label)
        preimage = self._preimage(full)
        payment_hash = hashlib.sha256(bytes.fromhex(preimage)).hexdigest()
        known = self._invoices.get(payment_hash)
        existing = reissue(known[0] if known else None, payee, amount_msat, label)
        if existing is not None:
            return existing
        if self.mode == "netted":  # settled by a net payment: the proof is the rail's preimage
            invoice = Invoice(
                payee,
                amount_msat,
                payment_hash,
                label,
                f"netted:{self.namespace}:{self.nodes[node].name}:{label}",
                time.time() + self.expiry,
            )
        else:
            result = await self._issue(node, amount_msat, full, description, preimage)
            if result["payment_hash"] != payment_hash:
                raise InvoiceError("label_reused", f"label {full!r} exists with another preimage")
            invoice = Invoice(
                payee,
                amount_msat,
                payment_hash,
                label,
                str(result["bolt11"]),
                float(result["expires_at"]),
            )
        self._invoices[payment_hash] = (invoice, preimage)
        self._status[payment_hash] = PaymentStatus.PENDING
        return invoice

    async def _issue(
        self, node: int, amount: int, label: str, description: str, preimage: str
    ) -> Mapping[str, Any]:
        try:
            return dict(
                await self.call(
                    node,
                    "invoice",
                    amount_msat=amount,
                    label=label,
                    description=description,
                    expiry=self.expiry,
                    preimage=preimage,
                )
            )
        except _Transport as exc:
            raise InvoiceError("node_unreachable", str(exc)) from None
        except Exception as exc:
            error = _rpc_error(exc)
            if error is None:
                raise
            if error[0] != 900:  # 900: duplicate label, i.e. this is a retry
                raise InvoiceError(f"cln_{error[0]}", error[1]) from None
        found = await self.call(node, "listinvoices", label=label)
        invoices = found.get("invoices", [])
        if not invoices or int(invoices[0]["amount_msat"]) != amount:
            raise InvoiceError("label_reused", f"label {label!r} has other terms")
        return dict(invoices[0])

    async def pay(self, payer: int, invoice: Invoice) -> PaymentResult:
        """Pay ``invoice`` from ``payer``'s node; all or nothing; never twice."""
        started = time.perf_counter()
        try:
            return await self._pay(payer, invoice)
        finally:
            self.stats.wall.observe(time.perf_counter() - started)

    async def _pay(self, payer: int, invoice: Invoice) -> PaymentResult:
        entry = self._invoices.get(invoice.payment_hash)
        if entry is None or entry[0] != invoice:
            raise PaymentFailed("unknown_invoice", invoice.payment_hash)
        h = invoice.payment_hash
        if self._status.get(h) is PaymentStatus.COMPLETE:
            raise AlreadyPaid("already_paid", h)
        preimage = entry[1]
        src = self._node(payer, "payer")
        dst = self._node(invoice.payee, "payee")
        amount = invoice.amount_msat
        budget = self.max_fee_base_msat + amount * self.max_fee_ppm // 1_000_000
        if self.accounts[payer] < amount + (budget if src != dst else 0):
            self.stats.record("insufficient_funds")
            raise PaymentFailed("insufficient_funds", f"account {payer} < {amount} msat + fees")
        if src == dst:
            fee, parts = 0, 0
            self._counts["internal"] += 1
        elif self.mode == "netted":
            fee, parts = await self._netted(src, dst, amount, h), 1
        else:
            fee, parts = await self._xpay(src, invoice.request, h, amount, budget)
        self.accounts[payer] -= amount + fee
        self.accounts[invoice.payee] += amount
        self._status[h] = PaymentStatus.COMPLETE
        stats = self.stats
        stats.record("succeeded")
        stats.parts.observe(parts)
        stats.fees_msat += fee
        stats.amount_msat += amount
        return PaymentResult(h, preimage, amount, fee)

    async def _xpay(
        self, src: int, request: str, h: str, amount: int, budget: int
    ) -> tuple[int, int]:
        """One xpay; returns (fee, parts). Reconciles by hash when the outcome is unknown."""
        self._payer_node[h] = src
        self.stats.attempts += 1
        try:
            with anyio.fail_after(self.timeout_s):
                result = await self.call(
                    src,
                    "xpay",
                    invstring=request,
                    maxfee=budget,
                    retry_for=max(1, int(self.timeout_s)),
                )
        except (_Transport, TimeoutError) as exc:
            _log.warning("xpay_outcome_unknown", payment_hash=h, error=str(exc))
            return await self._settled_after_all(src, h, str(exc))
        except Exception as exc:
            error = _rpc_error(exc)
            if error is None:
                raise
            reason = XPAY_ERRORS.get(error[0], f"cln_{error[0]}")
            if error[0] == 219:  # paid before (a retry): find that payment, do not pay again
                return await self._settled_after_all(src, h, error[1])
            self._status[h] = PaymentStatus.FAILED
            self.stats.record(reason)
            raise PaymentFailed(reason, error[1]) from None
        sent = int(result["amount_sent_msat"])
        return sent - amount, int(result.get("successful_parts", 1))

    async def _settled_after_all(self, src: int, payment_hash: str, why: str) -> tuple[int, int]:
        """Reconcile by payment hash: complete -> (fee, parts); failed or absent -> raise."""
        self._counts["reconciled"] += 1
        deadline = time.monotonic() + self.timeout_s
        delay = 0.05
        tries = 0
        while True:
            tries += 1
            reachable = True
            try:
                status, fee, parts = await self._ask(src, payment_hash)
            except _Transport as exc:
                status, fee, parts = PaymentStatus.UNKNOWN, 0, 0
                reachable = False
                why = str(exc)
            if status is PaymentStatus.COMPLETE:
                return fee, parts
            if status is PaymentStatus.FAILED:
                self._status[payment_hash] = PaymentStatus.FAILED
                self.stats.record("payment_failed")
                raise PaymentFailed("payment_failed", why)
            if status is PaymentStatus.UNKNOWN and reachable and tries >= 3:
                # the node answers and never heard of it: the payment was not sent
                self._status[payment_hash] = PaymentStatus.FAILED
                self.stats.record("not_sent")
                raise PaymentFailed("not_sent", why)
            if time.monotonic() > deadline:
                reason = "pending" if status is PaymentStatus.PENDING else "unreconciled"
                self.stats.record(reason)
                raise PaymentFailed(reason, f"{why}; still {status.value} after reconciling")
            await anyio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _ask(self, node: int, payment_hash: str) -> tuple[PaymentStatus, int, int]:
        """What ``node`` knows of a payment hash: listpays, then listsendpays for the parts."""
        pays = (await self.call(node, "listpays", payment_hash=payment_hash)).get("pays", [])
        if not pays:
            return PaymentStatus.UNKNOWN, 0, 0
        statuses = {str(p["status"]) for p in pays}
        if "complete" in statuses:
            done = next(p for p in pays if p["status"] == "complete")
            sent = int(done["amount_sent_msat"]) - int(done["amount_msat"])
            parts = await self.call(node, "listsendpays", payment_hash=payment_hash)
            n = sum(1 for p in parts.get("payments", []) if p.get("status") == "complete")
            return PaymentStatus.COMPLETE, sent, max(n, 1)
        if "pending" in statuses:
            return PaymentStatus.PENDING, 0, 0
        return PaymentStatus.FAILED, 0, 0

    async def lookup(self, payment_hash: str) -> PaymentStatus:
        """Ask the payer's node (or every node) what became of a payment hash."""
        known = self._status.get(payment_hash)
        if known is PaymentStatus.COMPLETE or self.mode == "netted":
            return known or PaymentStatus.UNKNOWN
        nodes = (
            [self._payer_node[payment_hash]]
            if payment_hash in self._payer_node
            else range(len(self.nodes))
        )
        for node in nodes:
            status, _, _ = await self._ask(node, payment_hash)
            if status is not PaymentStatus.UNKNOWN:
                return status
        return known or PaymentStatus.UNKNOWN

    async def balance(self, node: int) -> int:
        """An agent's internal account, msat."""
        if node not in self.accounts:
            raise PaymentFailed("unknown_node", f"no agent {node}")
        return self.accounts[node]

    async def spendable(self, node: int) -> int:
        """What a node can send over its channels in CHANNELD_NORMAL (listpeerchannels)."""
        channels = (await self.call(node, "listpeerchannels")).get("channels", [])
        return sum(
            int(c.get("spendable_msat", 0)) for c in channels if c.get("state") == "CHANNELD_NORMAL"
        )

    # -- netting -------------------------------------------------------------------------------

    async def _netted(self, src: int, dst: int, amount: int, payment_hash: str) -> int:
        """Join the current netting window; the first to arrive settles it after the window."""
        net = self._net
        leader = net is None
        if net is None:
            net = self._net = _Net()
        net.items.append((src, dst, amount, payment_hash))
        if leader:
            await anyio.sleep(self.net_window_s)
            self._net = None
            try:
                await self._settle_window(net)
            finally:
                net.done.set()
        else:
            await net.done.wait()
        error = net.errors.get(payment_hash)
        if error is not None:
            raise error
        return net.fees.get(payment_hash, 0)

    async def _settle_window(self, net: _Net) -> None:
        """One payment per node pair for the net amount; fees shared in proportion."""
        flows: dict[tuple[int, int], int] = {}
        members: dict[tuple[int, int], list[tuple[int, str]]] = {}
        for src, dst, amount, h in net.items:
            a, b = min(src, dst), max(src, dst)
            flows[(a, b)] = flows.get((a, b), 0) + (amount if src == a else -amount)
            members.setdefault((a, b), []).append((amount, h))
        async with anyio.create_task_group() as tg:
            for pair, flow in flows.items():
                tg.start_soon(self._settle_pair, net, pair, flow, members[pair])

    async def _settle_pair(
        self, net: _Net, pair: tuple[int, int], flow: int, members: list[tuple[int, str]]
    ) -> None:
        a, b = pair
        payer, payee, amount = (a, b, flow) if flow > 0 else (b, a, -flow)
        fee = 0
        if amount > 0:
            label = self._label(f"net-{uuid.uuid4().hex[:16]}")
            preimage = self._preimage(label)
            try:
                issued = await self._issue(payee, amount, label, "netted settlement", preimage)
                budget = self.max_fee_base_msat + amount * self.max_fee_ppm // 1_000_000
                request, h = str(issued["bolt11"]), str(issued["payment_hash"])
                fee, _ = await self._xpay(payer, request, h, amount, budget)
            except (PaymentFailed, InvoiceError) as exc:
                failure = exc if isinstance(exc, PaymentFailed) else PaymentFailed(exc.reason)
                for _, member in members:
                    net.errors[member] = failure
                return
            self._counts["net_payments"] += 1
        gross = sum(m for m, _ in members)
        for m, h in members:  # each agreement's share of the one fee
            net.fees[h] = fee * m // gross

    def _events(self) -> dict[str, int]:
        return dict(self._counts)


def _pyln(socket: str) -> Any:
    from pyln.client import LightningRpc

    return LightningRpc(socket)


def _rpc_error(exc: BaseException) -> tuple[int, str] | None:
    """(code, message) of a pyln RpcError carrying a JSON-RPC error object, else None."""
    error = getattr(exc, "error", None)
    if type(exc).__name__ != "RpcError" or not isinstance(error, dict) or "code" not in error:
        return None
    return int(error["code"]), str(error.get("message", ""))
