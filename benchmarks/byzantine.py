"""Byzantine members against the honest market: what a fifth of malicious agents costs the rest.

The same community (synthetic, ``make run``'s kind) is run once with the chosen members absent
(they sit out: "the same run without them"), once with the same members trading honestly (the
control), and once with them attacking, per behaviour and with all behaviours at once. Each
drop is given against three references:

- ``*_drop``: the run without them (the issue's baseline; it counts the competition the same
  members bring by trading honestly in the roles their attack leaves alone, and the demand a
  reneger takes away by never paying, as damage);
- ``*_drop_vs_honest``: the control (the same members trading honestly);
- ``*_drop_vs_ideal``: the same members under an ideal defence (``ideal-BEHAVIOUR``, see
  :mod:`agents.adversaries`): every attack void, every real trade standing. It is the control
  for every behaviour but ``renege``, whose members then sell and never buy. This is the part
  of the damage a better defence could still win back.

Every figure is the mean over ``--seeds`` (each seed draws other members and another
community); the per-seed figures are in the JSON. Among the honest members only:

- ``efficiency``: their gains from trade, what they would pay trading with the grid alone less
  what they paid (grid and peers), in msat; ``efficiency_drop`` is its relative fall;
- ``agreement_rate``: agreements settled between two honest members per negotiation the
  matcher opened between two honest members; ``agreement_rate_drop`` is its relative fall;
- ``honest_overpaid_msat``: what left honest members' accounts beyond what they themselves agreed
  to pay peers (their own books), summed over members; it must be 0.

Settlement is on the in-process rail (exact balances, no routing fees), so the balance check is
exact. Prints figures (JSON with --json), asserts nothing.

    python benchmarks/byzantine.py --fraction 0.2 --json [--plot byzantine.png]
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

from agents import Trader
from agents.adversaries import BEHAVIOURS, adversary
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


def _drop(attacked: dict[str, Any], reference: dict[str, Any], key: str) -> float:
    return round(1 - attacked[key] / reference[key], 6) if reference[key] else 0.0


def measure(behaviours: list[str], args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Every behaviour against its three references, for one seed (one draw of members)."""
    one = argparse.Namespace(**{**vars(args), "seed": seed})
    base = run("absent", one)
    control = run("honest", one)
    ideals: dict[str, dict[str, Any]] = {}
    out: dict[str, Any] = {"seed": seed, "baseline": base, "control": control, "behaviours": {}}
    for behaviour in behaviours:
        attacked = run(behaviour, one)
        if adversary(f"ideal-{behaviour}", 0) is Trader and behaviour != "all":
            ideal = control  # every real move stands: the honest control
        else:
            ideal = ideals.setdefault(behaviour, run(f"ideal-{behaviour}", one))
        for name, reference in (("", base), ("_vs_honest", control), ("_vs_ideal", ideal)):
            attacked[f"efficiency_drop{name}"] = _drop(attacked, reference, "efficiency_msat")
            attacked[f"agreement_rate_drop{name}"] = _drop(attacked, reference, "agreement_rate")
        out["behaviours"][behaviour] = attacked
        if not args.json:
            print(
                f"seed {seed} {behaviour:12s} efficiency_drop {attacked['efficiency_drop']:+.4f}"
                f" (vs honest {attacked['efficiency_drop_vs_honest']:+.4f},"
                f" vs ideal {attacked['efficiency_drop_vs_ideal']:+.4f})"
                f"  agreement_rate_drop {attacked['agreement_rate_drop']:+.4f}"
                f"  overpaid {attacked['honest_overpaid_msat']}  excluded {attacked['excluded']}"
                f"  crashed {attacked['crashed']}  {attacked['wall_s']} s",
                flush=True,
            )
    out["ideal"] = ideals
    return out


_DROPS = tuple(
    f"{what}_drop{ref}"
    for what in ("efficiency", "agreement_rate")
    for ref in ("", "_vs_honest", "_vs_ideal")
)


def summarise(runs: list[dict[str, Any]], behaviours: list[str]) -> dict[str, Any]:
    """Per behaviour: each drop's mean over the seeds, overpayment and crashes over all."""
    out: dict[str, Any] = {}
    for behaviour in behaviours:
        each = [r["behaviours"][behaviour] for r in runs]
        row: dict[str, Any] = {k: round(sum(e[k] for e in each) / len(each), 6) for k in _DROPS}
        row["efficiency_drop_per_seed"] = [e["efficiency_drop"] for e in each]
        row["efficiency_drop_vs_honest_per_seed"] = [e["efficiency_drop_vs_honest"] for e in each]
        row["efficiency_drop_vs_ideal_per_seed"] = [e["efficiency_drop_vs_ideal"] for e in each]
        row["honest_overpaid_msat"] = sum(e["honest_overpaid_msat"] for e in each)
        row["crashed"] = [e["crashed"] for e in each if e["crashed"]]
        row["excluded"] = [e["excluded"] for e in each]
        out[behaviour] = row
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    """Bars: each behaviour's mean efficiency drop against the three references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["behaviours"])
    rows = result["behaviours"]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.27
    for k, (key, label) in enumerate(
        (
            ("efficiency_drop", "vs absent (the members sit out)"),
            ("efficiency_drop_vs_honest", "vs honest control"),
            ("efficiency_drop_vs_ideal", "vs ideal defence"),
        )
    ):
        xs = [i + (k - 1) * width for i in range(len(names))]
        ax.bar(xs, [100 * rows[n][key] for n in names], width, label=label)
    ax.axhline(2, color="black", linestyle="--", linewidth=0.8, label="target: 2%")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("honest members' gains lost (%)")
    seeds = ", ".join(str(s) for s in result["seeds"])
    ax.set_title(
        f"{result['fraction']:.0%} Byzantine members, {result['agents']} members,"
        f" {result['slots']} slots (mean over seeds {seeds})"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=24)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--location", default="median", help="mean-field location statistic")
    parser.add_argument("--only", nargs="*", help="behaviours to run (default: all)")
    parser.add_argument("--plot", type=Path, help="write a bar chart of the drops (PNG)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    log.configure("error")
    behaviours = args.only or [*BEHAVIOURS, "all"]
    runs = [measure(behaviours, args, seed) for seed in args.seeds]
    rows = summarise(runs, behaviours)
    result: dict[str, Any] = {
        "fraction": args.fraction,
        "agents": args.agents,
        "slots": args.slots,
        "seeds": args.seeds,
        "location": args.location,
        "behaviours": rows,
        "runs": runs,
    }
    for key in ("efficiency_drop", "efficiency_drop_vs_honest", "efficiency_drop_vs_ideal"):
        result[f"max_{key}"] = max(r[key] for r in rows.values())
    result["max_agreement_rate_drop"] = max(r["agreement_rate_drop"] for r in rows.values())
    result["honest_overpaid_msat"] = sum(r["honest_overpaid_msat"] for r in rows.values())
    result["crashed"] = [c for r in rows.values() for c in r["crashed"]]
    if args.plot is not None:
        plot(result, args.plot)
    if args.json:
        print(json.dumps(result))
    else:
        print("mean over seeds", args.seeds)
        for name, row in rows.items():
            print(
                f"{name:12s} efficiency_drop {row['efficiency_drop']:+.4f}"
                f" (vs honest {row['efficiency_drop_vs_honest']:+.4f},"
                f" vs ideal {row['efficiency_drop_vs_ideal']:+.4f})"
                f"  agreement_rate_drop {row['agreement_rate_drop']:+.4f}"
                f"  overpaid {row['honest_overpaid_msat']}"
            )


if __name__ == "__main__":
    main()
