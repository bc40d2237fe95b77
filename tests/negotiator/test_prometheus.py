"""A real Prometheus scrapes a run and its answers agree with the run's own JSON summary."""

from __future__ import annotations

import bisect
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import pytest

from negotiator.metrics import LATENCY_BUCKETS, Exporter
from negotiator.runtime import RuntimeConfig
from negotiator.simulation import SimulationConfig, build
from payments.regtest import free_port

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="Debian's prometheus is not installed (.ci/run installs it with apt-get)",
)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _query(base: str, expr: str) -> float | None:
    answer = _get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert answer["status"] == "success", answer
    result = answer["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def _until(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_prometheus_quantiles_and_counters_agree_with_the_summary(tmp_path: Path) -> None:
    config = SimulationConfig(
        agents=400, slots=24, seed=4, runtime=RuntimeConfig(max_in_flight=100)
    )
    sim = build(config)
    exporter = Exporter(sim.runtime.metrics, 0)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: negotiator\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{exporter.port}']\n"
    )
    prometheus = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _until("Prometheus to be ready", lambda: _get(f"{base}/api/v1/status/buildinfo"))
        _until("a first scrape", lambda: _query(base, 'up{job="negotiator"}') == 1.0)
        summary = anyio.run(sim.run)  # scraped every second while it runs
        run = summary.run
        agreed = run.outcomes["agreed"]
        settled = 'sum(negotiator_settlements_total{outcome="settled"})'
        _until(  # the exporter keeps serving the final figures until Prometheus has scraped
            "the final scrape",  # them (settlement finishes after the last negotiation)
            lambda: _query(base, settled) == run.settled,
        )
        assert _query(base, 'negotiator_negotiations_total{outcome="agreed"}') == agreed
        assert run.settled == agreed
        ours = run.latency_ms["p95"] / 1000
        theirs = _query(
            base,
            "histogram_quantile(0.95, sum by (le) (negotiator_negotiation_latency_seconds_bucket))",
        )
        assert theirs is not None
        # within bucket resolution: Prometheus interpolates inside the bucket holding the 95th
        # percentile; the exact figure from the samples lies in that bucket too
        bucket = bisect.bisect_left(LATENCY_BUCKETS, ours)
        lower = LATENCY_BUCKETS[bucket - 1] if bucket else 0.0
        upper = LATENCY_BUCKETS[bucket] if bucket < len(LATENCY_BUCKETS) else float("inf")
        assert lower <= theirs <= upper, (ours, theirs, lower, upper)
        count = _query(base, "sum(negotiator_negotiation_latency_seconds_count)")
        assert count == agreed
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)
        exporter.close()
        sim.close()
