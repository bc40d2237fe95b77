"""Sharded runs over a real nats-server: one summary, determinism, kills and server restarts."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from negotiator.assembly import members
from negotiator.cluster import merge_reports
from negotiator.ledger import Ledger
from negotiator.messages import PopulationReport
from negotiator.sharded import coordinate, owner_of
from negotiator.simulation import SimulationConfig
from tests.natsserver import NatsServer

CONFIG = SimulationConfig(agents=400, slots=24, seed=5)


def test_merged_population_reports_keep_every_member_and_unify_types() -> None:
    a = PopulationReport.of(3, ["consumer", "prosumer"], [0, 1, 1], [100, -50, -20], [9, 8, 7])
    b = PopulationReport.of(3, ["prosumer"], [0, 0], [-5, -6], [1, 2])
    merged = merge_reports([a, b])
    codes, net, reservation = merged.arrays()
    assert merged.type_names == ["consumer", "prosumer"]
    assert codes.tolist() == [0, 1, 1, 1, 1]
    assert net.tolist() == [100, -50, -20, -5, -6]
    assert reservation.tolist() == [9, 8, 7, 1, 2]


def test_neighbourhoods_split_the_community_and_own_their_addresses() -> None:
    blocks = [members(1001, (i, 3)) for i in range(3)]
    assert [len(b) for b in blocks] == [333, 334, 334]
    assert np.concatenate([list(b) for b in blocks]).tolist() == list(range(1001))
    owner = owner_of(1001, 3)
    assert [owner(b.start) for b in blocks] == [0, 1, 2]
    assert owner(332) == 0 and owner(333) == 1 and owner(1000) == 2
    assert owner(1001) is None and owner("meanfield") is None
    with pytest.raises(ValueError, match="does not exist"):
        members(2, (0, 3))


def _coordinate(url: str, config: SimulationConfig = CONFIG, **kw: Any) -> dict[str, Any]:
    return anyio.run(lambda: coordinate(config, 2, url, **kw))


def test_two_workers_give_one_deterministic_summary(nats_server: NatsServer) -> None:
    slots: list[int] = []
    first = _coordinate(nats_server.url, on_slot=lambda r: slots.append(r.slot))
    second = _coordinate(nats_server.url)
    assert slots == list(range(24))  # progress: each slot once every shard finished it
    assert first["workers"] == 2 and first["agents"] == 400
    assert [s["agents"] for s in first["shards"]] == [200, 200]
    assert first["negotiations"] == sum(s["negotiations"] for s in first["shards"]) > 0
    assert first["settled"] == first["agreements"] > 0
    assert first["failed_settlements"] == 0
    assert first["message_counts"]["start"] == first["negotiations"]  # merged over the shards
    assert first["latency_ms"]["p50"] > 0
    assert 0 < first["savings"] < 1
    assert first["replay_mismatches"] == 0
    for key in ("ledger_digest", "negotiations", "agreements", "paid_msat", "community_cost_msat"):
        assert first[key] == second[key], key  # same seed, same shards: the same run


def test_a_nats_server_restart_mid_run_changes_nothing(nats_server: NatsServer) -> None:
    """Kill nats-server while the shards trade, start it again on its port: the run completes,
    and ends as the run without the outage (nothing lost, nothing applied twice)."""
    config = SimulationConfig(agents=400, slots=48, seed=6)
    reference = _coordinate(nats_server.url, config)
    restarted = threading.Event()

    def on_slot(report: Any) -> None:
        if report.slot == 10 and not restarted.is_set():
            restarted.set()
            threading.Thread(target=_bounce, args=(nats_server,)).start()

    outage = _coordinate(nats_server.url, config, on_slot=on_slot)
    assert restarted.is_set()
    for key in ("ledger_digest", "settled", "paid_msat", "community_cost_msat", "slots"):
        assert outage[key] == reference[key], key
    assert outage["replay_mismatches"] == 0


def _bounce(server: NatsServer) -> None:
    server.stop()
    time.sleep(1.0)
    server.start()


def test_a_sharded_run_refuses_what_it_cannot_shard(nats_server: NatsServer) -> None:
    with pytest.raises(ValueError, match="scenario"):
        _coordinate(nats_server.url, SimulationConfig(scenario="small"))
    with pytest.raises(ValueError, match="does not exist"):
        anyio.run(lambda: coordinate(SimulationConfig(agents=2), 3, nats_server.url))


def _simulate(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "negotiator", "simulate", "--quiet", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_ten_worker_kills_lose_nothing_and_pay_nothing_twice(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """The acceptance test: SIGKILL a worker ten times at random instants; the coordinator
    restarts it, it resumes from its checkpoint; the run ends as one never stopped."""
    run = ["--agents", "1000", "--slots", "48", "--seed", "7", "--engine", "shard"]
    run += ["--workers", "2", "--nats", nats_server.url]
    reference = tmp_path / "reference.json"
    process = _simulate(*run, "--state", str(tmp_path / "a"), "--json", str(reference))
    assert process.wait(timeout=300) == 0, process.stderr.read() if process.stderr else ""
    whole = json.loads(reference.read_text())
    state, out = tmp_path / "b", tmp_path / "b.json"
    process = _simulate(*run, "--state", str(state), "--json", str(out))
    rng = random.Random(4321)
    kills = 0
    while kills < 10 and process.poll() is None:
        shard = state / f"shard-{rng.randrange(2)}"
        checkpoint, pid_file = shard / "checkpoint.pkl", shard / "worker.pid"
        seen = checkpoint.stat().st_mtime_ns if checkpoint.exists() else 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:  # until it is running
            if checkpoint.exists() and checkpoint.stat().st_mtime_ns != seen:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.5))
        if process.poll() is not None:
            break
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
            kills += 1
        except ProcessLookupError:  # that worker had just finished its part
            continue
    assert process.wait(timeout=300) == 0, process.stderr.read() if process.stderr else ""
    assert kills == 10, f"the run ended after {kills} kills: make it longer"
    final = json.loads(out.read_text())
    assert final["worker_restarts"] == 10
    assert final["replay_mismatches"] == 0
    for key in ("ledger_digest", "settled", "agreements", "paid_msat", "community_cost_msat"):
        assert final[key] == whole[key], key
    assert final["failed_settlements"] == whole["failed_settlements"]
    for i in range(2):
        ledger = Ledger(state / f"shard-{i}" / "ledger.sqlite")
        counts = ledger.counts()
        assert counts["accepted"] == counts["settling"] == 0  # every agreement reconciled
        assert ledger.digest() == whole["shards"][i]["ledger_digest"]
        ledger.close()


@pytest.mark.anyio
async def test_the_hub_takes_reports_only_from_the_shards_they_name(
    nats_server: NatsServer,
) -> None:
    import msgspec
    import nats

    from market import MeanFieldService
    from negotiator.cluster import Hub, subject
    from negotiator.natsbus import Envelope
    from negotiator.sharded import keyring

    hub = Hub(MeanFieldService(), 2, "{}", keyring=keyring(5, []))
    nc = await nats.connect(nats_server.url)
    await hub.attach(nc, "r")
    report = PopulationReport.of(0, ["consumer"], [0], [100], [9])
    body = msgspec.msgpack.encode(report)
    shard1 = keyring(5, ["shard-1"])
    for forged in (
        Envelope(1, body),  # unsigned
        Envelope(1, body, keyring(5, ["shard-0"]).sign("shard-0", body)),  # shard 0 posing as 1
        Envelope(7, body, shard1.sign("shard-1", body)),  # no shard 7 in this run
    ):
        await nc.publish(subject("r"), msgspec.msgpack.encode(forged))
    genuine = Envelope(1, body, shard1.sign("shard-1", body))
    # the hub handles its messages in order: once this is answered, the others were handled
    await nc.request(subject("r"), msgspec.msgpack.encode(genuine), timeout=2)
    assert hub.refused == 3
    assert list(hub.reports[0]) == [1]
    await nc.drain()


def test_latency_sketches_merge_into_the_quantiles_of_all_samples() -> None:
    from negotiator.cluster import SKETCH_POINTS, Sketch, quantiles

    rng = np.random.default_rng(3)
    small = [rng.lognormal(-4, 0.5, 3000), rng.lognormal(-3, 0.3, 5000)]
    merged = quantiles([Sketch.of(s) for s in small])
    whole = np.concatenate(small)
    for q in (50, 95, 99):  # exact below SKETCH_POINTS samples a shard
        expected = float(np.quantile(whole, q / 100, method="hazen")) * 1000
        assert merged[f"p{q}"] == pytest.approx(expected, abs=1e-4)  # rounded to 0.1 us
    large = [rng.lognormal(-4, 0.5, 200_000), rng.lognormal(-3, 0.3, 50_000)]
    sketches = [Sketch.of(s) for s in large]
    assert all(len(s.points) == 8 * SKETCH_POINTS for s in sketches)  # bounded on the wire
    merged = quantiles(sketches)
    whole = np.concatenate(large)
    for q in (50, 95, 99):  # beyond it, within a rank error of 1 / SKETCH_POINTS
        lo, hi = np.quantile(whole, [q / 100 - 2e-4, q / 100 + 2e-4])
        assert lo * 1000 <= merged[f"p{q}"] <= hi * 1000
    assert quantiles([Sketch.of([])]) == {"p50": 0.0, "p95": 0.0, "p99": 0.0}


def test_spawned_workers_get_their_shard_state_and_metrics_port(tmp_path: Path) -> None:
    from negotiator.sharded import worker_command

    command = worker_command("nats://h:1", "r1", 1, 3, tmp_path / "shard-1", "info", 9101)
    assert command[1:] == [
        *("-m", "negotiator", "worker", "--shard", "1/3", "--nats", "nats://h:1"),
        *("--run", "r1", "--log-level", "info", "--state", str(tmp_path / "shard-1")),
        *("--metrics-port", "9101"),
    ]
    assert "--state" not in worker_command("u", "r", 0, 1, None, "warning")
