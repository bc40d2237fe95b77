"""Scale-out: one process against two worker processes over NATS, measured in the same run.

The same community (``--agents`` members, ``--slots`` hourly slots, one seed, shard engine,
simulated Lightning) runs twice:

- ``one_process``: ``negotiator simulate`` in this process, one market;
- ``two_workers``: ``negotiator simulate --workers 2 --nats URL`` against a nats-server started
  here (the Debian package) on a free port on 127.0.0.1: two worker processes, one
  neighbourhood each, matching within it (shard-local negotiations), the coordinator's
  mean-field service and slot barrier on NATS.

``*_per_s`` are negotiations per second of the run: from the first slot to the settlement of the
last agreement (for two workers, every shard's negotiations over the slowest shard's run; they
run side by side and meet at every slot's barrier). ``ratio`` = two / one. Two other measures:

- ``*_window_per_s`` count the slots' negotiation windows only (settlement running beside). A
  saturated single process leaves part of its settlement until after the last slot, outside
  the window, while each worker, with half the agreements, keeps up inside it; this measure
  therefore flatters the single process.
- ``*_end_to_end_per_s`` divide by the whole wall time: building the community and, for the
  workers, starting their processes and joining.

``*_savings`` show what splitting the market into neighbourhoods costs the community. Prints
figures (JSON with --json), asserts nothing.

    python benchmarks/scale_out.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).parent.parent))

from negotiator import log
from negotiator.runtime import RuntimeConfig
from negotiator.sharded import coordinate
from negotiator.simulation import SimulationConfig, build
from tests.natsserver import NatsServer


def one_process(config: SimulationConfig) -> dict[str, Any]:
    """The whole community in this process."""
    started = time.perf_counter()
    sim = build(config)
    try:
        summary = anyio.run(sim.run)
    finally:
        sim.close()
    wall = time.perf_counter() - started
    run = summary.run
    return {
        "negotiations": run.negotiations,
        "per_s": round(run.negotiations / run.wall_s, 1),
        "window_per_s": run.negotiations_per_s,
        "end_to_end_per_s": round(run.negotiations / wall, 1),
        "wall_s": round(wall, 2),
        "savings": summary.savings,
        "p95_ms": run.latency_ms["p95"],
    }


def two_workers(config: SimulationConfig, url: str) -> dict[str, Any]:
    """Two worker processes over NATS, one neighbourhood each."""
    started = time.perf_counter()
    summary = anyio.run(lambda: coordinate(config, 2, url))
    wall = time.perf_counter() - started
    return {
        "negotiations": summary["negotiations"],
        "per_s": round(summary["negotiations"] / summary["run_s"], 1),
        "window_per_s": summary["negotiations_per_s"],
        "end_to_end_per_s": round(summary["negotiations"] / wall, 1),
        "wall_s": round(wall, 2),
        "savings": summary["savings"],
        "p95_ms": summary["latency_ms"]["p95"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=20_000)
    parser.add_argument("--slots", type=int, default=24)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rail", default="lightning", choices=("lightning", "inprocess"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    log.configure(level="error")
    config = SimulationConfig(
        agents=args.agents,
        slots=args.slots,
        seed=args.seed,
        rail=args.rail,
        runtime=RuntimeConfig(engine="shard"),
    )
    binary = shutil.which("nats-server")
    if binary is None:
        sys.exit("nats-server is not on PATH (Debian: apt-get install nats-server)")
    server = NatsServer(binary).start()
    try:
        one = one_process(config)
        two = two_workers(config, server.url)
    finally:
        server.stop()
    out = {
        "agents": args.agents,
        "slots": args.slots,
        "rail": args.rail,
        "cpus": os.cpu_count(),
        "one_process_per_s": one["per_s"],
        "two_workers_per_s": two["per_s"],
        "ratio": round(two["per_s"] / one["per_s"], 3) if one["per_s"] else None,
        "one_process_window_per_s": one["window_per_s"],
        "two_workers_window_per_s": two["window_per_s"],
        "window_ratio": round(two["window_per_s"] / one["window_per_s"], 3)
        if one["window_per_s"]
        else None,
        "one_process_end_to_end_per_s": one["end_to_end_per_s"],
        "two_workers_end_to_end_per_s": two["end_to_end_per_s"],
        "end_to_end_ratio": round(two["end_to_end_per_s"] / one["end_to_end_per_s"], 3)
        if one["end_to_end_per_s"]
        else None,
        "negotiations": {"one_process": one["negotiations"], "two_workers": two["negotiations"]},
        "wall_s": {"one_process": one["wall_s"], "two_workers": two["wall_s"]},
        "p95_ms": {"one_process": one["p95_ms"], "two_workers": two["p95_ms"]},
        "savings": {"one_process": one["savings"], "two_workers": two["savings"]},
    }
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key:>30}: {value}")


if __name__ == "__main__":
    main()
