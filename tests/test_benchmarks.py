"""The throughput benchmark's contract: the fields the README's table and the issue name, and
figures that are medians of interleaved rounds (run small, as a user would run it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "negotiation_throughput.py"
SMALL = ["--agents", "200", "--negotiations", "400", "--in-flight", "40"]

REQUIRED = {
    "runtime_negotiations_per_s",
    "bare_negotiations_per_s",
    "ratio",
    "shard_negotiations_per_s",
    "offers_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "rss_mb",
    "agents",
}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *SMALL, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_throughput_prints_the_median_of_its_rounds() -> None:
    done = _run("--rounds", "3", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result.keys() >= REQUIRED
    assert result["agents"] == 200 and result["rounds"] == 3
    for key in ("runtime_negotiations_per_s", "bare_negotiations_per_s", "ratio"):
        rounds = result[f"{key}_per_round"]
        assert len(rounds) == 3 and all(v > 0 for v in rounds)
        assert result[key] == sorted(rounds)[1]
    # each round's ratio is that round's task run over that round's bare run
    per = zip(
        result["runtime_negotiations_per_s_per_round"],
        result["bare_negotiations_per_s_per_round"],
        result["ratio_per_round"],
        strict=True,
    )
    for task, bare, ratio in per:
        assert ratio == pytest.approx(task / bare, abs=6e-4)
    assert result["settled"] == 400 and isinstance(result["settled"], int)


def test_throughput_refuses_zero_rounds() -> None:
    done = _run("--rounds", "0")
    assert done.returncode == 2
    assert "--rounds must be at least 1" in done.stderr
