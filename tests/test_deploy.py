"""docker-compose.yml and the Grafana dashboard: valid, pinned, and naming real metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import anyio
import pytest
import yaml
from prometheus_client import generate_latest

from negotiator.simulation import SimulationConfig, build

ROOT = Path(__file__).resolve().parents[1]


def test_every_image_is_pinned_and_the_regtest_network_is_complete() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"bitcoind", "alice", "bob", "carol", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d", tag), (name, image)
    for node in ("alice", "bob", "carol"):
        service = services[node]
        assert service["image"].startswith("elementsproject/lightningd:v26.06")
        assert service["user"] == "${UID:-1000}:${GID:-1000}"  # the host can open the socket
        assert f"--alias={node}" in service["command"] and "--developer" in service["command"]
        assert service["volumes"] == [f"./.regtest/{node}:/ln"]


@pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose (Debian package) not installed"
)
def test_docker_compose_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _exported_names() -> set[str]:
    sim = build(SimulationConfig(agents=60, slots=14, seed=1))
    anyio.run(sim.run)
    sim.close()
    text = generate_latest(sim.runtime.metrics.registry()).decode()
    names = set()
    suffixes = {"histogram": ["_bucket", "_sum", "_count"]}  # counters are declared with _total
    for line in text.splitlines():  # from the declarations: a family may have no sample yet
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            names.update(name + suffix for suffix in suffixes.get(kind, [""]))
    return names


def test_the_dashboard_parses_and_every_query_names_an_exported_metric() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/negotiator.json").read_text())
    exported = _exported_names()
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(queries) >= 10
    for expr in queries:
        names = set(re.findall(r"\bnegotiator_[a-z_]+", expr))
        assert names, expr
        assert names <= exported, (expr, names - exported)
    provisioning = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert provisioning["datasources"][0]["uid"] == "prometheus"


def test_every_dashboard_metric_is_documented_in_the_readme_table() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/negotiator.json").read_text())
    readme = (ROOT / "README.md").read_text()
    documented = set(
        re.findall(r"^\| `(negotiator_[a-z_]+)` \| (?:counter|gauge|histogram) \|", readme, re.M)
    )
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"\bnegotiator_[a-z_]+", target["expr"]):
                family = re.sub(r"_(bucket|sum|count)$", "", name)
                assert family in documented, (panel["title"], name)


def test_every_exported_metric_is_documented_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `(negotiator_[a-z_]+)` \|", readme, re.M))
    exported = {re.sub(r"_(bucket|sum|count)$", "", n) for n in _exported_names()}
    assert exported <= documented, exported - documented
