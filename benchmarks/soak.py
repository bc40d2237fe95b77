"""Soak: the default scenario day after day in one process, watching its memory.

``make run``'s community (1,000 members, 24 hourly slots, simulated Lightning) is assembled and
run for one day, closed, and the next day follows with the next seed, as a long-running
process that simulates day after day would, for ``--minutes``. The resident set size is sampled
after every day. What it reports:

- ``rss_at_warm_mb``: the resident set after the warm-up (``--warmup-minutes``, 10 by default):
  the level the process settles to once its caches, allocator arenas and imports are in place;
- ``rss_end_mb`` and ``rss_max_after_warm_mb``: at the end, and the highest after the warm-up;
- ``growth_after_warm``: (end - warm) / warm; the goal is at most 0.05;
- ``level_growth``: the same between medians (the five minutes after the warm-up, the last
  five), which a single day's sample does not sway; ``slope_mb_per_hour``: the least-squares
  trend after the warm-up; ``samples_over_5pct``: after-warm-up samples above warm + 5%;
- ``days``, ``negotiations``, ``settled``: the work done, and ``failed_settlements``.

Prints figures (JSON with --json) and a per-day line with --verbose; asserts nothing.

    python benchmarks/soak.py --minutes 60 --json
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).parent.parent))

from negotiator import log
from negotiator.simulation import SimulationConfig, build


def rss_mb() -> float:
    """The resident set size now (not the peak), from /proc."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * 4096 / 2**20


def day(seed: int, agents: int, directory: Path) -> dict[str, Any]:
    """One default-scenario day with its own ledger in ``directory``; its counts."""
    config = SimulationConfig(
        agents=agents, slots=24, seed=seed, ledger=str(directory / f"day-{seed}.sqlite")
    )
    sim = build(config)
    try:
        summary = anyio.run(sim.run)
    finally:
        sim.close()
    (directory / f"day-{seed}.sqlite").unlink()  # the disk is not what is measured
    run = summary.run
    return {
        "negotiations": run.negotiations,
        "settled": run.settled,
        "failed_settlements": run.failed_settlements,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--warmup-minutes", type=float, default=10.0)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    log.configure(level="error")
    directory = Path(tempfile.mkdtemp(prefix="negotiator-soak-"))
    started = time.perf_counter()
    samples: list[tuple[float, float]] = []
    totals = {"days": 0, "negotiations": 0, "settled": 0, "failed_settlements": 0}
    warm: float | None = None
    try:
        while (elapsed := time.perf_counter() - started) < args.minutes * 60:
            counts = day(args.seed + totals["days"], args.agents, directory)
            gc.collect()
            totals["days"] += 1
            for key, value in counts.items():
                totals[key] += value
            minute = (time.perf_counter() - started) / 60
            rss = rss_mb()
            samples.append((minute, rss))
            if warm is None and minute >= args.warmup_minutes:
                warm = rss
            if args.verbose:
                print(f"{minute:7.2f} min  day {totals['days']:5d}  rss {rss:8.1f} MB", flush=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    after = [(m, r) for m, r in samples if m >= args.warmup_minutes]
    end = samples[-1][1] if samples else 0.0
    first = [r for m, r in after if m < args.warmup_minutes + 5]
    last = [r for m, r in after if m >= after[-1][0] - 5] if after else []
    slope = None
    if len(after) > 1:
        mean_m = statistics.fmean(m for m, _ in after)
        mean_r = statistics.fmean(r for _, r in after)
        spread = sum((m - mean_m) ** 2 for m, _ in after)
        slope = sum((m - mean_m) * (r - mean_r) for m, r in after) / spread * 60 if spread else 0
    out: dict[str, Any] = {
        "minutes": round(elapsed / 60, 2),
        "agents": args.agents,
        **totals,
        "rss_first_day_mb": round(samples[0][1], 1) if samples else None,
        "rss_at_warm_mb": round(warm, 1) if warm is not None else None,
        "rss_max_after_warm_mb": round(max(r for _, r in after), 1) if after else None,
        "rss_end_mb": round(end, 1),
        "growth_after_warm": round((end - warm) / warm, 4) if warm else None,
        "rss_level_warm_mb": round(statistics.median(first), 1) if first else None,
        "rss_level_end_mb": round(statistics.median(last), 1) if last else None,
        "level_growth": round(statistics.median(last) / statistics.median(first) - 1, 4)
        if first and last
        else None,
        "slope_mb_per_hour": round(slope, 2) if slope is not None else None,
        "samples_over_5pct": sum(r > warm * 1.05 for _, r in after) if warm else None,
        "samples_after_warm": len(after),
        "rss_per_minute_mb": [[round(m, 2), round(r, 1)] for m, r in samples],
    }
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            if key != "rss_per_minute_mb":
                print(f"{key:>24}: {value}")


if __name__ == "__main__":
    main()
