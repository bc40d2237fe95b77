"""The runtime: trading slots in virtual time, negotiations in flight, settlement, shutdown.

Each slot: every agent says what it wants to trade (:meth:`Agent.open_slot`), the population
report goes to the mean-field service on the bus and its snapshot comes back, the matcher pairs
buyers with sellers, and the starter opens the negotiations, at most ``max_in_flight`` at a time.
Negotiations end by accept, reject or withdraw, or the runtime expires them (wall-clock deadline,
or gate closure when the slot's time is up). Before the gate closes, the slot waits for the
payments of buyers that have never paid before (the only agreements it waits for, at most
``clearing_timeout_s``); if some of them failed, or an agent was excluded mid-slot, what is still
untraded is matched and negotiated again (the aftermarket), so that a reneger's purchase goes back
to the market instead of to the outside option (the grid, for energy). Then every agent closes the
slot (untraded quantities go to the outside option) and the slot's trades are reported to the
mean-field service. Every other agreement settles beside all this and never holds up the
negotiation loop.

SIGINT/SIGTERM stop it cleanly: no new negotiation starts, the ones in flight and every accepted
agreement are finished (bounded by the grace period), the ledger is consistent, the report is
returned. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import numpy as np
import structlog

from negotiator.actor import Agent, Matcher, Position
from negotiator.bus import LocalBus
from negotiator.engines import make_engine
from negotiator.errors import BusError, MessageDecodeError
from negotiator.flight import Flight
from negotiator.ledger import Ledger
from negotiator.messages import (
    SYSTEM,
    AnyMessage,
    PopulationReport,
    SnapshotQuery,
    TradeReport,
    decode,
)
from negotiator.metrics import RunMetrics
from negotiator.router import Router
from negotiator.runtime_types import PRICE_LEVELS, RunReport, RuntimeConfig, SlotReport, run_report
from negotiator.settlement import Rail
from negotiator.settler import Settler

_log = structlog.get_logger(__name__)


class Runtime:
    """Runs a population of agents through trading slots."""

    def __init__(
        self,
        agents: Sequence[Agent],
        *,
        rail: Rail,
        ledger: Ledger,
        matcher: Matcher,
        rng: np.random.Generator,
        config: RuntimeConfig | None = None,
        bus: LocalBus | None = None,
        metrics: RunMetrics | None = None,
        population: str | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.config = config or RuntimeConfig()
        self.agents = list(agents)
        self.by_address = {a.address: a for a in self.agents}
        if len(self.by_address) != len(self.agents):
            raise ValueError("agent addresses must be unique")
        self.bus = bus or LocalBus(self.config.inbox_size)
        self.metrics = metrics or RunMetrics()
        self.ledger = ledger
        self.matcher = matcher
        self.rng = rng
        self.population = population
        self.clock = clock
        cfg = self.config
        self.settler = Settler(
            rail,
            ledger,
            self.metrics,
            self.bus.send_nowait,
            batch=cfg.settle_batch,
            workers=cfg.settle_workers,
            timeout_s=cfg.settle_timeout_s,
            pay_timeout_s=cfg.pay_timeout_s,
            on_renege=self._reneged,
            clock=clock,
        )
        self.router = Router(
            self.bus,
            self.metrics,
            on_agreement=self.settler.agree,
            on_pay=self.settler.pay,
            on_abandon=self.settler.abandon,
            on_unpaid=self.settler.refused,
            max_failures=cfg.max_agent_failures,
            max_effects=cfg.max_effects,
            max_strikes=cfg.max_strikes,
            clock=clock,
        )
        self.reneges: dict[int, int] = {}
        """Agreements each buyer left unpaid (its reputation)."""
        self.engine = make_engine(
            cfg.engine,
            self.bus,
            self.router,
            shards=cfg.shards,
            inbox_size=cfg.inbox_size,
            max_under_way=cfg.max_under_way,
        )
        self.engine.attach(self.agents)
        handled = getattr(self.engine, "handled", None)
        if handled is not None:
            self.metrics.shard_messages = lambda: list(handled)
        self.metrics.agents_alive = len(self.agents)
        self.metrics.queue_depth = self.bus.queue_depth
        self.metrics.overflow = lambda: self.bus.overflow
        self.metrics.undeliverable = lambda: self.bus.undeliverable
        self._stopping = False
        self._view: object = None
        self._negotiations = 0
        self._negotiation_s = 0.0
        self._clearing_s = 0.0
        self._slots_done = 0
        self._next_nid = 0
        gc.collect()
        gc.freeze()  # the population is built: keep the collector off its objects (1.3x at 100k)

    def _reneged(self, payer: int) -> None:
        """A buyer left an invoice unpaid: after ``max_reneges`` it is out of the market."""
        n = self.reneges.get(payer, 0) + 1
        self.reneges[payer] = n
        if n >= self.config.max_reneges and payer not in self.router.retired:
            self.metrics.count(self.metrics.excluded, "reneged")
            self.router.retire(payer, "reneged")

    def close(self) -> None:
        """Give the population back to the garbage collector (it was frozen when built: a
        frozen cycle is never collected, which leaked ~18 MB per simulated day in a process that
        runs day after day; ``benchmarks/soak.py``)."""
        gc.unfreeze()

    @property
    def slots_done(self) -> int:
        """Slots run so far (in a resumed run, those before the restart included)."""
        return self._slots_done

    def receive_bytes(self, data: bytes) -> bool:
        """Take one encoded message from outside the process and deliver it.

        Bad bytes are refused with a count and a log line (reason ``decode``), as are messages that
        claim to come from the runtime itself (``forged_system``) or address nobody here; the run
        goes on. Returns whether the message was delivered.
        """
        try:
            message = decode(data)
        except MessageDecodeError as exc:
            self.router.rejected_bytes(str(exc))
            return False
        if not isinstance(message, AnyMessage):
            self.router.rejected_bytes(f"{type(message).__name__} is not an agent message")
            return False
        if message.sender == SYSTEM or message.receiver not in self.by_address:
            reason = "forged_system" if message.sender == SYSTEM else "unknown_receiver"
            self.metrics.count(self.metrics.rejected, reason)
            _log.warning("message_refused", reason=reason, nid=message.nid)
            return False
        return self.bus.send_nowait(message)

    def stop(self) -> None:
        """Ask for a clean stop: finish what is in flight, start nothing new."""
        if not self._stopping:
            _log.warning("stopping", reason="requested")
        self._stopping = True

    async def run(
        self,
        slots: int,
        *,
        on_slot: Callable[[SlotReport], None] | None = None,
        handle_signals: bool = False,
        checkpoint: Callable[[int], Awaitable[None]] | None = None,
    ) -> RunReport:
        """Run trading slots up to ``slots`` (from the first not yet done) and settle
        everything; return the summary.

        With ``checkpoint``, every slot ends at a consistent point: its agreements settled or
        failed, the outcome delivered to both parties; then ``checkpoint(slot)`` is awaited
        (with -1 before the first slot of a fresh run), so that a run killed at any instant can
        go on from the last slot checkpointed (:mod:`negotiator.recovery`).
        """
        if slots < 1:
            raise ValueError("slots must be at least 1")
        started = self.clock()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.bus.run, name="bus")
            await tg.start(self.engine.run, name=f"engine-{self.engine.name}")
            tg.start_soon(self.settler.run, name="settler")
            tg.start_soon(self._watchdog, name="deadline-watchdog")
            if handle_signals:
                tg.start_soon(self._signals, tg.cancel_scope, name="signals")
            if self.population is not None and self._view is None:
                self._view = await self._snapshot(-1)  # what the service knew before this run
            if checkpoint is not None and self._slots_done == 0:
                await checkpoint(-1)
            for slot in range(self._slots_done, slots):
                await self._settlement_backlog()
                if self._stopping:
                    break
                report = await self._slot(slot)
                if checkpoint is not None:
                    with anyio.CancelScope(shield=True):
                        await self._consistent()
                self._slots_done += 1
                if on_slot is not None:
                    on_slot(report)
                if checkpoint is not None:
                    await checkpoint(slot)
            with anyio.CancelScope(shield=True):
                await self.settler.drain(self.config.settle_timeout_s)
                await self._quiesce(self.config.grace_s)
            tg.cancel_scope.cancel()
        return self._report(self.clock() - started)

    async def _settlement_backlog(self) -> None:
        """Back-pressure: the next slot opens only once the settlement backlog is below
        ``max_settling`` (negotiating outpaces settling on a saturated loop; unchecked, the
        backlog grows with the run and its oldest agreements time out unpaid)."""
        bound = self.config.max_settling
        while self.settler.pending > bound and not self._stopping:
            await anyio.sleep(0.005)

    async def _consistent(self) -> None:
        """Settle the slot's agreements and deliver every outcome (a checkpoint's precondition)."""
        await self.settler.drain(self.config.settle_timeout_s)
        await self._quiesce(self.config.grace_s)

    def state(self) -> dict[str, Any]:
        """What the runtime must remember between slots to go on after a restart (plain,
        picklable values; taken at a slot boundary, when nothing is in flight)."""
        return {
            "slots_done": self._slots_done,
            "next_nid": self._next_nid,
            "negotiations": self._negotiations,
            "negotiation_s": self._negotiation_s,
            "clearing_s": self._clearing_s,
            "view": self._view,
            "rng": self.rng.bit_generator.state,
            "retired": set(self.router.retired),
            "excluded": set(self.router.excluded),
            "failures": dict(self.router.failures),
            "strikes": dict(self.router.strikes),
            "reneges": dict(self.reneges),
            "payers": set(self.settler.payers),
            "metrics": self.metrics.accumulators(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Go back to a :meth:`state` (before :meth:`run`)."""
        self._slots_done = state["slots_done"]
        self._next_nid = state["next_nid"]
        self._negotiations = state["negotiations"]
        self._negotiation_s = state["negotiation_s"]
        self._clearing_s = state.get("clearing_s", 0.0)
        self._view = state["view"]
        self.rng.bit_generator.state = state["rng"]
        for name in ("retired", "excluded", "failures", "strikes"):
            table = getattr(self.router, name)
            table.clear()
            table.update(state[name])
        self.reneges.update(state["reneges"])
        self.settler.payers.update(state.get("payers", ()))
        self.metrics.restore(state["metrics"])
        self.metrics.agents_alive = len(self.agents) - len(self.router.retired)

    async def _quiesce(self, timeout: float) -> None:
        """Let the engines deliver what is still queued (the last Paid messages, say)."""
        with anyio.move_on_after(timeout):
            while self.bus.queue_depth():
                await anyio.sleep(0.001)

    async def _signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if self._stopping:
                    _log.error("stopping_now", signal=signal.Signals(signum).name)
                    scope.cancel()
                    return
                _log.warning("signal", signal=signal.Signals(signum).name)
                self.stop()

    async def _watchdog(self) -> None:
        period = min(self.config.deadline_ms / 4000.0, 0.05)
        while True:
            await anyio.sleep(period)
            now = self.clock()
            self.router.expire_due(now)
            self.settler.expire_unpaid(now)

    async def _slot(self, slot: int) -> SlotReport:
        t0 = self.clock()
        self.metrics.slot = slot
        positions: list[Position] = []
        retired = self.router.retired
        for agent in self.agents:
            if agent.address in retired:
                continue
            position = agent.open_slot(slot, self._view)
            if position is not None:
                positions.append(position)
        view = await self._population(slot, positions)
        pairings = self.matcher(slot, positions, view, self.rng)
        agreed_before = self.metrics.outcomes.get("agreed", 0)
        disrupted = self._disruptions()
        await self._negotiate(slot, pairings)
        clearing_s = await self._aftermarket(slot, view, pairings, disrupted)
        for agent in self.agents:
            if agent.address not in retired:
                agent.close_slot(slot)
        trades = self.router.slot_trades
        self.router.slot_trades = []
        volume = sum(q for _, q in trades)
        if volume:
            self.metrics.slot_price = sum(p * q for p, q in trades) / volume
        if self.population is not None and trades:
            prices, quantities = zip(*trades, strict=True)
            self.bus.send_to_nowait(
                self.population, TradeReport(slot, list(prices), list(quantities))
            )
        self._view = view
        duration = self.clock() - t0
        self._negotiation_s += duration - clearing_s
        self._clearing_s += clearing_s
        self._negotiations += len(pairings)
        self.metrics.slot_duration.observe(duration)
        agreed = self.metrics.outcomes.get("agreed", 0) - agreed_before
        quantiles: tuple[float, ...] = ()
        if trades:
            levels = np.quantile(np.fromiter((p for p, _ in trades), np.float64), PRICE_LEVELS)
            quantiles = tuple(float(v) for v in levels)
        return SlotReport(slot, len(pairings), agreed, duration, volume, quantiles)

    def _disruptions(self) -> int:
        """Events that take quantity a slot had matched back out of it: agreements of unproven
        buyers that failed, and agents excluded (their peers' negotiations end with them)."""
        return self.settler.provisional_failed + len(self.router.retired)

    async def _aftermarket(
        self, slot: int, view: object, pairings: list[Any], disrupted: int
    ) -> float:
        """Before gate closure: wait for the unproven buyers' payments (:meth:`Settler.cleared`)
        and, if the slot was disrupted (some of their agreements failed, or an agent was
        excluded), match what is still untraded and negotiate again, up to
        ``aftermarket_rounds`` times; the extra rounds' pairings are added to ``pairings``. An
        undisrupted slot trades as it would without an aftermarket (no round, no draw from the
        rng). Returns the time spent waiting for payments (settling,
        not negotiating: left out of ``negotiation_s``)."""
        settler = self.settler
        waited = 0.0
        for _ in range(self.config.aftermarket_rounds):
            started = self.clock()
            await settler.cleared(self.config.clearing_timeout_s)
            waited += self.clock() - started
            if self._disruptions() == disrupted or self._stopping:
                break
            disrupted = self._disruptions()
            await self._quiesce(self.config.grace_s)  # the failures reach both parties
            retired = self.router.retired
            positions = []
            for agent in self.agents:
                reopen = getattr(agent, "reopen", None)
                if reopen is not None and agent.address not in retired:
                    position = reopen(slot)
                    if position is not None:
                        positions.append(position)
            again = self.matcher(slot, positions, view, self.rng)
            if not again:
                break
            self.metrics.count(self.metrics.aftermarket, "rounds")
            self.metrics.count(self.metrics.aftermarket, "negotiations", len(again))
            await self._negotiate(slot, again)
            pairings.extend(again)
        return waited

    async def _population(self, slot: int, positions: list[Position]) -> object:
        if self.population is None:
            return None
        names: dict[str, int] = {}
        types = [names.setdefault(p.agent_type, len(names)) for p in positions]
        net = [p.quantity if p.side == 0 else -p.quantity for p in positions]
        report = PopulationReport.of(
            slot, list(names), types, net, [p.reservation for p in positions]
        )
        try:
            await self.bus.send(self.population, report)
        except BusError as exc:
            _log.error("population_unavailable", slot=slot, error=str(exc))
            return self._view
        return await self._snapshot(slot)

    async def _snapshot(self, slot: int) -> object:
        """The mean-field service's snapshot, or the last one known if it does not answer."""
        assert self.population is not None
        started = self.clock()
        try:
            timeout = self.config.population_timeout_s
            answer = await self.bus.request(self.population, SnapshotQuery(slot), timeout)
            self.metrics.population_latency.observe(self.clock() - started)
            return answer
        except BusError as exc:
            _log.error("population_unavailable", slot=slot, error=str(exc))
            return self._view

    async def _negotiate(self, slot: int, pairings: Sequence[Any]) -> None:
        router = self.router
        # Not a semaphore: anyio's checkpoints per acquire (1.6 s per 30k), asyncio's scans waiters
        limit, loop = self.config.max_in_flight, asyncio.get_running_loop()
        room: asyncio.Future[None] | None = None
        done = asyncio.Event()
        open_count = 0

        def ended(nid: int) -> None:
            nonlocal open_count
            open_count -= 1
            if room is not None and not room.done():
                room.set_result(None)  # the starter may open the next one
            if open_count == 0 and starting_done and not router.closing:
                done.set()

        def quiet() -> None:  # the last closing move reached its peer
            if open_count == 0 and starting_done:
                done.set()

        router.on_end = ended
        router.on_quiet = quiet
        starting_done = False
        deadline_s = self.config.deadline_ms / 1000.0
        gate = self.clock() + self.config.slot_timeout_s
        with anyio.move_on_after(self.config.slot_timeout_s):
            for pairing in pairings:
                if self._stopping:
                    break
                while open_count >= limit:
                    room = loop.create_future()
                    await room
                nid = self._next_nid
                self._next_nid += 1
                open_count += 1
                router.open(
                    Flight(
                        nid,
                        slot,
                        pairing.initiator,
                        pairing.responder,
                        pairing.side,
                        pairing.quantity,
                        min(self.clock() + deadline_s, gate),
                    )
                )
            starting_done = True
            if open_count > 0 or router.closing:
                await done.wait()
        starting_done = True
        router.close_gate()
        router.on_end = lambda nid: None
        router.on_quiet = lambda: None
        if router.closing:  # gate closure with closing moves still queued: let them arrive
            with anyio.move_on_after(self.config.grace_s):
                while router.closing:
                    await anyio.sleep(0.001)

    def _report(self, wall_s: float) -> RunReport:
        return run_report(
            self.metrics,
            self.ledger,
            engine=self.engine.name,
            agents=len(self.agents),
            slots=self._slots_done,
            negotiations=self._negotiations,
            negotiation_s=self._negotiation_s,
            clearing_s=self._clearing_s,
            overflow=self.bus.overflow,
            wall_s=wall_s,
            interrupted=self._stopping,
        )


__all__ = ["PRICE_LEVELS", "RunReport", "Runtime", "RuntimeConfig", "SlotReport"]
