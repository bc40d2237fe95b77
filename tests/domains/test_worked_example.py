"""The README's worked example of a third domain runs as written: save the block as a module,
register it, and the generic composition root trades, settles and measures it."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import pytest

from domains import ADAPTERS
from negotiator.domain_run import DomainConfig, build_domain

README = Path(__file__).parents[2] / "README.md"


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    found = [b for b in blocks if "class ComputeDomain" in b]
    assert len(found) == 1, "the README's worked example is gone"
    return found[0]


def test_the_readmes_third_domain_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "compute_example.py").write_text(_example())
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(ADAPTERS, "compute", "compute_example:ComputeDomain")
    run = build_domain(DomainConfig(domain="compute", seed=1, rail="inprocess"))
    summary = anyio.run(run.run)
    run.close()
    data = summary.to_dict()
    assert data["domain"] == "compute" and data["unit"] == "GPU-hour"
    assert data["agents"] == 72 and data["slots"] == 8
    assert data["agreement_rate"] > 0.95 and data["settled"] == data["agreements"]
    assert data["gpu_hours"] == data["traded_units"] > 0
    assert 0.9 <= data["efficiency"] <= 1.0
