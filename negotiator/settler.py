"""The settler: pays for agreements off the negotiation loop.

For each agreement: journal it (``accepted``), have the seller's node issue an invoice, journal the
payment hash (``settling``), deliver ``InvoiceIssued`` to the buyer, whose handler checks it and
answers with a ``Pay`` effect; pay through the rail, journal the outcome (``settled`` with the
preimage, or ``failed`` with a reason), and deliver ``Paid`` or ``SettlementFailed`` to both parties.

Jobs are taken in batches, so the ledger sees one transaction per batch (SQLite in a worker thread,
one call at a time, through :func:`negotiator.threads.run_sync` so that a saturated negotiation
loop cannot starve it) rather than one per agreement. ``workers`` batches proceed at once: one is
fastest for an in-process rail that never suspends, more keep a slow rail (real Lightning) busy
without ever making the negotiation loop wait on it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec
import structlog

from negotiator import threads
from negotiator.actor import Pay
from negotiator.errors import SettlementError
from negotiator.ledger import Agreement, Ledger
from negotiator.messages import SYSTEM, Invoice, InvoiceIssued, Paid, SettlementFailed
from negotiator.metrics import RunMetrics
from negotiator.settlement import PaymentResult, Rail

_log = structlog.get_logger(__name__)

_SLICE_S = 0.001
"""Work at most this long before yielding to the event loop: a time, not a count of items, so the
settler's share of a saturated loop does not depend on how costly each item is."""


class _Pending:
    __slots__ = ("abandoned", "accepted_at", "agreement", "invoice", "paying")

    def __init__(self, agreement: Agreement, accepted_at: float) -> None:
        self.agreement = agreement
        self.accepted_at = accepted_at
        self.invoice: Invoice | None = None
        self.abandoned = False
        self.paying = False


class Settler:
    """Settles agreements through a rail, journaling every step in the ledger."""

    def __init__(
        self,
        rail: Rail,
        ledger: Ledger,
        metrics: RunMetrics,
        deliver: Callable[[Any], object],
        *,
        batch: int = 512,
        workers: int = 1,
        timeout_s: float = 30.0,
        pay_timeout_s: float = 30.0,
        on_renege: Callable[[int], None] = lambda payer: None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if batch < 1 or workers < 1:
            raise ValueError("batch and workers must be at least 1")
        self.rail = rail
        self.ledger = ledger
        self.metrics = metrics
        self.deliver = deliver
        self.batch = batch
        self.workers = workers
        self.timeout_s = timeout_s
        self.pay_timeout_s = pay_timeout_s
        """A buyer must answer its invoice with a payment within this long, or it reneged."""
        self.on_renege = on_renege
        """Called with the payer of an agreement it did not pay (reputation: see the router)."""
        self.clock = clock
        self._unpaid: deque[tuple[float, int]] = deque()
        """(answer-by time, nid) of invoices delivered, in delivery order."""
        self.concurrency = max(1, int(getattr(rail, "concurrency", 1)))
        """Rail calls in flight at once: 1 for in-process rails, more for remote ones."""
        self._jobs: asyncio.Queue[Agreement | Pay | tuple[int, str]] = asyncio.Queue()
        self._pending: dict[int, _Pending] = {}
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.payers: set[int] = set()
        """Buyers that have paid for an agreement (proven: their agreements are final at once)."""
        self.provisional: set[int] = set()
        """Agreements of unproven buyers not yet settled or failed (see :meth:`cleared`)."""
        self.provisional_failed = 0
        """Agreements of unproven buyers that failed, so far."""
        self._cleared = asyncio.Event()
        self._cleared.set()
        self._db = anyio.CapacityLimiter(1)
        metrics.rail = rail.name
        metrics.payments = rail.stats
        for kind in ("invoice", "paid", "settlement_failed"):  # counted on the hot path below
            metrics.messages.setdefault(kind, 0)

    # -- intake (synchronous: called from the router on the hot path) ---------------------------

    def agree(self, agreement: Agreement, now: float) -> None:
        """An agreement was reached: settle it."""
        self._pending[agreement.nid] = _Pending(agreement, now)
        if agreement.buyer not in self.payers:
            self.provisional.add(agreement.nid)
            self._cleared.clear()
        self._submit(agreement)

    def pay(self, pay: Pay) -> None:
        """A buyer asks to pay an invoice it received."""
        pending = self._pending.get(pay.nid)
        if pending is not None and pay.payer == pending.agreement.buyer:
            pending.paying = True
        self._submit(pay)

    def refused(self, nid: int, payer: int) -> None:
        """The buyer handled its invoice and did not pay: it reneged (no need to wait)."""
        pending = self._pending.get(nid)
        if pending is None or pending.paying or pending.abandoned:
            return
        if payer != pending.agreement.buyer:
            return
        self.abandon(nid, "unpaid")
        self.on_renege(payer)

    def expire_unpaid(self, now: float) -> int:
        """Fail the agreements whose buyer let its invoice go unanswered for ``pay_timeout_s``
        (reason ``unpaid``) and report each buyer as having reneged; returns how many."""
        unpaid = self._unpaid
        n = 0
        while unpaid and unpaid[0][0] <= now:
            _, nid = unpaid.popleft()
            pending = self._pending.get(nid)
            if pending is None or pending.paying or pending.abandoned:
                continue
            self.abandon(nid, "unpaid")
            self.on_renege(pending.agreement.buyer)
            n += 1
        return n

    def abandon(self, nid: int, reason: str) -> None:
        """Fail a pending agreement whose party can no longer take part (once: asking again
        while the failure waits in the queue does nothing)."""
        pending = self._pending.get(nid)
        if pending is not None and not pending.abandoned:
            pending.abandoned = True
            self._submit((nid, reason))

    async def cleared(self, timeout: float) -> bool:
        """Wait until every agreement of an unproven buyer is settled or failed (at most
        ``timeout`` seconds); returns whether they all were.

        A buyer that has never paid is not trusted to pay after gate closure: the runtime waits
        for its agreements to settle before it closes the slot, so that the quantity of one that
        fails (a buyer that reneged) can be traded again in the same slot (the aftermarket).
        Honest buyers pay as soon as their invoice arrives; after their first payment their
        agreements settle beside the next slots' negotiations, as every agreement used to.
        """
        with anyio.move_on_after(timeout):
            while self.provisional:
                await self._cleared.wait()
        return not self.provisional

    def _resolved(self, nid: int, failed: bool) -> None:
        if nid in self.provisional:
            self.provisional.discard(nid)
            self.provisional_failed += failed
            if not self.provisional:
                self._cleared.set()

    def _submit(self, job: Agreement | Pay | tuple[int, str]) -> None:
        self._idle.clear()
        self._jobs.put_nowait(job)

    @property
    def pending(self) -> int:
        """Agreements accepted but not yet settled or failed."""
        return len(self._pending)

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Settle until cancelled."""
        async with anyio.create_task_group() as tg:
            for _ in range(self.workers):
                tg.start_soon(self._work)

    async def drain(self, timeout: float) -> bool:
        """Wait until every agreement so far is settled or failed; expire stragglers at timeout."""
        deadline = self.clock() + timeout
        while self._pending or self._busy or not self._jobs.empty():
            remaining = deadline - self.clock()
            if remaining <= 0:
                for nid in list(self._pending):
                    self.abandon(nid, "settlement_timeout")
                with anyio.move_on_after(5):
                    await self._wait_idle()
                return False
            with anyio.move_on_after(min(remaining, 0.05)):
                await self._wait_idle()
            self.expire_unpaid(self.clock())
            self._expire_stale()
        return True

    async def _wait_idle(self) -> None:
        while self._pending or self._busy or not self._jobs.empty():
            self._idle.clear()
            await self._idle.wait()

    def _expire_stale(self) -> None:
        limit = self.clock() - self.timeout_s
        stale = []
        for nid, pending in self._pending.items():  # in acceptance order: stop at the first fresh
            if pending.accepted_at >= limit:
                break
            if not pending.abandoned:
                stale.append(nid)
        for nid in stale:
            self.abandon(nid, "settlement_timeout")

    async def _work(self) -> None:
        jobs = self._jobs
        while True:
            batch = [await jobs.get()]
            while len(batch) < self.batch and not jobs.empty():
                batch.append(jobs.get_nowait())
            self._busy += 1
            try:
                await self._process(batch)
            except Exception:
                _log.exception("settlement_batch_failed", size=len(batch))
                await self._fail(
                    [(j.nid, "internal_error") for j in batch if not isinstance(j, tuple)]
                )
            finally:
                self._busy -= 1
                if not self._pending and not self._busy and jobs.empty():
                    self._idle.set()

    async def _process(self, batch: list[Agreement | Pay | tuple[int, str]]) -> None:
        agreements = [j for j in batch if type(j) is Agreement]
        pays = [j for j in batch if type(j) is Pay]
        abandoned = [j for j in batch if type(j) is tuple]
        if agreements:
            await self._invoice(agreements)
        if pays:
            await self._pay(pays)
        if abandoned:
            await self._fail([(nid, reason) for nid, reason in abandoned if nid in self._pending])

    async def _ledger(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await threads.run_sync(fn, *args, limiter=self._db)

    async def _each(self, items: list[Any], step: Callable[[Any], Awaitable[None]]) -> None:
        """Run ``step`` over ``items``: one after another for a rail that never suspends (with
        a yield every time slice), or up to the rail's concurrency at once for a remote one."""
        if self.concurrency <= 1:
            clock = self.clock
            slice_end = clock() + _SLICE_S
            for item in items:
                if clock() > slice_end:  # an in-process rail never suspends: let negotiations run
                    await asyncio.sleep(0)
                    slice_end = clock() + _SLICE_S
                await step(item)
            return
        limiter = anyio.CapacityLimiter(self.concurrency)

        async def bounded(item: Any) -> None:
            async with limiter:
                await step(item)

        async with anyio.create_task_group() as tg:
            for item in items:
                tg.start_soon(bounded, item)

    async def _invoice(self, agreements: list[Agreement]) -> None:
        issued: list[tuple[Agreement, Invoice]] = []
        failed: list[tuple[Agreement, str]] = []

        async def issue(a: Agreement) -> None:
            amount = a.amount_msat
            if amount <= 0:
                failed.append((a, "zero_amount"))
                return
            try:
                invoice = await self.rail.create_invoice(
                    a.seller, amount, f"agreement-{a.nid}", f"{a.terms.resource} slot {a.slot}"
                )
            except SettlementError as exc:
                failed.append((a, exc.reason))
                return
            issued.append((a, invoice))

        await self._each(agreements, issue)
        if issued:  # journaled with its payment hash before anyone can pay
            await self._ledger(
                self.ledger.record,
                [a for a, _ in issued],
                [invoice.payment_hash for _, invoice in issued],
            )
        for a, invoice in issued:
            pending = self._pending.get(a.nid)
            if pending is None:
                continue
            pending.invoice = invoice
            self._unpaid.append((self.clock() + self.pay_timeout_s, a.nid))
            self.metrics.messages["invoice"] += 1
            self.deliver(InvoiceIssued(a.nid, a.seller, a.buyer, 0, a.accept_seq + 1, invoice))
        if failed:
            await self._ledger(self.ledger.record, [a for a, _ in failed])
            await self._fail([(a.nid, reason) for a, reason in failed])

    async def _pay(self, pays: list[Pay]) -> None:
        done: list[tuple[_Pending, PaymentResult]] = []
        failed: list[tuple[int, str]] = []

        async def settle(pay: Pay) -> None:
            pending = self._pending.get(pay.nid)
            if pending is None or pending.invoice is None:
                self.metrics.count(self.metrics.rejected, "unexpected_pay")
                return
            if pay.invoice != pending.invoice or pay.payer != pending.agreement.buyer:
                failed.append((pay.nid, "invoice_mismatch"))  # not the invoice it was sent
                self.on_renege(pay.payer)
                return
            try:
                result = await self.rail.pay(pay.payer, pending.invoice)
            except SettlementError as exc:
                failed.append((pay.nid, exc.reason))
                return
            done.append((pending, result))

        await self._each(pays, settle)
        if done:
            await self._ledger(
                self.ledger.mark_settled,
                [(p.agreement.nid, r.payment_hash, r.preimage, r.fee_msat) for p, r in done],
            )
            now = self.clock()
            metrics = self.metrics
            for pending, result in done:
                a = pending.agreement
                del self._pending[a.nid]
                self.payers.add(a.buyer)
                self._resolved(a.nid, False)
                metrics.settlement_latency.observe(now - pending.accepted_at)
                metrics.count(metrics.settlements, "settled")
                metrics.fees_msat += result.fee_msat
                metrics.paid_msat += result.amount_msat
                paid = Paid(
                    a.nid,
                    a.buyer,
                    a.seller,
                    0,
                    a.accept_seq + 2,
                    result.payment_hash,
                    result.preimage,
                    result.fee_msat,
                )
                metrics.messages["paid"] += 2
                self.deliver(paid)
                self.deliver(_to(paid, a.buyer))
        if failed:
            await self._fail(failed)

    async def _fail(self, failed: list[tuple[int, str]]) -> None:
        # One failure per agreement, the first reason given: a retired agent's negotiation can be
        # abandoned twice in one batch (its failure, then its retirement).
        first: dict[int, str] = {}
        for nid, reason in failed:
            if nid in self._pending:
                first.setdefault(nid, reason)
        failed = list(first.items())
        if not failed:
            return
        await self._ledger(self.ledger.mark_failed, failed)
        for nid, reason in failed:
            pending = self._pending.pop(nid)
            self._resolved(nid, True)
            a = pending.agreement
            self.metrics.count(self.metrics.settlements, "failed")
            _log.info("settlement_failed", nid=nid, reason=reason)
            self.metrics.messages["settlement_failed"] += 2
            message = SettlementFailed(nid, SYSTEM, a.seller, 0, 0, reason)
            self.deliver(message)
            self.deliver(_to(message, a.buyer))


def _to(message: Any, receiver: int) -> Any:
    """The same message addressed to another party (each side gets its own copy)."""
    return msgspec.structs.replace(message, receiver=receiver)
