"""The router: calls an agent's handler, isolates its failures, and routes the effects it returns.

Both engines call :meth:`Router.handle` for every message; it is the whole per-message work of the
runtime beyond the queue itself, so it is written for the hot path (bound methods, a dict of routes
by effect type, no locks, no awaits). It also keeps the table of negotiations in flight: when each
opened (for the propose-to-accept latency), when it must end (the wall-clock deadline), and who is
in it (to close it on behalf of an agent that fails).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import structlog

from negotiator.actor import Agent, Pay, Skip
from negotiator.bus import Bus
from negotiator.errors import ProtocolViolation
from negotiator.flight import Flight
from negotiator.ledger import Agreement
from negotiator.messages import (
    SYSTEM,
    Accept,
    Counter,
    InvoiceIssued,
    Paid,
    Propose,
    Reject,
    SettlementFailed,
    Start,
    Timeout,
    Withdraw,
    kind_of,
)
from negotiator.metrics import RunMetrics

_log = structlog.get_logger(__name__)

_SETTLEMENT: Final = frozenset({InvoiceIssued, Paid, SettlementFailed})
_LOG_FIRST: Final = 20
"""Violations logged one by one per reason before logging only every 1,000th."""


class Router:
    """Per-message work shared by the engines."""

    def __init__(
        self,
        bus: Bus,
        metrics: RunMetrics,
        *,
        on_agreement: Callable[[Agreement, float], None],
        on_pay: Callable[[Pay], None],
        on_abandon: Callable[[int, str], None],
        on_unpaid: Callable[[int, int], None] = lambda nid, payer: None,
        max_failures: int = 3,
        max_effects: int = 8,
        max_strikes: int = 50,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.bus = bus
        self.metrics = metrics
        self.clock = clock
        self.flights: dict[int, Flight] = {}
        self.retired: set[int] = set()
        self.failures: dict[int, int] = {}
        self.max_failures = max_failures
        self.max_effects = max_effects
        """Effects one handler call may return; the rest are dropped (``rate_limited``): an
        agent cannot turn one message into a flood."""
        self.max_strikes = max_strikes
        """Messages the router refused from one agent before it excludes (retires) it."""
        self.strikes: dict[int, int] = {}
        self.excluded: set[int] = set()
        """Retired for misbehaving, not for failing: they negotiate no more, but are still sent
        what settles the agreements they already made (and must pay for)."""
        self._on_unpaid = on_unpaid
        self._last_nid = -1
        self.slot_trades: list[tuple[int, int]] = []
        """(price, quantity) of the agreements of the current slot."""
        self.on_end: Callable[[int], None] = lambda nid: None
        self.max_under_way = 0
        """Negotiations begun at once (their Start sent), at most; 0: no limit. The Starts of
        the other flights wait here, in order, until one under way ends (the task engine sets
        it: see :class:`~negotiator.engines.TaskEngine`)."""
        self._held: deque[Start] = deque()
        self._under_way = 0
        self.closing: dict[int, int] = {}
        """nid -> receiver of a closing move (accept, reject, withdraw) not yet delivered.

        The negotiation has ended for the runtime, but its last message is still queued for the
        peer; the slot may not close (and agents may not drop their open negotiations) until it
        is delivered, or the peer would meet an Accept for a negotiation it already gave up.
        """
        self.on_quiet: Callable[[], None] = lambda: None
        """Called when the last undelivered closing move has been delivered."""
        self._on_agreement = on_agreement
        self._on_pay = on_pay
        self._on_abandon = on_abandon
        self._violations: dict[str, int] = metrics.rejected
        counts = metrics.messages
        for kind in ("propose", "counter", "accept", "reject", "withdraw"):
            counts.setdefault(kind, 0)
        for kind in ("invoice", "paid", "settlement_failed", "start", "timeout"):
            counts.setdefault(kind, 0)
        self._routes: dict[type, Callable[[Any, float], None]] = {
            Propose: self._route_propose,
            Counter: self._route_counter,
            Accept: self._route_accept,
            Reject: self._route_closing("reject", "rejected"),
            Withdraw: self._route_closing("withdraw", "withdrawn"),
            InvoiceIssued: self._forged_settlement,  # only the settler issues these
            Paid: self._forged_settlement,
            SettlementFailed: self._forged_settlement,
            Pay: lambda pay, now: self._on_pay(pay),
            Skip: self._route_skip,
        }

    # -- the hot path -------------------------------------------------------------------------

    def handle(self, agent: Agent, message: Any) -> None:
        """Deliver one message to one agent and route what it returns."""
        closing = self.closing
        if closing and closing.get(message.nid) == agent.address:
            del closing[message.nid]
            if not closing:
                self.on_quiet()
        if agent.address in self.retired and not (
            agent.address in self.excluded and type(message) in _SETTLEMENT
        ):
            self._to_retired(agent, message)
            return
        now = self.clock()
        try:
            effects = agent.handle(message, now)
        except ProtocolViolation as exc:
            self.violation(exc, agent.address)
            self._blame(message)
            return
        except Exception as exc:
            self._failed(agent, message, exc)
            return
        if len(effects) > self.max_effects:
            self.refuse("rate_limited", effects[self.max_effects], agent.address)
            effects = effects[: self.max_effects]
        if type(message) is InvoiceIssued and not any(type(e) is Pay for e in effects):
            self._on_unpaid(message.nid, agent.address)  # it will not pay: no need to wait
        routes = self._routes
        address = agent.address
        for effect in effects:
            if effect.sender != address:  # in another's name (or the runtime's)
                self.refuse("forged_sender", effect, address)
                continue
            routes[type(effect)](effect, now)

    def begin(self, agent: Agent, start: Start) -> None:
        """Deliver a Start that an engine held back (the shard engine starts a negotiation when
        those under way are done): void, counted late, if the runtime closed the negotiation
        meanwhile (its deadline, the gate), as the Timeout its initiator got already says."""
        if start.nid in self.flights:
            self.handle(agent, start)
        else:
            self._late(start)

    def refuse(self, reason: str, message: Any, agent: int) -> None:
        """Count, log (the first few) and drop a move the router will not relay; an agent that
        collects ``max_strikes`` of them is excluded from the market (retired)."""
        n = self._violations.get(reason, 0) + 1
        self._violations[reason] = n
        if n <= _LOG_FIRST or n % 1000 == 0:
            _log.warning(
                "message_refused",
                reason=reason,
                agent=agent,
                nid=getattr(message, "nid", -1),
                kind=type(message).__name__,
                seen=n,
            )
        self._strike(agent)

    def _route_skip(self, skip: Skip, now: float) -> None:
        flight = self.flights.get(skip.nid)
        if flight is not None and flight.initiator != skip.agent:
            self.refuse("not_a_party", skip, skip.agent)
            return
        self.end(skip.nid, "skipped")

    def _blame(self, message: Any) -> None:
        """A move the router relayed was refused by its receiver (broken terms, a replayed
        sequence number): its sender broke the protocol. The negotiation is closed at once (the
        receiver's quantity is free again, not held until the deadline) and the sender earns a
        strike."""
        sender = message.sender
        flight = self.flights.get(message.nid)
        if sender == SYSTEM or flight is None or sender not in (flight.initiator, flight.responder):
            return
        self._close_for(sender, message.nid, "protocol_violation")
        self._strike(sender)

    def _strike(self, agent: int) -> None:
        strikes = self.strikes.get(agent, 0) + 1
        self.strikes[agent] = strikes
        if strikes >= self.max_strikes and agent not in self.retired:
            self.metrics.count(self.metrics.excluded, "refused_messages")
            self.retire(agent, "refused_messages")

    def _forged_settlement(self, message: Any, now: float) -> None:
        self.refuse("forged_settlement", message, message.sender)

    def _late_or_unknown(self, message: Any) -> None:
        """No flight for this move: late if the negotiation existed, refused if it never did."""
        if message.nid > self._last_nid:
            self.refuse("unknown_negotiation", message, message.sender)
        else:
            self._late(message)

    def _late(self, message: Any) -> None:
        """A negotiation message for a negotiation the runtime already closed: not relayed.

        The runtime is the arbiter of the race between its deadline and the agents' moves: once it
        has sent Timeout to both parties, a Counter or an Accept still on its way is void (the
        parties end the negotiation on the Timeout), so it is counted and dropped, not delivered
        to a peer that has already closed it.
        """
        table = self.metrics.late
        kind = kind_of(message)
        table[kind] = table.get(kind, 0) + 1

    def _out_of_turn(self, flight: Flight, message: Any) -> bool:
        """Refuse a move by the party whose turn it is not, or to anyone but the other party."""
        sender = message.sender
        other = flight.responder if sender == flight.initiator else flight.initiator
        if sender != flight.turn or message.receiver != other:
            reason = (
                "out_of_turn" if sender in (flight.initiator, flight.responder) else "not_a_party"
            )
            self.refuse(reason, message, sender)
            return True
        return False

    def _route_propose(self, message: Propose, now: float) -> None:
        flight = self.flights.get(message.nid)
        if flight is None:
            self._late_or_unknown(message)
            return
        if flight.terms is not None:  # a negotiation opens once
            self.refuse("out_of_turn", message, message.sender)
            return
        if self._out_of_turn(flight, message):
            return
        metrics = self.metrics
        metrics.messages["propose"] += 1
        metrics.start_wait.observe(now - flight.begun)
        flight.opened = now
        flight.terms = message.terms
        flight.turn = message.receiver
        self.bus.send_nowait(message)

    def _route_counter(self, message: Counter, now: float) -> None:
        flight = self.flights.get(message.nid)
        if flight is None:
            self._late_or_unknown(message)
            return
        if flight.terms is None:  # nothing to counter yet
            self.refuse("out_of_turn", message, message.sender)
            return
        if self._out_of_turn(flight, message):
            return
        self.metrics.messages["counter"] += 1
        flight.terms = message.terms
        flight.turn = message.receiver
        self.bus.send_nowait(message)

    def _route_accept(self, message: Accept, now: float) -> None:
        flight = self.flights.get(message.nid)
        if flight is None:  # closed by the runtime first: void, the Timeout tells the accepter
            self._late_or_unknown(message)
            return
        if self._out_of_turn(flight, message):
            return
        if message.terms != flight.terms:  # only the offer on the table can be accepted
            self.refuse("terms_mismatch", message, message.sender)
            self._close_for(message.sender, message.nid, "protocol_violation")  # its turn is spent
            return
        metrics = self.metrics
        metrics.messages["accept"] += 1
        if self.bus.send_nowait(message):
            self.closing[message.nid] = message.receiver
        metrics.negotiation_latency.observe(now - flight.opened)
        metrics.rounds.observe(message.round)
        terms = message.terms
        self.slot_trades.append((terms.price, terms.quantity))
        agreement = Agreement(
            message.nid, flight.slot, flight.buyer, flight.seller, terms, message.seq
        )
        self.end(message.nid, "agreed")
        self._on_agreement(agreement, now)

    def _route_closing(self, kind: str, outcome: str) -> Callable[[Any, float], None]:
        counts = self.metrics.messages
        send = self.bus.send_nowait
        rounds = self.metrics.rounds

        def route(message: Any, now: float) -> None:
            flight = self.flights.get(message.nid)
            if flight is None:
                self._late_or_unknown(message)
                return
            sender = message.sender
            parties = (flight.initiator, flight.responder)
            if (
                sender not in parties
                or message.receiver not in parties
                or message.receiver == sender
            ):
                self.refuse("not_a_party", message, sender)
                return
            counts[kind] += 1
            if send(message):
                self.closing[message.nid] = message.receiver
            rounds.observe(message.round)
            self.end(message.nid, outcome)

        return route

    # -- negotiations in flight ---------------------------------------------------------------

    def open(self, flight: Flight) -> None:
        """Track a negotiation the runtime is about to start, and send Start to its initiator
        (or hold it back while ``max_under_way`` negotiations are under way)."""
        self.flights[flight.nid] = flight
        flight.begun = self.clock()
        self._last_nid = max(self._last_nid, flight.nid)
        self.metrics.in_flight = len(self.flights)
        self.metrics.messages["start"] += 1
        f = flight
        start = Start(f.nid, SYSTEM, f.initiator, 0, 0, f.responder, f.side, f.quantity, f.slot)
        if self.max_under_way:
            if self._under_way >= self.max_under_way:
                self._held.append(start)
                return
            self._under_way += 1
            f.started = True
        self.bus.send_nowait(start)

    @property
    def under_way(self) -> int:
        """Negotiations whose Start has been sent and that have not ended (with a limit)."""
        return self._under_way

    def _admit(self) -> None:
        """Send held Starts while there is room; one whose negotiation the runtime has closed
        meanwhile (its deadline, the gate) is void and counted late, as the Timeout its
        initiator got already says."""
        held = self._held
        flights = self.flights
        while held and self._under_way < self.max_under_way:
            start = held.popleft()
            f = flights.get(start.nid)
            if f is None:
                self._late(start)
                continue
            f.started = True
            self._under_way += 1
            self.bus.send_nowait(start)

    def end(self, nid: int, outcome: str) -> None:
        """A negotiation is over (agreed, rejected, withdrawn, expired, skipped)."""
        flight = self.flights.pop(nid, None)
        if flight is None:
            return
        if flight.started:
            self._under_way -= 1
        if self._held and (flight.started or not self.flights):  # room, or all held are void
            self._admit()
        self.metrics.in_flight = len(self.flights)
        table = self.metrics.outcomes
        table[outcome] = table.get(outcome, 0) + 1
        self.on_end(nid)

    def expire(self, nid: int, reason: str = "expired") -> None:
        """Close an open negotiation for the runtime (deadline, gate closure): Timeout to both."""
        flight = self.flights.get(nid)
        if flight is None:
            return
        self.end(nid, reason)
        for party in (flight.initiator, flight.responder):
            self.metrics.messages["timeout"] += 1
            self.bus.send_nowait(Timeout(nid, SYSTEM, party, 0, 0))

    def close_gate(self) -> None:
        """Expire every open negotiation (gate closure); the Starts still held are void first,
        so that none goes out just before its negotiation closes."""
        while self._held:
            self._late(self._held.popleft())
        for nid in list(self.flights):
            self.expire(nid, "gate_closed")

    def expire_due(self, now: float) -> int:
        """Expire every flight whose deadline has passed; flights are in deadline order."""
        due = []
        for nid, flight in self.flights.items():
            if flight.deadline > now:
                break
            due.append(nid)
        for nid in reversed(due):  # the last first: no held Start of a due one goes out before
            self.expire(nid)  # its own Timeout when an earlier one's end makes room
        return len(due)

    # -- trouble ------------------------------------------------------------------------------

    def violation(self, exc: ProtocolViolation, agent: int) -> None:
        """Count and log a refused message; the agent and the run go on."""
        reason = exc.violation.value
        n = self._violations.get(reason, 0) + 1
        self._violations[reason] = n
        if n <= _LOG_FIRST or n % 1000 == 0:
            _log.warning(
                "protocol_violation",
                nid=exc.nid,
                agent=agent,
                violation=reason,
                detail=exc.detail,
                seen=n,
            )

    def rejected_bytes(self, detail: str) -> None:
        """Count and log bytes that did not decode into a message."""
        n = self._violations.get("decode", 0) + 1
        self._violations["decode"] = n
        if n <= _LOG_FIRST or n % 1000 == 0:
            _log.warning("undecodable_message", detail=detail[:200], seen=n)

    def _failed(self, agent: Agent, message: Any, exc: Exception) -> None:
        address = agent.address
        self.metrics.agent_failures += 1
        n = self.failures.get(address, 0) + 1
        self.failures[address] = n
        nid = getattr(message, "nid", -1)
        _log.error(
            "agent_failed",
            agent=address,
            nid=nid,
            kind=kind_of(message),
            failures=n,
            exc_info=exc,
        )
        self._close_for(address, nid, "agent_failure")
        if n >= self.max_failures:
            self.retire(address)

    def _close_for(self, address: int, nid: int, reason: str) -> None:
        flight = self.flights.get(nid)
        if flight is not None and address in (flight.initiator, flight.responder):
            other = flight.responder if address == flight.initiator else flight.initiator
            self.end(nid, "withdrawn")
            self.metrics.messages["withdraw"] += 1
            self.bus.send_nowait(Withdraw(nid, SYSTEM, other, 0, 0, reason))
        else:
            self._on_abandon(nid, reason)

    def retire(self, address: int, reason: str = "failures") -> None:
        """Stop delivering to an agent and close every negotiation it is in (``reason``:
        ``failures`` of its handler, or why it was excluded from the market)."""
        if address in self.retired:
            return
        self.retired.add(address)
        if reason != "failures":
            self.excluded.add(address)
        self.metrics.agents_alive -= 1
        level = _log.error if reason == "failures" else _log.warning
        level("agent_retired", agent=address, reason=reason, failures=self.failures.get(address, 0))
        for nid, flight in list(self.flights.items()):
            if address in (flight.initiator, flight.responder):
                self._close_for(address, nid, "agent_retired")

    def _to_retired(self, agent: Agent, message: Any) -> None:
        nid = getattr(message, "nid", -1)
        self._close_for(agent.address, nid, "agent_retired")
