"""The router's arbitration of the race between the runtime's deadline and the agents' moves."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from negotiator.actor import Effect, Position
from negotiator.bus import LocalBus
from negotiator.engines import MAX_UNDER_WAY, make_engine
from negotiator.flight import Flight
from negotiator.ledger import Agreement
from negotiator.messages import (
    SYSTEM,
    Accept,
    Counter,
    Paid,
    Propose,
    Side,
    Start,
    Terms,
    Timeout,
    Withdraw,
)
from negotiator.metrics import RunMetrics
from negotiator.router import Router

T = Terms("energy", 100, 200_000, 0, 1)


class Scripted:
    """An agent that answers every message with the next scripted effects."""

    agent_type = "scripted"

    def __init__(self, address: int, script: list[Sequence[Effect]]) -> None:
        self.address = address
        self.script = script
        self.seen: list[Any] = []

    def open_slot(self, slot: int, view: object) -> Position | None:
        return None

    def handle(self, message: Any, now: float) -> Sequence[Effect]:
        self.seen.append(message)
        return self.script.pop(0) if self.script else ()

    def close_slot(self, slot: int) -> None:
        return None


def quiet_router(bus: LocalBus, metrics: RunMetrics) -> Router:
    """A router whose agreements, payments and abandonments go nowhere."""
    return Router(
        bus,
        metrics,
        on_agreement=lambda a, now: None,
        on_pay=lambda pay: None,
        on_abandon=lambda nid, reason: None,
    )


def setup() -> tuple[Router, LocalBus, list[Agreement], dict[int, asyncio.Queue[Any]]]:
    bus = LocalBus()
    agreements: list[Agreement] = []
    router = Router(
        bus,
        RunMetrics(),
        on_agreement=lambda a, now: agreements.append(a),
        on_pay=lambda pay: None,
        on_abandon=lambda nid, reason: None,
    )
    inboxes = {address: bus.inbox(address) for address in (1, 2)}
    router.open(Flight(7, 0, 1, 2, Side.BUY, 100, deadline=10.0))
    start = inboxes[1].get_nowait()
    router.handle(Scripted(1, [(Propose(7, 1, 2, 1, 1, Side.BUY, T),)]), start)
    inboxes[2].get_nowait()  # the buyer's opening offer, on the table
    return router, bus, agreements, inboxes


def drain(queue: asyncio.Queue[Any]) -> list[Any]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


def test_an_accept_after_the_runtime_expired_the_negotiation_is_void() -> None:
    router, _bus, agreements, inboxes = setup()
    seller = Scripted(2, [(Accept(7, 2, 1, 1, 2, T),)])
    router.expire(7)  # the deadline passed: Timeout to both
    router.handle(
        seller, Propose(7, 1, 2, 1, 1, Side.BUY, T)
    )  # the seller answers a message in flight
    assert agreements == []
    assert router.metrics.late == {"accept": 1}
    assert router.metrics.outcomes == {"expired": 1}
    assert [type(m) for m in drain(inboxes[1])] == [Timeout]  # the buyer never sees the Accept
    assert [type(m) for m in drain(inboxes[2])] == [Timeout]


def test_an_accept_before_the_deadline_is_an_agreement_and_no_timeout_follows() -> None:
    router, _bus, agreements, inboxes = setup()
    seller = Scripted(2, [(Accept(7, 2, 1, 1, 2, T),)])
    router.handle(seller, Propose(7, 1, 2, 1, 1, Side.BUY, T))
    router.expire(7)  # too late: nothing to expire
    assert [a.nid for a in agreements] == [7]
    assert router.metrics.late == {}
    assert [type(m) for m in drain(inboxes[1])] == [Accept]
    assert drain(inboxes[2]) == []


def test_a_held_back_start_begins_its_negotiation_or_is_void_once_it_was_closed() -> None:
    bus, metrics = LocalBus(), RunMetrics()
    router = quiet_router(bus, metrics)
    inboxes = {address: bus.inbox(address) for address in (1, 2, 3)}
    router.open(Flight(7, 0, 1, 2, Side.BUY, 100, deadline=10.0))
    router.open(Flight(8, 0, 3, 2, Side.BUY, 100, deadline=10.0))
    start7, start8 = inboxes[1].get_nowait(), inboxes[3].get_nowait()
    router.expire(8)  # its deadline passed while its Start was held back
    assert [type(m) for m in drain(inboxes[3])] == [Timeout]
    buyer = Scripted(1, [(Propose(7, 1, 2, 1, 1, Side.BUY, T),)])
    late = Scripted(3, [(Propose(8, 3, 2, 1, 1, Side.BUY, T),)])
    router.begin(buyer, start7)
    router.begin(late, start8)
    assert buyer.seen == [start7] and late.seen == []  # the void Start is not delivered
    assert [(type(m), m.nid) for m in drain(inboxes[2])] == [(Timeout, 8), (Propose, 7)]
    assert metrics.late == {"start": 1}
    assert metrics.start_wait.count == 1  # from opening negotiation 7 to its first offer
    assert 7 in router.flights and 8 not in router.flights


def test_at_most_max_under_way_negotiations_begin_and_the_rest_wait_in_order() -> None:
    bus, metrics = LocalBus(), RunMetrics()
    router = quiet_router(bus, metrics)
    router.max_under_way = 2
    inboxes = {address: bus.inbox(address) for address in range(1, 7)}
    for nid, initiator in zip(range(10, 15), range(1, 6), strict=True):
        router.open(Flight(nid, 0, initiator, 6, Side.BUY, 100, deadline=10.0))

    def started() -> list[int]:
        return sorted(m.nid for q in inboxes.values() for m in drain(q) if type(m) is Start)

    assert started() == [10, 11] and router.under_way == 2  # 12, 13, 14 are held
    router.expire(13)  # its deadline passed while its Start was held: only the Timeout goes
    assert [(type(m), m.nid) for m in drain(inboxes[4])] == [(Timeout, 13)]
    assert router.under_way == 2
    router.end(10, "agreed")  # room for one: the next held Start in order
    assert started() == [12] and router.under_way == 2
    router.end(11, "rejected")  # 13's Start is void (counted late), 14 begins
    assert started() == [14] and metrics.late == {"start": 1}
    router.end(12, "agreed")
    router.end(14, "agreed")
    assert router.under_way == 0 and not router.flights

    # gate closure with Starts still held: each one is void, none is delivered afterwards
    for nid, initiator in zip(range(20, 24), range(1, 5), strict=True):
        router.open(Flight(nid, 1, initiator, 6, Side.BUY, 100, deadline=10.0))
    assert started() == [20, 21]
    router.close_gate()
    assert started() == [] and metrics.late == {"start": 3} and router.under_way == 0
    router.open(Flight(30, 2, 1, 6, Side.BUY, 100, deadline=10.0))
    assert started() == [30]  # the next slot begins at once

    # deadlines passed for one under way and one held: the held one's Start never goes out
    router.open(Flight(31, 2, 2, 6, Side.BUY, 100, deadline=10.0))
    router.open(Flight(32, 2, 3, 6, Side.BUY, 100, deadline=10.0))
    assert started() == [31]
    assert router.expire_due(11.0) == 3
    assert started() == [] and metrics.late == {"start": 4} and not router.flights


def test_late_counters_are_dropped_not_relayed() -> None:
    router, _bus, _agreements, inboxes = setup()
    buyer = Scripted(1, [(Counter(7, 1, 2, 2, 3, T),)])  # it was the seller's turn anyway
    router.expire(7)
    router.handle(buyer, Timeout(7, SYSTEM, 1, 0, 0))
    assert router.metrics.late == {"counter": 1}
    assert [type(m) for m in drain(inboxes[2])] == [Timeout]


def test_the_slot_waits_until_the_last_closing_move_reaches_the_peer() -> None:
    router, _bus, _agreements, inboxes = setup()
    quiet: list[bool] = []
    router.on_quiet = lambda: quiet.append(True)
    seller = Scripted(2, [(Accept(7, 2, 1, 1, 2, T),)])
    buyer = Scripted(1, [])
    router.handle(seller, Propose(7, 1, 2, 1, 1, Side.BUY, T))
    assert router.flights == {} and router.closing == {7: 1}  # ended, but not yet delivered
    assert quiet == []
    (accept,) = drain(inboxes[1])
    router.handle(buyer, accept)
    assert router.closing == {} and quiet == [True] and buyer.seen == [accept]


def test_the_router_referees_turns_parties_and_the_offer_on_the_table() -> None:
    """Moves out of turn, by a non-party, in another's name, accepting other terms, or
    settlement messages from an agent are refused and never relayed; enough refusals and the
    sender is out of the market."""
    router, _bus, agreements, inboxes = setup()
    router.max_strikes = 5
    other = Terms("energy", 100, 1, 0, 1)
    cases = [
        (Scripted(1, [(Counter(7, 1, 2, 2, 2, T),)]), "out_of_turn"),  # the buyer moved last
        (Scripted(3, [(Counter(7, 3, 2, 2, 2, T),)]), "not_a_party"),
        (Scripted(3, [(Counter(7, 1, 2, 2, 2, T),)]), "forged_sender"),
        (Scripted(2, [(Accept(7, 2, 1, 1, 2, other),)]), "terms_mismatch"),
        (Scripted(1, [(Paid(7, 1, 2, 0, 3, "00" * 32, "00" * 32, 0),)]), "forged_settlement"),
    ]
    for agent, reason in cases:
        router.handle(agent, Timeout(7, SYSTEM, agent.address, 0, 0))
        assert router.metrics.rejected.get(reason) == 1, reason
    assert agreements == [] and drain(inboxes[2]) == []
    # the seller spent its turn on a false Accept: the negotiation is closed for the buyer
    assert [type(m) for m in drain(inboxes[1])] == [Withdraw] and 7 not in router.flights
    liar = Scripted(2, [(Counter(7, 1, 2, 2, 2, T),)] * 5)  # in the buyer's name
    for _ in range(4):  # its fifth refusal
        router.handle(liar, Timeout(7, SYSTEM, 2, 0, 0))
    assert 2 in router.retired and router.metrics.excluded == {"refused_messages": 1}


def test_one_message_cannot_be_turned_into_a_flood() -> None:
    router, _bus, _agreements, inboxes = setup()
    flood = [Counter(7, 2, 1, 2, 2 + i, T) for i in range(20)]
    router.handle(Scripted(2, [flood]), Timeout(7, SYSTEM, 2, 0, 0))
    assert router.metrics.rejected["rate_limited"] == 1
    assert len(drain(inboxes[1])) == 1  # the first is a legal counter; the rest out of turn
    assert router.metrics.rejected["out_of_turn"] == router.max_effects - 1


def test_engines_are_built_by_name_and_refuse_bad_settings() -> None:
    bus, metrics = LocalBus(), RunMetrics()
    router = quiet_router(bus, metrics)
    assert make_engine("task", bus, router).name == "task"
    assert router.max_under_way == MAX_UNDER_WAY  # the task engine limits Starts by default
    make_engine("task", bus, router, max_under_way=0)
    assert router.max_under_way == 0
    assert make_engine("shard", bus, quiet_router(bus, metrics)).name == "shard"
    for name, options, needle in [
        ("threads", {}, "unknown engine"),
        ("task", {"max_under_way": -1}, "max_under_way"),
        ("shard", {"shards": 0}, "shards"),
    ]:
        with pytest.raises(ValueError, match=needle):
            make_engine(name, bus, router, **options)
