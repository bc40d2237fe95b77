"""The ``negotiator`` command line (composition root, with negotiator.simulation)."""

from __future__ import annotations

import gc
import importlib.util
import json
import sys
from pathlib import Path
from typing import Annotated

import anyio
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from market.reports import lq_report, mfg_report
from negotiator import log, report
from negotiator.live import LiveView
from negotiator.metrics import Exporter
from negotiator.runtime import RuntimeConfig, SlotReport
from negotiator.simulation import Simulation, SimulationConfig, Summary, build
from negotiator.tables import summary_table
from payments.regtest import TOPOLOGIES, BitcoinRpc, Regtest, RegtestError

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
) -> None:
    """Run a simulated energy community: negotiate every slot, settle every agreement."""
    log.configure(log_level)
    console = Console(stderr=False)
    try:
        config = SimulationConfig(
            agents=agents,
            slots=slots,
            slots_per_day=slots_per_day,
            seed=seed,
            strategy=strategy,
            learned_share=learned_share,
            max_rounds=max_rounds,
            ledger=str(ledger) if ledger else None,
            rail=rail,
            hubs=hubs,
            placement=placement,
            cln_nodes=_cln_nodes(cln or [], cln_dir),
            settlement=settlement,
            scenario=scenario,
            runtime=RuntimeConfig(
                engine=engine,
                shards=shards,
                max_in_flight=max_in_flight,
                deadline_ms=deadline_ms,
            ),
        )
    except (ValidationError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        sim = build(config)
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from None
    slots = sim.community.spec.slots
    progress = Progress(
        TextColumn("[bold]slot"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
    )
    task = progress.add_task("slots", total=slots, info="")
    view = LiveView(console, sim.runtime.metrics, slots) if live and not quiet else None

    def on_slot(report: SlotReport) -> None:
        if view is not None:
            view.on_slot(report)
            return
        info = f"{report.negotiations} negotiations, {report.agreements} agreed"
        progress.update(task, advance=1, info=info)

    def on_exporter(exporter: Exporter) -> None:
        if not quiet:
            console.print(f"metrics at {exporter.url}")

    async def main(run: Simulation) -> Summary:
        return await run.run(
            on_slot, handle_signals=True, metrics_port=metrics_port, on_exporter=on_exporter
        )

    options = {"use_uvloop": uvloop_available()}
    with view if view is not None else progress:
        try:
            summary = anyio.run(main, sim, backend="asyncio", backend_options=options)
            trace = sim.trace() if report_dir is not None else None
        finally:
            sim.close()
        del sim  # the baseline builds a second community: free the first one's memory (the
        gc.unfreeze()  # runtime froze it out of the collector's sight; its cycles go now)
        gc.collect()
        naive = None
        if scenario is not None and baselines and not summary.run.interrupted:
            progress.update(task, completed=0, description="naive", info="naive baseline")
            baseline = build(config.naive())
            try:
                naive = anyio.run(baseline.run, on_slot, backend="asyncio", backend_options=options)
            finally:
                baseline.close()
    data = summary.to_dict()
    if naive is not None:
        data["naive"] = {
            k: v
            for k, v in naive.to_dict().items()
            if k
            in (
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
        }
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(data, indent=2) + "\n")
    if not quiet:
        console.print(summary_table(data))
    if report_dir is not None and trace is not None:
        written = report.write(report_dir, data, trace)
        if not quiet:
            names = ", ".join(p.name for p in written)
            console.print(f"report in {report_dir}: {names}; `negotiator report {report_dir}`")
    if summary.run.interrupted:
        sys.exit(130)


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
    progress = Progress(
        TextColumn("[bold]day"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=quiet,
    )
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


regtest_app = typer.Typer(
    help="Drive a regtest Lightning network (bitcoind + Core Lightning nodes).",
    no_args_is_help=True,
)
app.add_typer(regtest_app, name="regtest")

_BitcoinUrl = Annotated[str, typer.Option(help="bitcoind JSON-RPC URL.")]
_RpcUser = Annotated[str, typer.Option(help="bitcoind RPC user.")]
_RpcPassword = Annotated[str, typer.Option(help="bitcoind RPC password.")]
_Cln = Annotated[
    list[str] | None, typer.Option(help="A node as NAME=SOCKET (lightning-rpc path); repeat.")
]
_ClnDir = Annotated[
    Path | None, typer.Option(help="Every DIR/<name>/regtest/lightning-rpc is a node.")
]


def _network(url: str, user: str, password: str, cln: list[str] | None, cln_dir: Path | None,
             addresses: list[str] | None = None) -> Regtest:  # fmt: skip
    from pyln.client import LightningRpc

    nodes = _cln_nodes(cln or [], cln_dir)
    if not nodes:
        raise typer.BadParameter("name the nodes: --cln NAME=SOCKET (repeat) or --cln-dir DIR")
    peers = {}
    for spec in addresses or []:
        name, sep, where = spec.partition("=")
        if not sep or ":" not in where:
            raise typer.BadParameter(f"--address wants NAME=HOST:PORT, got {spec!r}")
        peers[name] = where
    console = Console(stderr=True)
    return Regtest(
        BitcoinRpc(url, user, password),
        {name: LightningRpc(path) for name, path in nodes.items()},
        addresses=peers,
        log=lambda message: console.print(f"[dim]{message}[/dim]"),
    )


@regtest_app.command("bootstrap")
def regtest_bootstrap(
    bitcoin_url: _BitcoinUrl = "http://127.0.0.1:18443",
    rpc_user: _RpcUser = "rtuser",
    rpc_password: _RpcPassword = "rtpass",
    cln: _Cln = None,
    cln_dir: _ClnDir = None,
    topology: Annotated[str, typer.Option(help="line, ring or hub.")] = "line",
    capacity_sat: Annotated[int, typer.Option(help="Capacity of every channel.")] = 5_000_000,
    push_ratio: Annotated[float, typer.Option(help="Share pushed to the peer at open.")] = 0.5,
    address: Annotated[
        list[str] | None,
        typer.Option(help="NAME=HOST:PORT peers use to reach a node (compose: service names)."),
    ] = None,
) -> None:
    """Fund the nodes, open channels in a topology, and wait until payments can route."""
    if topology not in TOPOLOGIES:
        raise typer.BadParameter(f"topology: choose one of {', '.join(TOPOLOGIES)}")
    network = _network(bitcoin_url, rpc_user, rpc_password, cln, cln_dir, address)
    try:
        opened = network.bootstrap(topology, capacity_sat=capacity_sat, push_ratio=push_ratio)
    except RegtestError as exc:
        Console(stderr=True).print(f"[red]bootstrap failed:[/red] {exc}")
        raise typer.Exit(1) from None
    Console().print(f"{len(opened)} channels opened; the network routes payments")


@regtest_app.command("status")
def regtest_status(
    bitcoin_url: _BitcoinUrl = "http://127.0.0.1:18443",
    rpc_user: _RpcUser = "rtuser",
    rpc_password: _RpcPassword = "rtpass",
    cln: _Cln = None,
    cln_dir: _ClnDir = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Block height, nodes, channels and balances."""
    network = _network(bitcoin_url, rpc_user, rpc_password, cln, cln_dir)
    try:
        status = network.status()
    except RegtestError as exc:
        Console(stderr=True).print(f"[red]status failed:[/red] {exc}")
        raise typer.Exit(1) from None
    if json_out:
        print(json.dumps(status, indent=2))
        return
    table = Table(title=f"regtest at block {status['blockheight']}")
    for column in ("node", "channel", "state", "capacity sat", "ours sat", "spendable sat"):
        table.add_column(column)
    for name, node in status["nodes"].items():
        for ch in node["channels"] or [{}]:
            table.add_row(
                name,
                str(ch.get("short_channel_id", "-")),
                str(ch.get("state", "no channel")),
                f"{ch.get('total_msat', 0) // 1000:,}",
                f"{ch.get('to_us_msat', 0) // 1000:,}",
                f"{ch.get('spendable_msat', 0) // 1000:,}",
            )
    Console().print(table)


@regtest_app.command("mine")
def regtest_mine(
    blocks: Annotated[int, typer.Argument(help="Blocks to mine.")] = 1,
    bitcoin_url: _BitcoinUrl = "http://127.0.0.1:18443",
    rpc_user: _RpcUser = "rtuser",
    rpc_password: _RpcPassword = "rtpass",
) -> None:
    """Mine blocks to the miner wallet."""
    network = Regtest(BitcoinRpc(bitcoin_url, rpc_user, rpc_password), {})
    try:
        network.ensure_wallet()
        height = network.mine(blocks)
    except (RegtestError, ValueError) as exc:
        Console(stderr=True).print(f"[red]mine failed:[/red] {exc}")
        raise typer.Exit(1) from None
    Console().print(f"height {height}")


def _cln_nodes(specs: list[str], directory: Path | None) -> dict[str, str]:
    """Nodes from ``NAME=SOCKET`` options and from a directory of lightning-dirs."""
    nodes: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise typer.BadParameter(f"--cln wants NAME=SOCKET, got {spec!r}")
        nodes[name] = path
    if directory is not None:
        found = sorted(directory.glob("*/regtest/lightning-rpc"))
        if not found:
            raise typer.BadParameter(f"no */regtest/lightning-rpc under {directory}")
        for socket in found:
            nodes[socket.parent.parent.name] = str(socket)
    return nodes


if __name__ == "__main__":  # pragma: no cover
    app()
