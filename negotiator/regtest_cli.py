"""``negotiator regtest ...``: drive a regtest Lightning network (a composition root: it knows
the payments package's regtest driver)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from payments.regtest import TOPOLOGIES, BitcoinRpc, Regtest, RegtestError

regtest_app = typer.Typer(
    help="Drive a regtest Lightning network (bitcoind + Core Lightning nodes).",
    no_args_is_help=True,
)

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

    nodes = cln_nodes(cln or [], cln_dir)
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


def cln_nodes(specs: list[str], directory: Path | None) -> dict[str, str]:
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
