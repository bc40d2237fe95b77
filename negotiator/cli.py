"""The ``negotiator`` command line (composition root, with negotiator.simulation)."""

from __future__ import annotations

import gc
import importlib.util
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import anyio
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from market.reports import lq_report, mfg_report
from negotiator import log, report
from negotiator.cluster_cli import run_cluster, worker
from negotiator.domain_run import DomainConfig, DomainRun, DomainSummary, build_domain
from negotiator.errors import RecoveryError
from negotiator.live import LiveView
from negotiator.metrics import Exporter
from negotiator.recovery import StateDir, checkpointer, restore, rows_after
from negotiator.regtest_cli import cln_nodes, regtest_app
from negotiator.runtime import RuntimeConfig, SlotReport
from negotiator.simulation import Simulation, SimulationConfig, Summary, build
from negotiator.tables import progress_bar, slot_info, summary_table

app = typer.Typer(
    help="Asyncio multi-agent negotiation runtime for decentralised markets.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _main() -> None:
    """Negotiate, settle, measure."""


def uvloop_available() -> bool:
    """Whether uvloop can be used (it is optional)."""
    return importlib.util.find_spec("uvloop") is not None


@app.command()
def simulate(
    agents: Annotated[int, typer.Option(help="Prosumers and consumers in the community.")] = 1000,
    slots: Annotated[int, typer.Option(help="Trading slots to run (24 = one day).")] = 24,
    seed: Annotated[int, typer.Option(help="Seed: same seed and engine, same ledger.")] = 0,
    engine: Annotated[str, typer.Option(help="task (a coroutine per agent) or shard.")] = "task",
    shards: Annotated[int, typer.Option(help="Dispatchers for the shard engine.")] = 1,
    strategy: Annotated[
        str,
        typer.Option(
            help="boulware, linear, conceder, mixed (per agent), or learned:POLICY.pt (a policy"
            " from `negotiator train` sets limits and quantities)."
        ),
    ] = "mixed",
    learned_share: Annotated[
        float | None,
        typer.Option(help="learned:...: share of the members using it (default: as trained)."),
    ] = None,
    max_rounds: Annotated[int, typer.Option(help="Offers per negotiation, at most.")] = 10,
    max_in_flight: Annotated[int, typer.Option(help="Negotiations open at once.")] = 500,
    max_under_way: Annotated[
        int, typer.Option(help="Task engine: negotiations begun at once (0: all in flight).")
    ] = 16,
    deadline_ms: Annotated[float, typer.Option(help="Wall-clock limit per negotiation.")] = 5000.0,
    slots_per_day: Annotated[int, typer.Option(help="Slots in a day.")] = 24,
    ledger: Annotated[
        Path | None, typer.Option(help="SQLite ledger file (a temporary file if omitted).")
    ] = None,
    rail: Annotated[
        str, typer.Option(help="lightning (simulated network) or inprocess (plain balances).")
    ] = "lightning",
    hubs: Annotated[int, typer.Option(help="Lightning service providers (hub nodes).")] = 4,
    placement: Annotated[
        str, typer.Option(help="node: a node per agent; hub: accounts on hub nodes.")
    ] = "node",
    cln: Annotated[
        list[str] | None,
        typer.Option(help="--rail cln: a node as NAME=SOCKET (lightning-rpc path); repeat."),
    ] = None,
    cln_dir: Annotated[
        Path | None,
        typer.Option(help="--rail cln: every DIR/<name>/regtest/lightning-rpc is a node."),
    ] = None,
    settlement: Annotated[
        str, typer.Option(help="--rail cln: per_trade or netted (one payment per node pair).")
    ] = "per_trade",
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on 127.0.0.1:PORT (0: any).")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the machine-readable summary here.")
    ] = None,
    scenario: Annotated[
        str | None,
        typer.Option(
            help="An energy scenario: small, default, storage-rich, 10k, or a TOML file. Its"
            " members, days and tariff replace --agents, --slots and --slots-per-day."
        ),
    ] = None,
    baselines: Annotated[
        bool,
        typer.Option(help="With --scenario: also run the naive market and report it beside."),
    ] = True,
    report_dir: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Write the summary and PNG plots (community, prices, latency, mean field)"
            " into this directory; `negotiator report DIR` renders them into one page.",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "warning",
    quiet: Annotated[bool, typer.Option(help="No progress bar or table.")] = False,
    live: Annotated[
        bool,
        typer.Option(
            help="A live view of throughput, latency, prices and payments instead of the"
            " progress bar (plain lines when stdout is not a terminal)."
        ),
    ] = False,
    byzantine: Annotated[
        str | None,
        typer.Option(
            help="Byzantine members: malformed, replay, spam, renege, misreport, counterfeit,"
            " all, absent (they sit out), honest (the control) or ideal-BEHAVIOUR (an ideal"
            " defence against it)."
        ),
    ] = None,
    byzantine_share: Annotated[float, typer.Option(help="Share of Byzantine members.")] = 0.2,
    state: Annotated[
        Path | None,
        typer.Option(
            help="Keep the ledger and a checkpoint after every slot in this directory; after a"
            " crash or kill, `negotiator resume DIR` goes on without paying anything twice."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Shard the community over N worker processes on NATS (--nats)."),
    ] = None,
    nats: Annotated[str | None, typer.Option(help="NATS server URL for --workers.")] = None,
    spawn: Annotated[
        bool, typer.Option(help="--workers: start the workers here (else print how to).")
    ] = True,
    domain: Annotated[
        str,
        typer.Option(
            help="energy (the community, every option above) or logistics (shippers and"
            " carriers trade delivery slots; --scenario names its day: logistics or a TOML)."
        ),
    ] = "energy",
) -> None:
    """Run a simulated market (an energy community by default): negotiate every slot, settle
    every agreement, measure the market against its domain's benchmark."""
    log.configure(log_level)
    if domain != "energy":
        if byzantine or workers or state or cln or cln_dir:
            raise typer.BadParameter(
                "--byzantine, --workers, --state and --rail cln are energy-community options"
            )
        try:
            run = build_domain(
                DomainConfig(
                    domain=domain,
                    scenario=scenario,
                    seed=seed,
                    strategy=strategy,
                    max_rounds=max_rounds,
                    ledger=str(ledger) if ledger else None,
                    rail=rail,
                    hubs=hubs,
                    placement=placement,
                    runtime=RuntimeConfig(engine=engine, shards=shards,
                                          max_in_flight=max_in_flight, deadline_ms=deadline_ms,
                                          max_under_way=max_under_way),
                )
            )  # fmt: skip
        except (ValidationError, ValueError, FileNotFoundError) as exc:
            raise typer.BadParameter(str(exc)) from None
        _execute(run, None, None, quiet, live, metrics_port, json_out, report_dir, False)
        return
    if (workers is None) != (nats is None):
        raise typer.BadParameter("--workers and --nats go together")
    if state is not None and ledger is not None:
        raise typer.BadParameter("--state keeps the ledger in its directory: drop --ledger")
    if state is not None and rail == "cln":
        raise typer.BadParameter(
            "--state needs a rail that lives in this process: real Core Lightning nodes cannot"
            " be rewound to a checkpoint"
        )
    try:
        config = SimulationConfig(
            agents=agents,
            slots=slots,
            slots_per_day=slots_per_day,
            seed=seed,
            strategy=strategy,
            learned_share=learned_share,
            max_rounds=max_rounds,
            ledger=str(StateDir(state).ledger) if state else str(ledger) if ledger else None,
            rail=rail,
            hubs=hubs,
            placement=placement,
            cln_nodes=cln_nodes(cln or [], cln_dir),
            settlement=settlement,
            scenario=scenario,
            byzantine=byzantine,
            byzantine_share=byzantine_share,
            runtime=RuntimeConfig(
                engine=engine,
                shards=shards,
                max_in_flight=max_in_flight,
                max_under_way=max_under_way,
                deadline_ms=deadline_ms,
            ),
        )
    except (ValidationError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    if workers is not None and nats is not None:
        if ledger is not None or live or report_dir is not None:
            raise typer.BadParameter(
                "--workers: every shard keeps its own ledger (in --state DIR/shard-I) and the"
                " run ends with one summary; drop --ledger, --live and --report"
            )
        run_cluster(config, workers, nats, spawn=spawn, state=state, quiet=quiet,
                    json_out=json_out, log_level=log_level, metrics_port=metrics_port)  # fmt: skip
        return
    if state is not None:
        try:
            StateDir(state).create(config.model_dump(mode="json"))
        except RecoveryError as exc:
            raise typer.BadParameter(str(exc)) from None
    try:
        sim = build(config)
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from None
    checkpoint = checkpointer(sim, StateDir(state)) if state is not None else None
    _execute(sim, config, checkpoint, quiet, live, metrics_port, json_out, report_dir, baselines)


@app.command()
def resume(
    state: Annotated[Path, typer.Argument(help="The --state directory of a stopped run.")],
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on 127.0.0.1:PORT (0: any).")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the machine-readable summary here.")
    ] = None,
    report_dir: Annotated[
        Path | None, typer.Option("--report", help="Write the summary and plots here.")
    ] = None,
    baselines: Annotated[bool, typer.Option(help="Scenario runs: the naive market too.")] = True,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "warning",
    quiet: Annotated[bool, typer.Option(help="No progress bar or table.")] = False,
    live: Annotated[bool, typer.Option(help="A live view instead of the progress bar.")] = False,
) -> None:
    """Go on with a run started with --state after a crash, a kill or Ctrl-C: restore its last
    checkpoint, run its last slot again, reconcile every agreement journaled since, go on."""
    log.configure(log_level)
    directory = StateDir(state)
    try:
        config = SimulationConfig.model_validate(directory.config())
        sim = build(config)
        saved = directory.load()
    except (RecoveryError, ValidationError, ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from None
    if saved is not None:
        restore(sim, saved)
    replayed = rows_after(sim.ledger, saved.slot if saved is not None else -1)
    if not quiet:
        where = f"after slot {saved.slot}" if saved is not None else "from the start"
        Console().print(
            f"resuming {state} {where}: {len(replayed)} agreements journaled since to reconcile"
        )
    checkpoint = checkpointer(sim, directory, replayed)
    _execute(sim, config, checkpoint, quiet, live, metrics_port, json_out, report_dir, baselines)


def _execute(
    sim: Simulation | DomainRun,
    config: SimulationConfig | None,
    checkpoint: Callable[[int], Awaitable[None]] | None,
    quiet: bool,
    live: bool,
    metrics_port: int | None,
    json_out: Path | None,
    report_dir: Path | None,
    baselines: bool,
) -> None:
    """Run ``sim`` with a progress bar (or live view), then print and write its summary."""
    console = Console(stderr=False)
    slots = sim.slots
    progress = progress_bar(console, quiet)
    task = progress.add_task("slots", total=slots, completed=sim.runtime.slots_done, info="")
    view = LiveView(console, sim.runtime.metrics, slots) if live and not quiet else None

    def on_slot(report: SlotReport) -> None:
        if view is not None:
            view.on_slot(report)
            return
        progress.update(task, advance=1, info=slot_info(report))

    def on_exporter(exporter: Exporter) -> None:
        if not quiet:
            console.print(f"metrics at {exporter.url}")

    async def main(run: Simulation | DomainRun) -> Summary | DomainSummary:
        return await run.run(
            on_slot,
            handle_signals=True,
            metrics_port=metrics_port,
            on_exporter=on_exporter,
            checkpoint=checkpoint,
        )

    options = {"use_uvloop": uvloop_available()}
    with view if view is not None else progress:
        try:
            summary = anyio.run(main, sim, backend="asyncio", backend_options=options)
            trace = sim.trace() if report_dir is not None else None
        except RecoveryError as exc:
            console.print(f"[red]cannot resume:[/red] {exc}")
            raise typer.Exit(1) from None
        finally:
            sim.close()
        del sim  # the baseline builds a second community: free the first one's memory (closing
        gc.collect()  # the run gave its population back to the collector)
        naive = None
        if config and config.scenario is not None and baselines and not summary.run.interrupted:
            progress.update(task, completed=0, description="naive", info="naive baseline")
            baseline = build(config.naive())
            try:
                naive = anyio.run(baseline.run, on_slot, backend="asyncio", backend_options=options)
            finally:
                baseline.close()
    data = summary.to_dict()
    if naive is not None:
        data["naive"] = {k: v for k, v in naive.to_dict().items() if k in _NAIVE_FIELDS}
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(data, indent=2) + "\n")
    if not quiet:
        quality = list(summary.quality) if isinstance(summary, DomainSummary) else ()
        console.print(summary_table(data, quality))
    if report_dir is not None and trace is not None:
        written = report.write(report_dir, data, trace)
        if not quiet:
            names = ", ".join(p.name for p in written)
            console.print(f"report in {report_dir}: {names}; `negotiator report {report_dir}`")
    if summary.run.interrupted:
        sys.exit(130)


_NAIVE_FIELDS = (
    "efficiency",
    "cost_msat",
    "peak_import_wh",
    "peak_reduction",
    "jain_index",
    "price_volatility",
    "self_sufficiency",
    "agreement_rate",
    "savings",
)
"""What the summary reports of the naive baseline, beside the run."""


solve_app = typer.Typer(
    help="Solve a mean-field model, print the solution, plot it.", no_args_is_help=True
)
app.add_typer(solve_app, name="solve")


def _emit(result: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    table = Table(show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for key, value in result.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            for i, row in enumerate(value):
                text = ", ".join(f"{k} {v:.6g}" for k, v in row.items())
                table.add_row(f"{key}[{i}]", text)
        else:
            table.add_row(key, str(value))
    Console().print(table)


@app.command("report")
def report_page(
    directory: Annotated[Path, typer.Argument(help="A directory written by simulate --report.")],
) -> None:
    """Render a run's report directory into one HTML page (DIR/index.html)."""
    try:
        page = report.render(directory)
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc)) from None
    print(page)


@solve_app.command("lq")
def solve_lq(
    types: Annotated[int, typer.Option(help="Agent types (parameters drawn with --seed).")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the types' parameters.")] = 0,
    steps: Annotated[int, typer.Option(help="Time steps.")] = 96,
    horizon: Annotated[float, typer.Option(help="Horizon T.")] = 1.0,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG of the mean paths.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The typed linear-quadratic mean-field-type game: Riccati, mean paths, values."""
    if types < 1 or steps < 1 or horizon <= 0:
        raise typer.BadParameter("types and steps at least 1, horizon positive")
    _emit(lq_report(types, seed, steps, horizon, plot), json_out)


@solve_app.command("mfg")
def solve_mfg(
    game: Annotated[str, typer.Option(help="beach-bar or meeting.")] = "beach-bar",
    algorithm: Annotated[str, typer.Option(help="fictitious-play, omd or fixed-point.")] = (
        "fictitious-play"
    ),
    iterations: Annotated[int, typer.Option(help="Solver iterations.")] = 100,
    horizon: Annotated[int, typer.Option(help="Finite game: last decision time T.")] = 10,
    states: Annotated[int, typer.Option(help="Finite game: positions on the beach.")] = 20,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG of the solution.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """A mean-field game: exploitability and the equilibrium distribution."""
    if iterations < 1:
        raise typer.BadParameter("at least one iteration")
    try:
        result = mfg_report(game, algorithm, iterations, horizon, states, plot)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    _emit(result, json_out)


@app.command()
def train(
    algo: Annotated[str, typer.Option(help="mf-ac (actor-critic) or mf-maddpg.")] = "mf-ac",
    scenario: Annotated[str, typer.Option(help="Energy scenario to train on.")] = "small",
    days: Annotated[int, typer.Option(help="Training days (fresh realisations).")] = 40,
    seed: Annotated[int, typer.Option(help="Seed of the networks and the training days.")] = 0,
    share: Annotated[
        float, typer.Option(help="Share of the members learning; the rest trade classically.")
    ] = 0.5,
    out: Annotated[Path, typer.Option(help="Where to write the policy.")] = Path("policy.pt"),
    curve: Annotated[
        Path | None, typer.Option(help="Learning-curve PNG (default: beside --out).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Train a shared policy on the market environment; simulate with learned:POLICY.pt."""
    from agents.training import ALGOS, plot_curve, train_policy  # torch: only when training

    if algo not in ALGOS:
        raise typer.BadParameter(f"unknown algorithm {algo!r}; choose from {list(ALGOS)}")
    if days < 1:
        raise typer.BadParameter("train for at least one day")
    progress = progress_bar(Console(stderr=True), quiet, "day")
    task = progress.add_task("days", total=days, info="")

    def on_day(day: int, reward: float) -> None:
        progress.update(task, advance=1, info=f"{reward:8.1f} sat/member")

    try:
        with progress:
            policy, summary = train_policy(algo, scenario, days, seed, share=share, on_day=on_day)
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    policy.save(out)
    png = curve or out.with_suffix(".png")
    plot_curve(policy, png, summary["classic_reward"], summary["validation"])
    summary.update(policy=str(out), curve=str(png))
    _emit(summary, json_out)


app.add_typer(regtest_app, name="regtest")
app.command()(worker)

if __name__ == "__main__":  # pragma: no cover
    app()
