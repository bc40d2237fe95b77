"""Byzantine members: each attack runs, the runtime excludes the attacker, and no honest member
pays for anything it did not agree to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from agents import Trader, strategy
from agents.adversaries import BEHAVIOURS, Absent, Renege, Replay, SellsOnly, adversary
from market.matching import board_matcher
from negotiator.ledger import Ledger
from negotiator.runtime import Runtime, RuntimeConfig
from negotiator.simulation import SimulationConfig, build
from payments import InProcessRail


async def _balances(sim: object, agents: list[int]) -> dict[int, int]:
    rail = sim.rail  # type: ignore[attr-defined]
    return {i: await rail.balance(i) for i in agents}


@pytest.mark.parametrize("behaviour", [*BEHAVIOURS, "all"])
def test_an_attack_never_crashes_the_run_nor_costs_an_honest_member_money(
    tmp_path: Path, behaviour: str
) -> None:
    config = SimulationConfig(
        agents=200,
        slots=14,
        seed=3,
        rail="inprocess",
        ledger=str(tmp_path / "l.sqlite"),
        byzantine=behaviour,
        byzantine_share=0.2,
    )
    sim = build(config)
    assert len(sim.adversaries) == 40
    honest = [i for i in range(200) if i not in sim.adversaries]
    before = anyio.run(_balances, sim, honest)
    summary = anyio.run(sim.run)
    after = anyio.run(_balances, sim, honest)
    sim.close()
    for i in honest:  # what left an honest account is what it agreed to pay, no more
        trader = sim.traders[i]
        assert before[i] - after[i] == trader.peer_paid_msat - trader.peer_received_msat
    retired = sim.runtime.router.retired
    assert retired <= set(sim.adversaries)  # never an honest member
    if behaviour != "misreport":  # the others give themselves away and are excluded
        assert retired and summary.run.excluded
    assert summary.run.agreements > 100


def test_a_buyer_that_will_not_pay_is_excluded_at_its_first_unpaid_invoice(
    tmp_path: Path,
) -> None:
    config = SimulationConfig(
        agents=120, slots=14, seed=4, rail="inprocess", byzantine="renege", byzantine_share=0.1
    )
    sim = build(config)
    summary = anyio.run(sim.run)
    sim.close()
    reneged = sim.runtime.reneges  # the agreements it had already made count too
    assert reneged and set(reneged) <= set(sim.adversaries)
    assert set(reneged) <= sim.runtime.router.excluded  # out of the market, but ...
    assert summary.run.failure_reasons.get("unpaid", 0) == sum(reneged.values())
    assert summary.run.excluded == {"reneged": len(reneged)}  # ... each excluded once


def test_behaviours_are_chosen_by_name() -> None:
    assert adversary("renege", 0) is Renege and adversary("absent", 5) is Absent
    assert adversary("honest", 3) is Trader  # the control: the same members, no attack
    assert {adversary("all", k) for k in range(len(BEHAVIOURS))} == set(BEHAVIOURS.values())
    # ideal defences: a reneger's sales are real, its demand is not; other attacks are void
    assert adversary("ideal-renege", 0) is SellsOnly and adversary("ideal-spam", 0) is Trader
    ideal_all = [adversary("ideal-all", k) for k in range(len(BEHAVIOURS))]
    assert ideal_all.count(SellsOnly) == 1 and ideal_all.count(Trader) == len(BEHAVIOURS) - 1
    with pytest.raises(ValueError, match="choose from"):
        adversary("ideal-nice", 0)
    with pytest.raises(ValueError, match="choose from"):
        adversary("nice", 0)
    with pytest.raises(ValueError, match="choose from"):
        SimulationConfig(byzantine="nice")


def _market(
    tmp_path: Path,
    rounds: int,
    members: tuple[tuple[type[Trader], int, int], ...] = (
        (Trader, -10_000, 200_000),
        (Renege, 10_000, 200_000),
        (Trader, 10_000, 150_000),
    ),
    **runtime: Any,
) -> tuple[Runtime, list[Trader], Ledger]:
    """By default a seller of 10 kWh, a reneger who bids more for all of it (its import price is
    higher), and an honest buyer whose lower bid leaves it out of the first round (price
    priority). ``members``: (class, net Wh, import price) each; export price 50,000."""
    traders = [
        cls(
            address,
            "member",
            lambda slot, n=net: n,
            lambda slot, p=price, n=net: (p, 50_000 if n > 0 else p // 4),  # msat per kWh
            strategy("linear"),
            max_rounds=6,
        )
        for address, (cls, net, price) in enumerate(members)
    ]
    ledger = Ledger(tmp_path / f"ledger-{rounds}.sqlite")
    runtime = Runtime(
        traders,
        rail=InProcessRail({i: 10**12 for i in range(len(traders))}),
        ledger=ledger,
        matcher=board_matcher(),
        rng=np.random.default_rng(0),
        config=RuntimeConfig(aftermarket_rounds=rounds, **runtime),
    )
    return runtime, traders, ledger


@pytest.mark.parametrize("rounds", [0, 2])
def test_what_a_reneger_left_unpaid_is_sold_again_before_gate_closure(
    tmp_path: Path, rounds: int
) -> None:
    runtime, (seller, _, honest), ledger = _market(tmp_path, rounds)
    report = anyio.run(runtime.run, 1)
    runtime.close()
    states = dict(ledger.counts())
    ledger.close()
    assert report.failure_reasons == {"unpaid": 1} and 1 in runtime.router.excluded
    if rounds == 0:  # no aftermarket: the sale failed after the seller's slot closed on it
        assert seller.sold_wh == 0 and seller.exported_wh == 10_000
        assert honest.bought_wh == 0 and honest.imported_wh == 10_000
        assert report.aftermarket == {} and states["settled"] == 0
        return
    # the aftermarket: the seller's 10 kWh went to the honest buyer in the same slot
    assert report.aftermarket == {"negotiations": 1, "rounds": 1}
    assert seller.sold_wh == honest.bought_wh == 10_000
    assert seller.exported_wh == honest.imported_wh == 0
    assert states["settled"] == 1 and report.negotiations == 2
    assert seller.revenue_msat == honest.cost_msat > 10_000 * 50_000 // 1000
    assert runtime.settler.payers == {2} and not runtime.settler.provisional


def test_a_member_who_only_sells_never_buys() -> None:
    tariff = lambda slot: (200_000, 50_000)  # noqa: E731
    needs = SellsOnly(0, "member", lambda slot: 5_000, tariff, strategy("linear"))
    has = SellsOnly(1, "member", lambda slot: -5_000, tariff, strategy("linear"))
    assert needs.open_slot(0, None) is None and needs.reopen(0) is None
    position = has.open_slot(0, None)
    assert position is not None and position.quantity == 5_000
    needs.close_slot(0)  # what it needed came from the grid
    assert needs.imported_wh == 5_000 and needs.bought_wh == 0


@pytest.mark.parametrize("rounds", [0, 2])
def test_the_peer_of_an_agent_excluded_mid_slot_trades_again_before_gate_closure(
    tmp_path: Path, rounds: int
) -> None:
    # a cheap replaying seller wins the buyer on the board, is excluded at its first refused
    # move, and the buyer's need goes to the dearer honest seller in the aftermarket
    members = ((Replay, -10_000, 160_000), (Trader, -10_000, 240_000), (Trader, 10_000, 200_000))
    runtime, (_, honest_seller, buyer), ledger = _market(tmp_path, rounds, members, max_strikes=1)
    report = anyio.run(runtime.run, 1)
    runtime.close()
    ledger.close()
    assert runtime.router.excluded == {0} and report.excluded == {"refused_messages": 1}
    if rounds == 0:
        assert buyer.bought_wh == 0 and buyer.imported_wh == 10_000
        assert report.aftermarket == {}
        return
    assert report.aftermarket == {"negotiations": 1, "rounds": 1}
    assert buyer.bought_wh == honest_seller.sold_wh == 10_000 and buyer.imported_wh == 0
