"""Payments per second through the simulated Lightning network, routing included.

A scale-free graph of ``--nodes`` nodes (Barabasi-Albert, 2 channels per new node, capacities
log-uniform 1M-10M sat, fees and latencies drawn per direction), then ``--payments`` payments
between random node pairs with amounts log-uniform from 10 sat to 10k sat (the size of energy
trades). Every payment finds its route (cached shortest-path tree per source and amount class,
a search that learns from failures, Yen's k shortest, splitting into parts), locks HTLCs hop by
hop and fulfils them. The clock covers all of it, the first routes from every source included.

``rail_payments_per_s`` measures the same through the rail the runtime uses: a BOLT11 invoice
signed by the payee's node, then the payment (fewer payments: signing dominates). One process,
one core. Prints figures, asserts nothing.

    python benchmarks/payments_throughput.py --nodes 1000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import resource
import sys
import time

import numpy as np

from negotiator.errors import PaymentFailed
from payments import LightningNetwork, Placement, SimulatedLightning, scale_free_graph


def _amounts(rng: np.random.Generator, n: int) -> list[int]:
    lo, hi = np.log(10_000), np.log(10_000_000)
    return np.exp(rng.uniform(lo, hi, n)).astype(np.int64).tolist()  # type: ignore[no-any-return]


def _pairs(rng: np.random.Generator, nodes: int, n: int) -> list[tuple[int, int]]:
    src = rng.integers(0, nodes, n)
    dst = (src + rng.integers(1, nodes, n)) % nodes  # never to itself
    return list(zip(src.tolist(), dst.tolist(), strict=True))


def run_network(nodes: int, payments: int, seed: int) -> dict[str, float | int]:
    """Route, lock and settle ``payments`` on a fresh graph; timings per payment."""
    network = LightningNetwork(scale_free_graph(nodes, seed=seed))
    rng = np.random.default_rng(seed + 1)
    pairs = _pairs(rng, nodes, payments)
    amounts = _amounts(rng, payments)
    preimages = [hashlib.sha256(b"bench/%d" % i).digest() for i in range(payments)]
    hashes = [hashlib.sha256(p).hexdigest() for p in preimages]
    total = network.total_msat()
    route_s = np.empty(payments)
    ok = parts = hops = 0
    clock = time.perf_counter
    start = clock()
    for i, ((src, dst), amount) in enumerate(zip(pairs, amounts, strict=True)):
        t0 = clock()
        try:
            payment = network.send(src, dst, amount, hashes[i])
        except PaymentFailed:
            route_s[i] = clock() - t0
            continue
        route_s[i] = clock() - t0
        network.settle(payment, preimages[i].hex())
        ok += 1
        parts += len(payment.parts)
        hops += payment.hops
    elapsed = clock() - start
    assert network.total_msat() == total  # conservation, checked once outside the clock
    return {
        "payments_per_s": round(payments / elapsed, 1),
        "success_rate": round(ok / payments, 4),
        "p50_route_ms": round(float(np.percentile(route_s, 50)) * 1000, 4),
        "p95_route_ms": round(float(np.percentile(route_s, 95)) * 1000, 4),
        "p99_route_ms": round(float(np.percentile(route_s, 99)) * 1000, 4),
        "parts_mean": round(parts / max(ok, 1), 4),
        "hops_mean": round(hops / max(ok, 1), 4),
        "trees_built": network.finder.tree_builds,
        "searches": network.finder.searches,
        "channels": network.graph.channel_count,
    }


def run_rail(nodes: int, payments: int, seed: int) -> float:
    """Invoice (signed BOLT11) and payment through SimulatedLightning, per second."""
    network = LightningNetwork(scale_free_graph(nodes, seed=seed))
    placement = Placement({i: i for i in range(nodes)}, [])
    rail = SimulatedLightning(network, placement, seed=seed, onchain_fallback=False)
    rng = np.random.default_rng(seed + 2)
    pairs = _pairs(rng, nodes, payments)
    amounts = _amounts(rng, payments)

    async def go() -> float:
        start = time.perf_counter()
        for i, ((src, dst), amount) in enumerate(zip(pairs, amounts, strict=True)):
            invoice = await rail.create_invoice(dst, amount, f"bench-{i}", "energy")
            with contextlib.suppress(PaymentFailed):
                await rail.pay(src, invoice)
        return payments / (time.perf_counter() - start)

    return asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--payments", type=int, default=50_000)
    parser.add_argument("--rail-payments", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args()
    result: dict[str, object] = {"nodes": args.nodes, "payments": args.payments}
    result.update(run_network(args.nodes, args.payments, args.seed))
    result["rail_payments_per_s"] = round(run_rail(args.nodes, args.rail_payments, args.seed), 1)
    result["rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if args.json:
        print(json.dumps(result))
    else:
        width = max(map(len, result))
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
