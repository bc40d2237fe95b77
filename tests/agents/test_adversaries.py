"""Byzantine members: each attack runs, the runtime excludes the attacker, and no honest member
pays for anything it did not agree to."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from agents import Trader
from agents.adversaries import BEHAVIOURS, Absent, Renege, adversary
from negotiator.simulation import SimulationConfig, build


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
    with pytest.raises(ValueError, match="choose from"):
        adversary("nice", 0)
    with pytest.raises(ValueError, match="choose from"):
        SimulationConfig(byzantine="nice")
