"""Negotiation throughput of the runtime against a bare asyncio loop, measured in one run.

One trading slot: ``--agents`` traders (half buyers, half sellers, each with far more to trade
than one negotiation needs) and ``--negotiations`` random buyer/seller pairings, at most
``--in-flight`` open at once. By default the market is warm: the mean-field service is on the bus
and traders anchor on its guidance price (the tariff's midpoint on this balanced board), as in a
running community; ``--cold``
runs without guidance (longer negotiations: both sides open at the other's outside option).
Every negotiation goes through the whole runtime: protocol checks on both sides, strategies
(Boulware / linear / Conceder drawn per agent), the router, the deadline watchdog, and settlement
(ledger journal in SQLite, invoice and payment on the in-process rail).

The bare baseline is what the runtime is measured against: the same number of coroutines, each
with an ``asyncio.Queue`` inbox, exchanging msgspec messages between random pairs, the same mean
number of messages per negotiation as went through the runtime's inboxes (every one: the moves,
the settlement messages and the runtime's Start, which the bare loop's first message stands for;
``inbox_messages_per_negotiation``), with the same limit in flight, and nothing else. ``ratio`` =
runtime / bare (task engine). ``*_negotiations_per_s`` count the
negotiation window (slot open to the last negotiation closed), which is what the kernel sustains
while settlement runs beside it; ``*_end_to_end_per_s`` divide the settled agreements by the whole
run's wall time, settlement of the last agreement included. ``p*_ms`` are propose-to-accept
latencies; ``*start_wait_p95_ms`` the wait from the runtime opening a negotiation to its first
offer (neither engine begins every negotiation in flight at once: the task engine at most
``--max-under-way``, the shard engine the next one when those under way are done, so the wait
is there). ``--max-under-way 0`` runs the task engine in arrival order, every Start at once.
The three runs go in turn ``--rounds`` times (3) and each figure is the median over the rounds
(``ratio``: the median of each round's own ratio; the rounds' figures are in ``*_per_round``):
on this shared machine one bare run that met a slow patch once moved a single round's ratio
from 0.30 to 0.45. Prints figures, asserts nothing.

    python benchmarks/negotiation_throughput.py --agents 10000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import anyio
import numpy as np

from agents import Trader, strategy
from market import MeanFieldService
from negotiator.actor import Pairing
from negotiator.bus import LocalBus
from negotiator.engines import MAX_UNDER_WAY, fewer_collections
from negotiator.ledger import Ledger
from negotiator.messages import Counter, Side, Terms, TradeReport
from negotiator.runtime import RunReport, Runtime, RuntimeConfig
from payments import InProcessRail

TARIFF = (280_000, 80_000)
QUANTITY = 1000


def _population(
    agents: int,
    seed: int,
    names: list[str],
    max_rounds: int,
    tick: int,
    tariff: tuple[int, int],
) -> list[Trader]:
    rng = np.random.default_rng(seed)
    big = 10**12
    # Immutable, so shared by every trader that uses them, as in a real population: one copy
    # per agent cost ~0.6 KB each, which is the benchmark's memory, not the runtime's.
    strategies = [dataclasses.replace(strategy(name), tick=tick) for name in names]
    nets = ((lambda slot: big), (lambda slot: -big))
    prices = lambda slot: tariff  # noqa: E731
    return [
        Trader(
            i,
            "buyer" if i % 2 == 0 else "seller",
            nets[i % 2],
            prices,
            strategies[int(rng.integers(len(names)))],
            max_rounds=max_rounds,
        )
        for i in range(agents)
    ]


def _matcher(negotiations: int, seed: int) -> Any:
    def match(slot: int, positions: Any, view: object, rng: np.random.Generator) -> list[Pairing]:
        buyers = np.array([p.agent for p in positions if p.side is Side.BUY])
        sellers = np.array([p.agent for p in positions if p.side is Side.SELL])
        local = np.random.default_rng(seed)
        b = local.choice(buyers, negotiations)
        s = local.choice(sellers, negotiations)
        return [Pairing(int(x), int(y), Side.BUY, QUANTITY) for x, y in zip(b, s, strict=True)]

    return match


def run_runtime(
    engine: str,
    agents: int,
    negotiations: int,
    in_flight: int,
    seed: int,
    *,
    strategy_names: list[str] | None = None,
    max_rounds: int = 10,
    tick: int = 1,
    tariff: tuple[int, int] = TARIFF,
    warm: bool = False,
    max_under_way: int = MAX_UNDER_WAY,
) -> RunReport:
    """One slot of ``negotiations`` through the full runtime on ``engine``.

    ``warm``: the mean-field service is on the bus (and has seen earlier trades at the tariff's
    midpoint); its guidance price for this balanced board is that midpoint, so traders open near
    it (the steady state of a running community); otherwise no guidance, and they open at the
    other side's outside option.
    """
    names = strategy_names or ["boulware", "linear", "conceder"]
    bus = LocalBus()
    service_address = None
    if warm:
        service = MeanFieldService()
        service.handle(TradeReport(-1, [sum(tariff) // 2], [QUANTITY]))
        bus.serve("meanfield", service.handle)
        service_address = "meanfield"
    population = _population(agents, seed, names, max_rounds, tick, tariff)
    rail = InProcessRail({i: 10**15 for i in range(agents)}, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp) / "ledger.sqlite")
        runtime = Runtime(
            population,
            rail=rail,
            ledger=ledger,
            matcher=_matcher(negotiations, seed),
            rng=np.random.default_rng(seed),
            config=RuntimeConfig(
                engine=engine,
                max_in_flight=in_flight,
                max_under_way=max_under_way,
                slot_timeout_s=600,
            ),
            bus=bus,
            population=service_address,
        )
        report = anyio.run(runtime.run, 1, backend_options={"use_uvloop": _uvloop()})
        ledger.close()
    gc.unfreeze()
    return report


def _hops(mean: float, negotiations: int, seed: int) -> list[int]:
    """Messages per negotiation for the bare loop: whole numbers whose mean is ``mean``."""
    base = max(1, int(mean))
    extra = round((max(mean, 1.0) - base) * negotiations)
    hops = [base + 1] * extra + [base] * (negotiations - extra)
    np.random.default_rng(seed).shuffle(hops)
    return hops


async def _bare(
    agents: int, negotiations: int, in_flight: int, mean_hops: float, seed: int
) -> float:
    """Bare asyncio.Queue + msgspec: ``mean_hops`` messages per negotiation on average between
    random pairs (the first one sent by the starter, as the runtime sends Start)."""
    hops = _hops(mean_hops, negotiations, seed)
    inboxes = [asyncio.Queue[Any](1024) for _ in range(agents)]
    limit = asyncio.Semaphore(in_flight)
    done = asyncio.Event()
    finished = 0
    terms = Terms("energy", QUANTITY, 200_000, 0, 1)

    async def agent(me: int) -> None:
        nonlocal finished
        inbox = inboxes[me]
        while True:
            m = await inbox.get()
            if m.round < hops[m.nid]:
                reply = Counter(m.nid, me, m.sender, m.round + 1, m.seq + 1, terms)
                inboxes[m.sender].put_nowait(reply)
            else:
                finished += 1
                limit.release()
                if finished == negotiations:
                    done.set()

    rng = np.random.default_rng(seed)
    pairs = rng.integers(0, agents, (negotiations, 2))
    tasks = [asyncio.create_task(agent(i)) for i in range(agents)]
    gc.collect()
    gc.freeze()  # as the runtime does once its population is built
    with fewer_collections():  # as the engines do while they run
        start = time.perf_counter()
        for nid, (a, b) in enumerate(pairs.tolist()):
            await limit.acquire()
            other = (b + 1) % agents if a == b else b
            inboxes[other].put_nowait(Counter(nid, a, other, 1, 1, terms))
        await done.wait()
        elapsed = time.perf_counter() - start
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    gc.unfreeze()
    return negotiations / elapsed


def run_bare(agents: int, negotiations: int, in_flight: int, hops: float, seed: int) -> float:
    """Negotiations per second of the bare loop."""
    if _uvloop():
        import uvloop

        return uvloop.run(_bare(agents, negotiations, in_flight, hops, seed))
    return asyncio.run(_bare(agents, negotiations, in_flight, hops, seed))


def inbox_messages(report: RunReport) -> float:
    """Messages that went through agents' inboxes per negotiation, the runtime's Start and
    Timeout included (``messages_per_negotiation`` counts the moves and settlement only)."""
    return sum(report.message_counts.values()) / max(report.negotiations, 1)


def _uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def one_round(args: argparse.Namespace) -> dict[str, Any]:
    """Task engine, then the bare loop at the task run's message count, then the shard engine."""
    warm = not args.cold
    common = (args.agents, args.negotiations, args.in_flight, args.seed)
    task = run_runtime("task", *common, warm=warm, max_under_way=args.max_under_way)
    hops = inbox_messages(task)
    bare = run_bare(args.agents, args.negotiations, args.in_flight, hops, args.seed)
    shard = run_runtime("shard", *common, warm=warm)
    return {
        "messages_per_negotiation": task.messages_per_negotiation,
        "inbox_messages_per_negotiation": round(hops, 4),
        "agreement_rate": task.agreement_rate,
        "runtime_negotiations_per_s": task.negotiations_per_s,
        "runtime_end_to_end_per_s": round(task.settled / task.wall_s, 1),
        "bare_negotiations_per_s": round(bare, 1),
        "ratio": round(task.negotiations_per_s / bare, 3),
        "shard_negotiations_per_s": shard.negotiations_per_s,
        "shard_end_to_end_per_s": round(shard.settled / shard.wall_s, 1),
        "offers_per_s": task.offers_per_s,
        "shard_offers_per_s": shard.offers_per_s,
        "p50_ms": task.latency_ms["p50"],
        "p95_ms": task.latency_ms["p95"],
        "p99_ms": task.latency_ms["p99"],
        "shard_p50_ms": shard.latency_ms["p50"],
        "shard_p95_ms": shard.latency_ms["p95"],
        "shard_p99_ms": shard.latency_ms["p99"],
        "start_wait_p95_ms": task.start_wait_ms["p95"],
        "shard_start_wait_p95_ms": shard.start_wait_ms["p95"],
        "settle_p50_ms": task.settle_latency_ms["p50"],
        "shard_settle_p50_ms": shard.settle_latency_ms["p50"],
        "settled": task.settled,
        "shard_settled": shard.settled,
    }


PER_ROUND: Final = (
    "runtime_negotiations_per_s",
    "bare_negotiations_per_s",
    "ratio",
    "shard_negotiations_per_s",
)
"""Figures whose every round is printed beside their median (``*_per_round``)."""


def combine(rounds: list[dict[str, Any]], per_round: Sequence[str] = PER_ROUND) -> dict[str, Any]:
    """Each figure's median over the rounds (a count: the lower median, a whole number); a
    quotient (``ratio``, ``speedup``) is the median of the rounds' own quotients, each of two
    runs of one round, not a quotient of medians."""
    result: dict[str, Any] = {}
    for key in rounds[0]:
        values = [r[key] for r in rounds]
        if all(isinstance(v, int) for v in values):  # counts stay whole
            result[key] = statistics.median_low(values)
        else:
            result[key] = round(statistics.median(values), 4)
    for key in per_round:
        result[f"{key}_per_round"] = [r[key] for r in rounds]
    return result


def in_rounds(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    one_round: Callable[[argparse.Namespace], dict[str, Any]],
    per_round: Sequence[str] = PER_ROUND,
) -> dict[str, Any]:
    """``one_round`` ``args.rounds`` times, each round's ``per_round`` figures on stderr as it
    ends (the JSON on stdout stays one object), then :func:`combine`."""
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    rounds = []
    for i in range(args.rounds):
        rounds.append(one_round(args))
        figures = ", ".join(f"{key} {rounds[-1][key]:,}" for key in per_round)
        print(f"round {i + 1}/{args.rounds}: {figures}", file=sys.stderr, flush=True)
    return combine(rounds, per_round)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--negotiations", type=int, default=50_000)
    parser.add_argument("--in-flight", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--cold",
        action="store_true",
        help="no mean-field guidance: traders open at the other side's outside option",
    )
    parser.add_argument(
        "--max-under-way",
        type=int,
        default=MAX_UNDER_WAY,
        help="task engine: negotiations begun at once (0: every one in flight, arrival order)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="task, bare and shard runs, in turn, this many times; figures are medians",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args()
    measured = in_rounds(parser, args, one_round)
    result = {
        "market": "cold" if args.cold else "warm",
        "agents": args.agents,
        "negotiations": args.negotiations,
        "in_flight": args.in_flight,
        "max_under_way": args.max_under_way,
        "uvloop": _uvloop(),
        "rounds": args.rounds,
        **measured,
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        width = max(map(len, result))
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
