"""negotiator solve: the LQ game, a finite game and the meeting game, printed and plotted."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from negotiator.cli import app

PNG = b"\x89PNG\r\n\x1a\n"


def test_solve_lq_prints_the_solution_and_plots_the_mean_paths(tmp_path: Path) -> None:
    plot = tmp_path / "lq.png"
    result = CliRunner().invoke(app, ["solve", "lq", "--types", "4", "--plot", str(plot), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["types"] == 4 and len(data["per_type"]) == 4 and data["residual"] < 1e-10
    assert plot.read_bytes().startswith(PNG)


def test_solve_mfg_runs_each_algorithm_and_the_meeting_game(tmp_path: Path) -> None:
    runner = CliRunner()
    for algorithm in ("fictitious-play", "omd", "fixed-point"):
        plot = tmp_path / f"{algorithm}.png"
        args = ["solve", "mfg", "--algorithm", algorithm, "--iterations", "20", "--json"]
        result = runner.invoke(app, [*args, "--states", "8", "--plot", str(plot)])
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        assert abs(sum(data["final_distribution"]) - 1) < 1e-5
        assert plot.read_bytes().startswith(PNG)
    result = runner.invoke(app, ["solve", "mfg", "--game", "meeting", "--json"])
    data = json.loads(result.output)
    assert data["start"] >= 0.0 and data["tau"] < data["start"]
    result = runner.invoke(app, ["solve", "mfg", "--game", "chess"])
    assert result.exit_code == 2 and "beach-bar" in result.output
