"""The runtime end to end: determinism, bad input, failing agents, deadlines, metrics, shutdown."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import structlog
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agents import Trader
from market import MeanFieldService
from negotiator.actor import Effect
from negotiator.bus import LocalBus
from negotiator.engines import YOUNG_THRESHOLD, fewer_collections
from negotiator.ledger import Ledger
from negotiator.messages import Counter, Propose, Start, TradeReport, encode
from negotiator.metrics import Exporter
from negotiator.runtime import Runtime, RuntimeConfig, SlotReport
from negotiator.simulation import Simulation, SimulationConfig, build
from payments import InProcessRail

pytestmark = pytest.mark.anyio

ENGINES = ["task", "shard"]


def config(tmp_path: Path, **runtime: Any) -> SimulationConfig:
    """200 agents from midnight to 14:00: night slots with no sellers, day slots with many."""
    settings = {"engine": "task", **runtime}
    return SimulationConfig(
        agents=200,
        slots=14,
        seed=3,
        ledger=str(tmp_path / f"ledger-{len(list(tmp_path.iterdir()))}.sqlite"),
        runtime=RuntimeConfig(**settings),
    )


@pytest.mark.parametrize("engine", ENGINES)
async def test_same_seed_same_ledger_digest(tmp_path: Path, engine: str) -> None:
    digests = []
    for seed in (3, 3, 4):
        sim = build(config(tmp_path, engine=engine).model_copy(update={"seed": seed}))
        summary = await sim.run()
        sim.close()
        assert summary.run.settled == summary.run.agreements > 100
        digests.append(summary.run.ledger_digest)
    assert digests[0] == digests[1] != digests[2]


@pytest.mark.parametrize("engine", ENGINES)
async def test_every_agreement_is_settled_and_paid_exactly(tmp_path: Path, engine: str) -> None:
    sim = build(config(tmp_path, engine=engine))
    total_before = sim.rail.total_msat
    summary = await sim.run()
    run = summary.run
    assert run.negotiations == sum(run.outcomes.values())
    assert run.settled == run.agreements and run.failed_settlements == 0
    assert sim.rail.total_msat == total_before  # money is conserved
    assert run.paid_msat == sum(t.revenue_msat for t in sim.traders) - sum(
        t.exported_wh * sim.tariff.export // 1000 for t in sim.traders
    )
    assert all(t.open_negotiations == 0 for t in sim.traders)
    assert summary.bought_wh == summary.traded_wh == run.traded_units > 0
    # Every message through an inbox is counted by kind: one Start per negotiation, one invoice
    # and two Paid per settled agreement, and the moves and settlement are ``messages``.
    counts = run.message_counts
    assert counts["start"] == run.negotiations
    assert counts["invoice"] == run.settled and counts["paid"] == 2 * run.settled
    assert counts["accept"] == run.agreements
    own = counts["start"] + counts.get("timeout", 0)
    assert sum(counts.values()) - own == run.messages
    sim.close()


@pytest.mark.parametrize("engine", ENGINES)
async def test_no_more_negotiations_are_open_at_once_than_the_limit(
    tmp_path: Path, engine: str
) -> None:
    sim = build(config(tmp_path, engine=engine, max_in_flight=5))
    router = sim.runtime.router
    open_flight = router.open
    seen: list[int] = []

    def tracked(flight: Any) -> None:
        open_flight(flight)
        seen.append(len(router.flights))

    router.open = tracked  # type: ignore[method-assign]
    summary = await sim.run()
    sim.close()
    assert len(seen) == summary.run.negotiations > 100
    assert max(seen) == 5  # the limit is reached, and never passed
    assert summary.run.settled == summary.run.agreements


async def test_the_shard_engine_begins_a_negotiation_only_when_none_is_under_way(
    tmp_path: Path,
) -> None:
    """Moves and settlement first, Starts when nothing else waits: each negotiation runs from
    first offer to close before the next begins, however many are open."""
    sim = build(config(tmp_path, engine="shard", shards=1, max_in_flight=50))
    router = sim.runtime.router
    begin = router.begin
    under_way: list[int] = []

    def tracked(agent: Any, start: Any) -> None:
        under_way.append(sum(f.terms is not None for f in router.flights.values()))
        begin(agent, start)

    router.begin = tracked  # type: ignore[method-assign]
    summary = await sim.run()
    sim.close()
    run = summary.run
    assert len(under_way) == run.message_counts["start"] == run.negotiations > 100
    assert max(under_way) == 0
    assert run.settled == run.agreements
    assert set(run.start_wait_ms) == {"p50", "p95", "p99"} and run.start_wait_ms["p99"] > 0


@pytest.mark.parametrize("limit", [4, 0])
async def test_the_task_engine_begins_at_most_max_under_way_negotiations_at_once(
    tmp_path: Path, limit: int
) -> None:
    """A Start goes out only while fewer than ``max_under_way`` negotiations whose Start went
    out are still open; the others in flight wait (0: every Start at once)."""
    sim = build(config(tmp_path, max_in_flight=50, max_under_way=limit))
    router = sim.runtime.router
    send, end = router.bus.send_nowait, router.end
    begun: set[int] = set()
    most = [0, 0]  # begun and not ended; open

    def sending(message: Any) -> bool:
        if type(message) is Start:
            begun.add(message.nid)
            most[0] = max(most[0], len(begun))
            most[1] = max(most[1], len(router.flights))
        return send(message)

    def ending(nid: int, outcome: str) -> None:
        begun.discard(nid)
        end(nid, outcome)

    router.bus.send_nowait = sending  # type: ignore[method-assign]
    router.end = ending  # type: ignore[method-assign]
    summary = await sim.run()
    sim.close()
    run = summary.run
    assert run.settled == run.agreements > 100 and "start" not in run.late_messages
    assert most[1] > 20  # many open at once
    if limit:
        assert most[0] == limit
    else:
        assert most[0] > 20
    assert run.start_wait_ms["p99"] > 0


async def test_a_slot_opens_only_once_the_settlement_backlog_is_below_its_bound(
    tmp_path: Path,
) -> None:
    sim = build(config(tmp_path, max_settling=5))
    runtime = sim.runtime
    matcher = runtime.matcher
    backlog: list[int] = []

    def watching(*args: Any) -> Any:
        backlog.append(runtime.settler.pending)
        return matcher(*args)

    runtime.matcher = watching
    reports: list[SlotReport] = []
    summary = await sim.run(reports.append)
    sim.close()
    assert max(backlog) <= 5 and summary.run.agreements > 100
    assert summary.run.settled == summary.run.agreements
    traded = [r for r in reports if r.agreements]
    assert sum(r.traded for r in reports) == summary.run.traded_units
    assert all(len(r.prices) == 5 and r.prices == tuple(sorted(r.prices)) for r in traded)
    assert all(r.prices == () for r in reports if not r.agreements)


@pytest.mark.parametrize("engine", ENGINES)
async def test_bad_input_is_refused_counted_logged_and_the_run_goes_on(
    tmp_path: Path, engine: str
) -> None:
    sim = build(config(tmp_path, engine=engine))
    runtime = sim.runtime
    seen: list[Any] = []
    send = runtime.bus.send_nowait

    def recording(message: Any) -> bool:
        if isinstance(message, (Propose, Counter)) and len(seen) < 50:
            seen.append(message)
        return send(message)

    runtime.bus.send_nowait = recording  # type: ignore[method-assign]
    runtime.router.bus = runtime.bus
    injected = 0

    def inject(report: SlotReport) -> None:
        nonlocal injected
        garbage = [
            b"\x00garbage",
            encode({"kind": "propose", "nid": "x"}),  # wrong types
            encode({"kind": "haggle", "nid": 1, "sender": 1, "receiver": 2}),  # unknown kind
        ]
        for raw in garbage:
            assert not runtime.receive_bytes(raw)
        for message in seen:  # replays, and (on the next slot) out-of-date moves
            runtime.receive_bytes(encode(message))
            out_of_turn = msgspec.structs.replace(message, seq=message.seq + 100)
            runtime.receive_bytes(encode(out_of_turn))
        injected += 1

    with structlog.testing.capture_logs() as logs:
        summary = await sim.run(on_slot=inject)
    sim.close()
    rejected = summary.run.rejected_messages
    assert injected == 14
    assert rejected["decode"] == 3 * 14
    assert sum(v for k, v in rejected.items() if k != "decode") >= 50
    assert summary.run.settled == summary.run.agreements > 100
    violations = [e for e in logs if e["event"] == "protocol_violation"]
    assert violations and all("nid" in e and "violation" in e for e in violations)
    assert any(e["event"] == "undecodable_message" for e in logs)


class Faulty(Trader):
    """Raises on every counter-offer it receives."""

    __slots__ = ()

    def handle(self, message: Any, now: float) -> Sequence[Effect]:
        if isinstance(message, Counter):
            raise RuntimeError("strategy bug")
        return super().handle(message, now)


class Silent(Trader):
    """Never answers a proposal."""

    __slots__ = ()

    def handle(self, message: Any, now: float) -> Sequence[Effect]:
        if isinstance(message, Propose):
            return ()
        return super().handle(message, now)


def _swap(sim: Simulation, cls: type[Trader], every: int) -> set[int]:
    swapped = set()
    for i, t in enumerate(sim.traders):
        if i % every == 0:
            t.__class__ = cls
            swapped.add(t.address)
    return swapped


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_failing_agent_is_isolated_then_retired(tmp_path: Path, engine: str) -> None:
    sim = build(config(tmp_path, engine=engine))
    faulty = _swap(sim, Faulty, 10)
    summary = await sim.run()
    sim.close()
    run = summary.run
    assert run.agent_failures > 0
    assert sim.runtime.router.retired and sim.runtime.router.retired <= faulty
    assert sim.runtime.metrics.agents_alive == 200 - len(sim.runtime.router.retired)
    assert run.negotiations == sum(run.outcomes.values())
    assert run.outcomes["withdrawn"] > 0 and run.settled > 50
    # An agreement whose buyer was retired before paying fails, with the reason journaled.
    assert run.settled + run.failed_settlements == run.agreements
    assert set(run.failure_reasons) <= {"agent_retired", "agent_failure"}


@pytest.mark.parametrize("engine", ENGINES)
async def test_negotiations_with_a_silent_agent_expire(tmp_path: Path, engine: str) -> None:
    sim = build(config(tmp_path, engine=engine, deadline_ms=50))
    _swap(sim, Silent, 7)
    summary = await sim.run()
    sim.close()
    assert summary.run.outcomes["expired"] > 0
    assert summary.run.negotiations == sum(summary.run.outcomes.values())
    assert summary.run.settled == summary.run.agreements > 50


async def test_the_metrics_endpoint_serves_a_populated_latency_histogram(tmp_path: Path) -> None:
    sim = build(config(tmp_path))
    scraped: list[str] = []
    urls: list[str] = []

    def on_exporter(exporter: Exporter) -> None:
        assert exporter.host == "127.0.0.1"
        urls.append(exporter.url)

    def scrape(report: SlotReport) -> None:
        if report.slot == 12:  # mid-run, after the morning's trades
            with urllib.request.urlopen(urls[0], timeout=5) as response:
                scraped.append(response.read().decode())

    summary = await sim.run(scrape, metrics_port=0, on_exporter=on_exporter)
    sim.close()
    families = {f.name: f for f in text_string_to_metric_families(scraped[0])}
    latency = families["negotiator_negotiation_latency_seconds"]
    count = next(s.value for s in latency.samples if s.name.endswith("_count"))
    assert 0 < count <= summary.run.agreements
    wait = families["negotiator_negotiation_start_wait_seconds"]
    assert next(s.value for s in wait.samples if s.name.endswith("_count")) >= count
    inf = next(s.value for s in latency.samples if s.labels.get("le") == "+Inf")
    assert inf == count
    agreed = families["negotiator_negotiations"]
    assert any(s.labels.get("outcome") == "agreed" and s.value > 0 for s in agreed.samples)
    assert "negotiator_messages" in families and "negotiator_agents_alive" in families
    assert "negotiator_payments" in families  # the Lightning rail's own figures
    assert "negotiator_payment_hops" in families
    utilization = {s.labels["measure"] for s in families["negotiator_channel_utilization"].samples}
    assert utilization == {"imbalance", "depleted_share", "turnover", "locked_share"}
    events = {s.labels["event"] for s in families["negotiator_rail_events"].samples}
    assert {"rebalances", "splices", "watchtower_interventions"} <= events
    final = {  # at the end every agreement was paid over Lightning
        f.name: f
        for f in text_string_to_metric_families(
            generate_latest(sim.runtime.metrics.registry()).decode()
        )
    }
    paid = [s for s in final["negotiator_payments"].samples if s.name.endswith("_total")]
    assert [(s.labels["outcome"], s.labels["rail"], s.value) for s in paid] == [
        ("succeeded", "lightning", summary.run.settled)
    ]


def test_sigint_stops_cleanly_with_a_consistent_ledger(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    cmd = [
        sys.executable, "-m", "negotiator", "simulate", "--agents", "3000", "--slots", "240",
        "--engine", "task", "--quiet", "--json", str(out), "--ledger", str(tmp_path / "l.sqlite"),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = 60.0
        import time

        start = time.monotonic()
        while not (tmp_path / "l.sqlite-wal").exists() and time.monotonic() - start < deadline:
            time.sleep(0.1)  # the first agreements are being journaled: the run is under way
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err.decode()[-2000:]
    data = json.loads(out.read_text())
    assert data["interrupted"] is True
    assert 0 < data["slots"] < 240
    assert data["settled"] + data["failed_settlements"] == data["agreements"]


class _Watcher:
    """Records the market view each slot opens with; trades nothing."""

    agent_type = "watcher"

    def __init__(self, address: int) -> None:
        self.address = address
        self.views: list[object] = []

    def open_slot(self, slot: int, view: object) -> None:
        self.views.append(view)

    def handle(self, message: Any, now: float) -> Sequence[Effect]:
        return ()

    def close_slot(self, slot: int) -> None:
        return None


@pytest.mark.parametrize("engine", ENGINES)
async def test_the_first_slot_opens_with_what_the_mean_field_service_already_knew(
    tmp_path: Path, engine: str
) -> None:
    service = MeanFieldService()
    service.handle(TradeReport(-1, [150_000], [1000]))  # yesterday's trades
    bus = LocalBus()
    bus.serve("meanfield", service.handle)
    watchers = [_Watcher(0), _Watcher(1)]
    ledger = Ledger(tmp_path / "ledger.sqlite")
    runtime = Runtime(
        watchers,
        rail=InProcessRail({0: 0, 1: 0}),
        ledger=ledger,
        matcher=lambda slot, positions, view, rng: [],
        rng=np.random.default_rng(0),
        config=RuntimeConfig(engine=engine),
        bus=bus,
        population="meanfield",
    )
    await runtime.run(2)
    ledger.close()
    first = watchers[0].views[0]
    assert getattr(first, "guidance_price", None) == 150_000
    assert len(watchers[0].views) == 2


def test_closing_a_run_gives_its_population_back_to_the_collector(tmp_path: Path) -> None:
    """The runtime freezes the population out of the collector's sight; closing the run must
    unfreeze it, or a process that runs day after day keeps every day's cycles (the soak found
    ~18 MB a day)."""
    sim = build(SimulationConfig(agents=20, slots=2, ledger=str(tmp_path / "l.sqlite")))
    assert gc.get_freeze_count() > 0
    sim.close()
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("engine", ENGINES)
async def test_the_young_generation_is_collected_less_often_only_while_an_engine_runs(
    tmp_path: Path, engine: str
) -> None:
    before = gc.get_threshold()
    during: list[tuple[int, int, int]] = []
    sim = build(config(tmp_path, engine=engine).model_copy(update={"slots": 2}))
    await sim.run(on_slot=lambda report: during.append(gc.get_threshold()))
    sim.close()
    assert during == [(max(YOUNG_THRESHOLD, before[0]), before[1], before[2])] * 2
    assert gc.get_threshold() == before  # given back when the engine stopped


def test_overlapping_engines_give_the_thresholds_back_when_the_last_one_stops() -> None:
    before = gc.get_threshold()
    first, second = fewer_collections(), fewer_collections()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # not in the order they started
    assert gc.get_threshold()[0] == max(YOUNG_THRESHOLD, before[0])
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before
