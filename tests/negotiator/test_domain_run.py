"""``simulate --domain``: a domain's market on the same runtime, rail, ledger, mean-field
service and metrics as the energy community, with its summary, report and clear errors."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from domains import adapter
from negotiator.cli import app
from negotiator.domain_run import DomainConfig, build_domain
from negotiator.metrics import Exporter
from negotiator.runtime import RuntimeConfig, SlotReport
from tests.test_cli import REQUIRED

KERNEL = REQUIRED - {"traded_wh"} | {"traded_units"}
"""The summary fields of every run, in the domain's own unit."""


def test_the_logistics_day_runs_from_the_command_line(tmp_path: Path) -> None:
    out, report = tmp_path / "summary.json", tmp_path / "report"
    args = ["simulate", "--domain", "logistics", "--scenario", "logistics", "--seed", "1"]
    result = CliRunner().invoke(app, [*args, "--json", str(out), "--report", str(report)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data.keys() >= KERNEL and "traded_wh" not in data  # nothing energy about it
    assert data["domain"] == "logistics" and data["unit"] == "parcel"
    assert data["agents"] == 440 and data["slots"] == 12
    assert data["efficiency"] >= 0.9  # against the HiGHS assignment
    assert data["agreement_rate"] > 0.95 and data["latency_ms"]["p95"] > 0
    assert data["delivered_by_carriers"] == data["traded_units"]
    assert data["delivered_by_carriers"] + data["spot_parcels"] == data["parcels"]
    # settled over the simulated Lightning network, every agreement paid
    assert data["rail"] == "lightning" and data["payments"]["payments"] == data["settled"]
    assert data["settled"] == data["agreements"] and data["failed_settlements"] == 0
    assert "Run summary" in result.output and "12/12" in result.output
    assert "parcels" in result.output and "efficiency" in result.output
    written = {p.name for p in report.iterdir()}
    assert {"summary.json", "community.png", "prices.png", "latency.png"} <= written
    page = CliRunner().invoke(app, ["report", str(report)])
    assert page.exit_code == 0 and "Parcels traded per slot" in (report / "index.html").read_text()


def test_same_seed_same_ledger(tmp_path: Path) -> None:
    for engine in ("task", "shard"):
        digests = set()
        for _ in range(2):
            config = DomainConfig(seed=3, rail="inprocess", runtime=RuntimeConfig(engine=engine))
            run = build_domain(config)
            summary = anyio.run(run.run)
            run.close()
            assert summary.run.agreements > 0
            digests.add(summary.run.ledger_digest)
        assert len(digests) == 1, engine  # the embedded mode is deterministic


@pytest.mark.anyio
async def test_a_domain_run_serves_the_same_metrics(tmp_path: Path) -> None:
    run = build_domain(DomainConfig(seed=1))
    urls: list[str] = []
    scraped: list[str] = []

    def on_exporter(exporter: Exporter) -> None:
        urls.append(exporter.url)

    def scrape(report: SlotReport) -> None:
        if report.slot == 6:
            with urllib.request.urlopen(urls[0], timeout=5) as response:
                scraped.append(response.read().decode())

    summary = await run.run(scrape, metrics_port=0, on_exporter=on_exporter)
    run.close()
    families = {f.name: f for f in text_string_to_metric_families(scraped[0])}
    latency = families["negotiator_negotiation_latency_seconds"]
    count = next(s.value for s in latency.samples if s.name.endswith("_count"))
    assert 0 < count <= summary.run.agreements
    assert "negotiator_payments" in families and "negotiator_agents_alive" in families
    seen = {s.labels["type"] for s in families["negotiator_meanfield_agents"].samples}
    assert seen == {"shipper", "carrier"}  # the mean-field service saw both roles


def test_bad_domain_input_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="known domains: energy, logistics"):
        adapter("finance")
    runner = CliRunner()
    result = runner.invoke(app, ["simulate", "--domain", "finance"])
    assert result.exit_code == 2 and "known domains" in result.output
    result = runner.invoke(app, ["simulate", "--domain", "logistics", "--scenario", "nope"])
    assert result.exit_code == 2 and "named ones: logistics" in result.output
    result = runner.invoke(app, ["simulate", "--domain", "logistics", "--byzantine", "spam"])
    assert result.exit_code == 2 and "energy-community options" in result.output
    with pytest.raises(ValueError, match="strategy"):
        DomainConfig(strategy="stubborn")
