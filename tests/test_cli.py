"""The command line: the summary's fields, the progress display, clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from negotiator.cli import app

REQUIRED = {
    "agents",
    "slots",
    "negotiations",
    "agreements",
    "agreement_rate",
    "latency_ms",
    "offers_per_s",
    "negotiations_per_s",
    "settled",
    "failed_settlements",
    "traded_wh",
    "ledger_digest",
}


def test_simulate_writes_the_json_summary_and_prints_a_table(tmp_path: Path) -> None:
    out = tmp_path / "run" / "summary.json"
    args = ["simulate", "--agents", "150", "--slots", "14", "--seed", "2", "--json", str(out)]
    result = CliRunner().invoke(app, [*args, "--ledger", str(tmp_path / "l.sqlite")])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data.keys() >= REQUIRED
    assert set(data["latency_ms"]) == {"p50", "p95", "p99"}
    assert data["agents"] == 150 and data["slots"] == 14 and data["settled"] > 0
    assert "Run summary" in result.output and "14/14" in result.output
    # the bar names the slot whose counts it shows (the last one: a day's night slot trades 0)
    assert "slot 13: " in result.output and "slot 12: " not in result.output
    # settled over the simulated Lightning network by default, with its payment statistics
    payments = data["payments"]
    assert data["rail"] == "lightning" and payments["payments"] == data["settled"]
    assert payments["success_rate"] == 1.0 and payments["hops_mean"] > 1
    assert payments["fees_msat"] > 0 and data["fees_msat"] == payments["fees_msat"]
    assert set(payments["network_latency_ms"]) == {"p50", "p95", "p99"}
    assert set(payments["utilization"]) == {
        "imbalance",
        "depleted_share",
        "turnover",
        "locked_share",
    }


def test_the_rail_and_the_placement_are_chosen_by_flag(tmp_path: Path) -> None:
    for flags, rail, hops in [
        (["--rail", "inprocess"], "inprocess", 0),
        (["--placement", "hub", "--hubs", "2"], "lightning", 1),
    ]:
        out = tmp_path / "p.json"
        args = ["simulate", "--agents", "80", "--slots", "14", "--quiet", *flags]
        result = CliRunner().invoke(app, [*args, "--json", str(out)])
        assert result.exit_code == 0, result.output
        data = json.loads(out.read_text())
        assert data["rail"] == rail and data["settled"] > 0
        assert data["payments"]["hops_mean"] <= hops  # hub customers: internal or one hop


def test_the_shard_engine_is_chosen_by_flag(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    args = ["simulate", "--agents", "100", "--slots", "12", "--engine", "shard", "--quiet"]
    result = CliRunner().invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["engine"] == "shard"
    assert result.output == ""


def test_bad_options_fail_with_a_clear_message() -> None:
    runner = CliRunner()
    for args, needle in [
        (["--engine", "threads"], "engine"),
        (["--strategy", "tit-for-tat"], "choose from"),
        (["--agents", "1"], "agents"),
        (["--max-rounds", "0"], "max_rounds"),
        (["--max-under-way", "-1"], "max_under_way"),
        (["--rail", "paypal"], "rail"),
        (["--placement", "cloud"], "placement"),
        (["--workers", "2"], "go together"),
        (["--workers", "2", "--nats", "nats://127.0.0.1:1", "--ledger", "l.db"], "--ledger"),
        (["--workers", "2", "--nats", "nats://127.0.0.1:1", "--live"], "--live"),
    ]:
        result = runner.invoke(app, ["simulate", "--quiet", *args])
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.output, result.output


def test_live_prints_plain_lines_when_stdout_is_not_a_terminal(tmp_path: Path) -> None:
    args = ["simulate", "--agents", "80", "--slots", "14", "--live", "--seed", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("slot ")]
    assert len(lines) == 14 and lines[-1].startswith("slot 14 / 14:")
    done = next(line for line in result.output.splitlines() if line.startswith("done:"))
    assert "payments ok 100.0%" in done and "\x1b[" not in result.output


def test_the_live_panel_shows_the_run_in_a_terminal() -> None:
    from rich.console import Console

    from negotiator.live import LiveView
    from negotiator.runtime import SlotReport
    from negotiator.simulation import SimulationConfig, build

    sim = build(SimulationConfig(agents=60, slots=14, seed=1))
    console = Console(record=True, force_terminal=True, width=100)
    view = LiveView(console, sim.runtime.metrics, 14)
    assert view.interactive

    def on_slot(report: SlotReport) -> None:
        view.on_slot(report)

    import anyio

    with view:
        anyio.run(lambda: sim.run(on_slot))
    sim.close()
    text = console.export_text()
    assert "14 / 14" in text and "agreement rate" in text and "payments ok" in text
    assert "100.0% of" in text


def test_a_reader_that_goes_away_ends_the_output_not_the_run() -> None:
    import subprocess
    import sys

    cmd = f"{sys.executable} -m negotiator simulate --agents 100 --slots 14 --live | head -1"
    result = subprocess.run(
        cmd, shell=True, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.stdout.startswith("slot 1 / 14")
    assert "Traceback" not in result.stderr, result.stderr


def test_a_scenario_run_reports_quality_against_the_optimum_and_the_naive_market(
    tmp_path: Path,
) -> None:
    out = tmp_path / "small.json"
    report_dir = tmp_path / "report"
    args = ["simulate", "--scenario", "small", "--seed", "1", "--rail", "inprocess"]
    result = CliRunner().invoke(app, [*args, "--json", str(out), "--report", str(report_dir)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["agents"] == 100 and data["slots"] == 96 and data["scenario"] == "small"
    for key in ("efficiency", "peak_reduction", "jain_index", "price_volatility", "naive"):
        assert key in data, key
    assert data["optimum_cost_msat"] <= data["cost_msat"] <= data["grid_only_cost_msat"]
    assert 0.5 < data["efficiency"] <= 1.0
    naive = data["naive"]
    assert naive["efficiency"] < data["efficiency"]  # mean-field planning and guidance pay off
    assert naive["cost_msat"] > data["cost_msat"]
    assert data["jain_index"] > 0 and data["peak_reduction"] > 0
    assert "efficiency vs optimum" in result.output
    # the report: the same summary and the four plots, then one page with the plots inlined
    assert json.loads((report_dir / "summary.json").read_text()) == data
    for name in ("community", "prices", "latency", "population"):
        assert (report_dir / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    page = CliRunner().invoke(app, ["report", str(report_dir)])
    assert page.exit_code == 0, page.output
    html = (report_dir / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 4
    assert "efficiency against the optimum" in html and "(naive " in html


def test_report_of_a_directory_without_a_run_says_what_is_missing(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code != 0 and "summary.json" in result.output


def test_an_unknown_scenario_fails_with_the_named_ones() -> None:
    result = CliRunner().invoke(app, ["simulate", "--scenario", "atlantis"])
    assert result.exit_code != 0 and "storage-rich" in result.output


def test_train_writes_a_policy_and_its_curve_and_simulate_trades_with_it(tmp_path: Path) -> None:
    policy = tmp_path / "policy.pt"
    args = ["train", "--days", "1", "--out", str(policy), "--json", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["algo"] == "mf-ac" and summary["days"] == 1 and summary["share"] == 0.5
    assert {"held_out_reward", "classic_reward", "slots_per_s"} <= summary.keys()
    assert summary["kept_after_day"] == 1 and len(summary["validation"]) == 1
    assert policy.is_file()
    assert policy.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "learned.json"
    run = ["simulate", "--scenario", "small", "--seed", "1", "--rail", "inprocess"]
    learned = [*run, "--strategy", f"learned:{policy}", "--no-baselines", "--json", str(out)]
    result = CliRunner().invoke(app, learned)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["strategy"] == f"learned:{policy}" and data["agreements"] > 0
    missing = CliRunner().invoke(app, [*run, "--strategy", "learned:nowhere.pt"])
    assert missing.exit_code != 0 and "no policy file" in missing.output
    wrong = CliRunner().invoke(app, ["train", "--algo", "ppo"])
    assert wrong.exit_code != 0 and "mf-maddpg" in wrong.output
