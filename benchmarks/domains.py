"""Every domain on the same kernel: market quality against each domain's benchmark.

Runs each domain's scenario through the generic composition root (``simulate --domain``: the
adapter's agents, the simulated Lightning rail, the SQLite ledger, the mean-field service, the
board matcher) for each seed, with the mean-field service's guidance and without it, and prints
per run: ``efficiency`` against the domain's centralised benchmark (logistics: the HiGHS
assignment of parcels to carriers' slots; energy: the HiGHS programme over the realised day),
``agreement_rate``, messages per negotiation (what the guidance saves: it moves prices and
rounds, not which units trade, so efficiency is the same either way), propose-to-accept latency
p50 / p95, negotiations per second of the run, wall seconds; and per domain and guidance the
mean efficiency over the seeds. Prints figures (JSON with --json), asserts nothing.

    python benchmarks/domains.py --json [--domains logistics energy] [--seeds 1 2 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).parent.parent))

from negotiator import log
from negotiator.domain_run import DomainConfig, build_domain

SCENARIO = {"logistics": "logistics", "energy": "small"}
"""The scenario each domain runs here (energy: the 100-member community, to keep it short)."""


def run_one(domain: str, seed: int, guidance: bool, rail: str) -> dict[str, Any]:
    config = DomainConfig(
        domain=domain,
        scenario=SCENARIO.get(domain),
        seed=seed,
        guidance=guidance,
        rail=rail,  # type: ignore[arg-type]
    )
    start = time.perf_counter()
    run = build_domain(config)
    summary = anyio.run(run.run, backend="asyncio")
    run.close()
    wall = time.perf_counter() - start
    data = summary.to_dict()
    return {
        "domain": domain,
        "scenario": config.scenario,
        "seed": seed,
        "guidance": guidance,
        "agents": data["agents"],
        "slots": data["slots"],
        "negotiations": data["negotiations"],
        "efficiency": data["efficiency"],
        "agreement_rate": data["agreement_rate"],
        "messages_per_negotiation": data["messages_per_negotiation"],
        "p50_ms": data["latency_ms"]["p50"],
        "p95_ms": data["latency_ms"]["p95"],
        "negotiations_per_s": data["negotiations_per_s"],
        "failed_settlements": data["failed_settlements"],
        "traded_units": data["traded_units"],
        "unit": data["unit"],
        "wall_s": round(wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", nargs="+", default=["logistics", "energy"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--rail", default="lightning", choices=["lightning", "inprocess"])
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    log.configure("error")
    runs = [
        run_one(domain, seed, guidance, args.rail)
        for domain in args.domains
        for guidance in (True, False)
        for seed in args.seeds
    ]
    means = {
        f"{domain}{'' if guidance else ' (no guidance)'}": round(
            statistics.fmean(
                r["efficiency"] for r in runs if r["domain"] == domain and r["guidance"] is guidance
            ),
            4,
        )
        for domain in args.domains
        for guidance in (True, False)
    }
    out = {"rail": args.rail, "seeds": args.seeds, "mean_efficiency": means, "runs": runs}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for r in runs:
        print(
            f"{r['domain']:>9} seed {r['seed']} guidance {r['guidance']!s:>5}: efficiency"
            f" {r['efficiency']:.4f}, agreed {r['agreement_rate']:.1%},"
            f" {r['messages_per_negotiation']} messages each, p95 {r['p95_ms']} ms,"
            f" {r['negotiations']} negotiations, {r['negotiations_per_s']:.0f}/s, {r['wall_s']} s"
        )
    for name, value in means.items():
        print(f"mean efficiency, {name}: {value}")


if __name__ == "__main__":
    main()
