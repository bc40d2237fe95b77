"""Byzantine members against the honest market: what a fifth of malicious agents costs the rest.

The same community (synthetic, ``make run``'s kind) is run once with the chosen members absent
(they sit out: "the same run without them"), once with the same members trading honestly (the
control), and once with them attacking, per behaviour and with all behaviours at once. The
drops are against the run without them (``*_drop``) and against the control
(``*_drop_vs_honest``: the attack's own damage, without the competition that the same members
bring by trading honestly in the roles their attack leaves alone). Among the honest members only:

- ``efficiency``: their gains from trade, what they would pay trading with the grid alone less
  what they paid (grid and peers), in msat; ``efficiency_drop`` is its relative fall;
- ``agreement_rate``: agreements settled between two honest members per negotiation the
  matcher opened between two honest members; ``agreement_rate_drop`` is its relative fall;
- ``honest_overpaid_msat``: what left honest members' accounts beyond what they themselves agreed
  to pay peers (their own books), summed over members; it must be 0.

Settlement is on the in-process rail (exact balances, no routing fees), so the balance check is
exact. Prints figures (JSON with --json), asserts nothing.

    python benchmarks/byzantine.py --fraction 0.2 --json
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).parent.parent))

from agents.adversaries import BEHAVIOURS
from negotiator import log
from negotiator.settlement import Rail
from negotiator.simulation import Simulation, SimulationConfig, build


def _grid_only(sim: Simulation, agent: int, slots: int) -> int:
    cost = 0
    for slot in range(slots):
        imp, exp = sim.tariff(slot)
        net = int(sim.community.net_wh[agent, slot])
        cost += net * imp // 1000 if net > 0 else -(-net * exp // 1000)
    return cost


async def _balances(rail: Rail, agents: list[int]) -> dict[int, int]:
    return {i: await rail.balance(i) for i in agents}


def run(behaviour: str, args: argparse.Namespace) -> dict[str, Any]:
    """One run with ``behaviour`` (``absent``: the baseline); honest members' figures."""
    config = SimulationConfig(
        agents=args.agents,
        slots=args.slots,
        seed=args.seed,
        rail="inprocess",
        byzantine=behaviour,
        byzantine_share=args.fraction,
        location=args.location,
    )
    sim = build(config)
    honest = sorted(set(range(args.agents)) - set(sim.adversaries))
    is_honest = set(honest)
    opened = [0]
    matcher = sim.runtime.matcher

    def counting(slot: int, positions: Any, view: Any, rng: Any) -> Any:
        pairings = matcher(slot, positions, view, rng)
        opened[0] += sum(p.initiator in is_honest and p.responder in is_honest for p in pairings)
        return pairings

    sim.runtime.matcher = counting
    before = anyio.run(_balances, sim.rail, honest)
    started = time.perf_counter()
    crashed = None
    try:
        summary = anyio.run(sim.run)
    except Exception as exc:  # the run must never crash: report it if it does
        crashed = repr(exc)
    wall = time.perf_counter() - started
    traders = sim.traders
    overpaid = 0
    after = anyio.run(_balances, sim.rail, honest)
    for i in honest:
        outflow = before[i] - after[i]
        agreed = traders[i].peer_paid_msat - traders[i].peer_received_msat
        overpaid += max(0, outflow - agreed)
    gains = sum(
        _grid_only(sim, i, args.slots) - (traders[i].cost_msat - traders[i].revenue_msat)
        for i in honest
    )
    db = sqlite3.connect(sim.ledger.path)
    rows = db.execute("SELECT buyer, seller FROM agreements WHERE state = 'settled'").fetchall()
    db.close()
    settled = sum(b in is_honest and s in is_honest for b, s in rows)
    run_report = summary.run if crashed is None else None
    sim.close()
    return {
        "efficiency_msat": gains,
        "agreement_rate": round(settled / opened[0], 6) if opened[0] else 0.0,
        "honest_negotiations": opened[0],
        "honest_agreements": settled,
        "honest_overpaid_msat": overpaid,
        "excluded": run_report.excluded if run_report else {},
        "rejected_messages": run_report.rejected_messages if run_report else {},
        "failure_reasons": run_report.failure_reasons if run_report else {},
        "crashed": crashed,
        "wall_s": round(wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=24)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--location", default="median", help="mean-field location statistic")
    parser.add_argument("--only", nargs="*", help="behaviours to run (default: all)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    log.configure("error")
    base = run("absent", args)
    control = run("honest", args)
    result: dict[str, Any] = {
        "fraction": args.fraction,
        "agents": args.agents,
        "slots": args.slots,
        "location": args.location,
        "baseline": base,
        "control": control,
        "behaviours": {},
    }

    def drop(attacked: dict[str, Any], reference: dict[str, Any], key: str) -> float:
        return round(1 - attacked[key] / reference[key], 6) if reference[key] else 0.0

    for behaviour in args.only or [*BEHAVIOURS, "all"]:
        attacked = run(behaviour, args)
        attacked["efficiency_drop"] = drop(attacked, base, "efficiency_msat")
        attacked["agreement_rate_drop"] = drop(attacked, base, "agreement_rate")
        attacked["efficiency_drop_vs_honest"] = drop(attacked, control, "efficiency_msat")
        attacked["agreement_rate_drop_vs_honest"] = drop(attacked, control, "agreement_rate")
        result["behaviours"][behaviour] = attacked
        if not args.json:
            print(
                f"{behaviour:12s} efficiency_drop {attacked['efficiency_drop']:+.4f}"
                f" (vs honest {attacked['efficiency_drop_vs_honest']:+.4f})"
                f"  agreement_rate_drop {attacked['agreement_rate_drop']:+.4f}"
                f"  overpaid {attacked['honest_overpaid_msat']}  excluded {attacked['excluded']}"
                f"  crashed {attacked['crashed']}  {attacked['wall_s']} s",
                flush=True,
            )
    worst = max(abs(b["efficiency_drop"]) for b in result["behaviours"].values())
    result["max_efficiency_drop"] = worst
    result["max_efficiency_drop_vs_honest"] = max(
        b["efficiency_drop_vs_honest"] for b in result["behaviours"].values()
    )
    result["max_agreement_rate_drop"] = max(
        abs(b["agreement_rate_drop"]) for b in result["behaviours"].values()
    )
    result["honest_overpaid_msat"] = sum(
        b["honest_overpaid_msat"] for b in result["behaviours"].values()
    )
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
