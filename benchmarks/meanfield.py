"""The mean-field service's speed: statistics over a large population, and the LQ-MFTG solver.

- ``update_ms``: one slot's PopulationReport of ``--agents`` agents (2 types) taken in and the
  snapshot rebuilt (statistics, drift, prices, guidance), median of ``--repeat`` runs. Its parts,
  timed on their own: ``stats_ms`` (per-type moments, histograms, buyers and sellers, extremes,
  drift, quantiles, trimmed means) and ``guidance_ms`` (the board's demand, supply
  and reservations, and the per-type LQ guidance solve). Around it, not in it:
  ``pack_ms`` (the reporting side packs its Python lists into the report's columns) and
  ``decode_ms`` (msgpack bytes off the wire, validated, into a report).
- ``hist_quantiles_us`` against ``np_quantile_ms``: five quantiles per type read off the
  histograms' CDFs, against ``np.quantile`` over each type's agents (which must also select them).
- ``query_us``: a snapshot query answered from the cache (no recomputation).
- ``lq_solve_ms``: the typed LQ mean-field-type game with ``--types`` types and ``--steps`` steps
  solved to a 1e-12 fixed point, median of ``--repeat`` runs.

    python benchmarks/meanfield.py --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from market import MeanFieldService
from market.lq import LQType, solve
from negotiator.messages import PopulationReport, SnapshotQuery, TradeReport, decode, encode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--types", type=int, default=10)
    parser.add_argument("--steps", type=int, default=96)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    service = MeanFieldService()
    updates, packs, decodes, stats, guides = [], [], [], [], []
    hist_quantiles: list[float] = []
    np_quantiles: list[float] = []
    for slot in range(args.repeat):
        columns = (
            rng.integers(0, 2, args.agents).tolist(),
            rng.integers(-3000, 3000, args.agents).tolist(),
            rng.integers(80_000, 280_000, args.agents).tolist(),
        )
        start = time.perf_counter()
        report = PopulationReport.of(slot, ["consumer", "prosumer"], *columns)
        packs.append(time.perf_counter() - start)
        wire = encode(report)
        start = time.perf_counter()
        received = decode(wire)
        assert isinstance(received, PopulationReport)
        decodes.append(time.perf_counter() - start)
        trades = TradeReport(slot, rng.integers(100_000, 250_000, 500).tolist(), [1000] * 500)
        start = time.perf_counter()
        service.handle(received)
        service.handle(trades)
        service.snapshot()
        updates.append(time.perf_counter() - start)
        codes, net, reservation = report.arrays()
        start = time.perf_counter()
        types = service._type_stats(report.type_names, codes, net, reservation)
        stats.append(time.perf_counter() - start)
        start = time.perf_counter()
        service._guidance(types, service._board(net, reservation))
        guides.append(time.perf_counter() - start)
        hist = np.stack([np.asarray(t.histogram) for t in types.values()])
        levels = np.array([0.1, 0.25, 0.5, 0.75, 0.9])
        start = time.perf_counter()
        service._hist_quantiles(hist, levels)
        hist_quantiles.append(time.perf_counter() - start)
        start = time.perf_counter()
        for code in range(len(types)):
            np.quantile(net[codes == code], levels)
        np_quantiles.append(time.perf_counter() - start)
    before = service.recomputations
    start = time.perf_counter()
    for _ in range(10_000):
        service.handle(SnapshotQuery(0))
    query = (time.perf_counter() - start) / 10_000
    assert service.recomputations == before  # answered from the cache
    types = [
        LQType(
            float(rng.uniform(0.5, 1.5)),
            a=float(rng.uniform(-0.5, 0.5)),
            b=float(rng.uniform(0.5, 1.5)),
            kappa=float(rng.uniform(-0.5, 0.5)),
            sigma=0.3,
            q=float(rng.uniform(0.5, 2)),
            r=float(rng.uniform(0.5, 2)),
            s=float(rng.uniform(-0.5, 0.5)),
            q_T=float(rng.uniform(0, 1)),
            x0=float(rng.uniform(-1, 2)),
        )
        for _ in range(args.types)
    ]
    solves = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        solve(types, steps=args.steps)
        solves.append(time.perf_counter() - start)
    result = {
        "agents": args.agents,
        "update_ms": round(statistics.median(updates) * 1000, 3),
        "pack_ms": round(statistics.median(packs) * 1000, 3),
        "decode_ms": round(statistics.median(decodes) * 1000, 3),
        "stats_ms": round(statistics.median(stats) * 1000, 3),
        "guidance_ms": round(statistics.median(guides) * 1000, 3),
        "hist_quantiles_us": round(statistics.median(hist_quantiles) * 1e6, 1),
        "np_quantile_ms": round(statistics.median(np_quantiles) * 1000, 3),
        "query_us": round(query * 1e6, 3),
        "types": args.types,
        "steps": args.steps,
        "lq_solve_ms": round(statistics.median(solves) * 1000, 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:<18}{value}")


if __name__ == "__main__":
    main()
