"""The Core Lightning adapter against raw pyln-client, on real regtest nodes.

Needs lightningd and bitcoind: started here from PATH (a line alice = bob = carol, two balanced
channels per link), or an already bootstrapped network given with ``--cln-dir`` (for example the
docker-compose one). Without either it prints why and exits.

- ``overhead_ratio``: mean xpay latency through ``ClnRail.pay`` (worker thread, limiter, checks,
  bookkeeping) over the mean of the same xpay made with raw pyln-client calls, minus one; both
  alice -> carol over two hops, one at a time, interleaved so both see the same node load.
- ``per_trade_payments_per_s``: payments through the adapter, one per agreement, with the
  adapter's concurrency (8 calls in flight).
- ``netted_agreements_per_s``: agreements through the adapter in netted mode (one payment per
  node pair per window).

    python benchmarks/cln_overhead.py --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import anyio

from payments.cln import ClnNode, ClnRail
from payments.regtest import LocalRegtest, binaries


def _rail(nodes: list[ClnNode], **kw: object) -> ClnRail:
    placement = {agent: agent % len(nodes) for agent in range(300)}
    return ClnRail(nodes, placement, accounts=dict.fromkeys(placement, 10**15), **kw)  # type: ignore[arg-type]


async def _overhead(nodes: list[ClnNode], rounds: int) -> dict[str, float]:
    from pyln.client import LightningRpc

    by_name = {n.name: n for n in nodes}
    alice, carol = LightningRpc(by_name["alice"].socket), LightningRpc(by_name["carol"].socket)
    rail = _rail(nodes)
    payer = next(a for a, n in rail.placement.items() if nodes[n].name == "alice")
    payee = next(a for a, n in rail.placement.items() if nodes[n].name == "carol")
    raw, adapter = [], []
    for i in range(rounds):
        invoice = carol.invoice(10_000, f"raw-{time.time_ns()}-{i}", "bench")
        start = time.perf_counter()
        alice.xpay(invstring=invoice["bolt11"])
        raw.append(time.perf_counter() - start)
        ours = await rail.create_invoice(payee, 10_000, f"adapter-{i}", "bench")
        start = time.perf_counter()
        await rail.pay(payer, ours)
        adapter.append(time.perf_counter() - start)
    return {
        "raw_xpay_ms": round(statistics.mean(raw) * 1000, 2),
        "adapter_xpay_ms": round(statistics.mean(adapter) * 1000, 2),
        "overhead_ratio": round(statistics.mean(adapter) / statistics.mean(raw) - 1, 4),
    }


async def _throughput(nodes: list[ClnNode], count: int, mode: str) -> float:
    rail = _rail(nodes, mode=mode, concurrency=8)
    agents = sorted(rail.placement)
    pairs = [(agents[i % len(agents)], agents[(i * 7 + 1) % len(agents)]) for i in range(count)]
    pairs = [(a, b) for a, b in pairs if rail.placement[a] != rail.placement[b]]
    invoices = [
        await rail.create_invoice(b, 1_000 + i, f"{mode}-{i}", "bench")
        for i, (_, b) in enumerate(pairs)
    ]
    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for (a, _), invoice in zip(pairs, invoices, strict=True):
            tg.start_soon(rail.pay, a, invoice)
    return len(pairs) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cln-dir", type=Path, help="an already bootstrapped network")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--payments", type=int, default=200)
    parser.add_argument("--agreements", type=int, default=5000)
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args()
    with ExitStack() as stack:
        if args.cln_dir is not None:
            sockets = sorted(args.cln_dir.glob("*/regtest/lightning-rpc"))
            nodes = [ClnNode(s.parent.parent.name, str(s)) for s in sockets]
        elif binaries() is not None:
            network = stack.enter_context(LocalRegtest(("alice", "bob", "carol")))
            network.regtest().bootstrap("line", capacity_sat=5_000_000, channels=2)
            nodes = [ClnNode(name, network.socket(name)) for name in network.names]
        else:
            print(json.dumps({"skipped": "no lightningd/bitcoind on PATH and no --cln-dir"}))
            return
        if {n.name for n in nodes} < {"alice", "carol"}:
            sys.exit("the network needs nodes named alice and carol")
        result: dict[str, object] = {"nodes": len(nodes)}
        result.update(anyio.run(_overhead, nodes, args.rounds))
        result["per_trade_payments_per_s"] = round(
            anyio.run(_throughput, nodes, args.payments, "per_trade"), 1
        )
        result["netted_agreements_per_s"] = round(
            anyio.run(_throughput, nodes, args.agreements, "netted"), 1
        )
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:<28}{value}")


if __name__ == "__main__":
    main()
