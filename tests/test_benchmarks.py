"""The kernel benchmarks' contract: the fields the README's table and the issue name, and
figures that are medians of interleaved rounds (run small, as a user would run them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
SCRIPT = BENCHMARKS / "negotiation_throughput.py"
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


def _run(*args: str, script: Path = SCRIPT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _each_round(result: dict[str, Any], key: str, num: str, den: str, abs_: float) -> None:
    """Every round's ``key`` is that round's ``num`` over that round's ``den``."""
    per = zip(
        result[f"{num}_per_round"],
        result[f"{den}_per_round"],
        result[f"{key}_per_round"],
        strict=True,
    )
    for a, b, quotient in per:
        assert quotient == pytest.approx(a / b, abs=abs_)


def test_throughput_prints_the_median_of_its_rounds() -> None:
    done = _run(*SMALL, "--rounds", "3", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result.keys() >= REQUIRED
    assert result["agents"] == 200 and result["rounds"] == 3
    for key in ("runtime_negotiations_per_s", "bare_negotiations_per_s", "ratio"):
        rounds = result[f"{key}_per_round"]
        assert len(rounds) == 3 and all(v > 0 for v in rounds)
        assert result[key] == sorted(rounds)[1]
    # each round's ratio is that round's task run over that round's bare run
    _each_round(result, "ratio", "runtime_negotiations_per_s", "bare_negotiations_per_s", 6e-4)
    assert result["settled"] == 400 and isinstance(result["settled"], int)


def test_throughput_refuses_zero_rounds() -> None:
    done = _run(*SMALL, "--rounds", "0")
    assert done.returncode == 2
    assert "--rounds must be at least 1" in done.stderr


def test_vs_negmas_prints_the_median_speedup_of_its_rounds() -> None:
    pytest.importorskip("negmas")
    args = ["--sessions", "60", "--agents", "100", "--rounds", "3", "--json"]
    done = _run(*args, script=BENCHMARKS / "vs_negmas.py")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result.keys() >= {"negmas_offers_per_s", "runtime_offers_per_s", "speedup"}
    assert result["rounds"] == 3 and result["runtime_settled"] == 60
    assert result["speedup"] == sorted(result["speedup_per_round"])[1]
    _each_round(result, "speedup", "runtime_offers_per_s", "negmas_offers_per_s", 6e-3)
