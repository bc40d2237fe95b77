"""A regtest Lightning network: bitcoind's JSON-RPC, bootstrapping nodes, and local processes.

:class:`Regtest` drives an existing network (``docker compose up``, or daemons started by hand)
through bitcoind's HTTP JSON-RPC and the nodes' unix sockets, in the sequence verified on real
v26.06.6 + v29.4 (../shared/notes/lightning-docker.md): a miner wallet and 101 blocks; every node
funded from a ``newaddr`` and one block; wait until every node has synced (fundchannel answers
304 while it has not); connect and ``fundchannel`` in the chosen topology (line, ring, hub),
pushing part of each channel to the peer so money can flow both ways; one block, wait for
``CHANNELD_NORMAL``; five more blocks so channels are announced; wait until every node's
``listchannels`` shows both directions of every channel before multi-hop payments.

:class:`LocalRegtest` starts bitcoind and N lightningd from the binaries on PATH (or $BITCOIND,
$LIGHTNINGD, $BITCOIN_CLI) on loopback in a temporary directory, with the options pyln-testing
uses, and stops them by PID: the harness of the ``regtest`` tests and the CLN benchmark.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from negotiator.errors import NegotiatorError

SAT = 1000
TOPOLOGIES = ("line", "ring", "hub")


class RegtestError(NegotiatorError):
    """The regtest network could not be driven (a daemon refused, or a wait timed out)."""


class BitcoinRpc:
    """bitcoind's JSON-RPC over HTTP (1.0 requests, as bitcoin-cli sends them)."""

    def __init__(self, url: str, user: str, password: str, *, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._auth = f"Basic {token}"

    def call(self, method: str, *params: Any, wallet: str | None = None) -> Any:
        """One call; raises RegtestError with bitcoind's code and message on an error."""
        body = json.dumps(
            {"jsonrpc": "1.0", "id": "negotiator", "method": method, "params": params}
        )
        url = f"{self.url}/wallet/{wallet}" if wallet else self.url
        request = urllib.request.Request(
            url,
            data=body.encode(),
            headers={"Authorization": self._auth, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # bitcoind answers errors with HTTP 500 or 404
            try:
                answer = json.loads(exc.read())
            except ValueError:
                answer = {}
            if not isinstance(answer, dict) or not answer.get("error"):
                raise RegtestError(f"bitcoind {method}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise RegtestError(f"bitcoind {method}: {exc}") from None
        error = answer.get("error")
        if error:
            raise RegtestError(f"bitcoind {method}: {error.get('code')} {error.get('message')}")
        return answer["result"]


def pairs(names: Sequence[str], topology: str) -> list[tuple[str, str]]:
    """Which node opens a channel to which: line a-b-c, ring (a line closed), hub (first to all)."""
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown topology {topology!r}: choose one of {', '.join(TOPOLOGIES)}")
    if len(names) < 2:
        raise ValueError("a network needs two nodes at least")
    if topology == "hub":
        return [(names[0], other) for other in names[1:]]
    line = list(itertools.pairwise(names))
    if topology == "ring" and len(names) > 2:
        line.append((names[-1], names[0]))
    return line


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, poll_s: float = 0.25) -> None:
    """Poll ``check`` until it holds; RegtestError naming ``what`` at the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return
        except RegtestError:
            pass
        if time.monotonic() > deadline:
            raise RegtestError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


@dataclass
class Regtest:
    """An existing regtest network: bitcoind plus named Core Lightning nodes."""

    bitcoin: BitcoinRpc
    nodes: Mapping[str, Any]
    """name -> pyln LightningRpc (or anything with ``call(method, params)``)."""
    addresses: Mapping[str, str] = field(default_factory=dict)
    """name -> host:port peers use to reach it (default: the node's own binding)."""
    wallet: str = "miner"
    timeout_s: float = 120.0
    log: Callable[[str], None] = lambda message: None

    def rpc(self, name: str, method: str, **params: Any) -> Any:
        """One call to a node; its RpcError becomes RegtestError with the code and message."""
        try:
            return self.nodes[name].call(method, params)
        except Exception as exc:
            error = getattr(exc, "error", exc)
            raise RegtestError(f"{name} {method}: {error}") from None

    # -- chain -----------------------------------------------------------------------------

    def ensure_wallet(self) -> str:
        """The miner wallet (created or loaded) and one of its addresses."""
        try:
            self.bitcoin.call("createwallet", self.wallet)
        except RegtestError as exc:
            if "already" not in str(exc):
                raise
            try:
                self.bitcoin.call("loadwallet", self.wallet)
            except RegtestError as again:
                if "already loaded" not in str(again):
                    raise
        address: str = self.bitcoin.call("getnewaddress", wallet=self.wallet)
        return address

    def mine(self, blocks: int) -> int:
        """Mine ``blocks`` to the miner wallet; returns the new height."""
        if blocks < 1:
            raise ValueError("mine at least one block")
        address = self.bitcoin.call("getnewaddress", wallet=self.wallet)
        self.bitcoin.call("generatetoaddress", blocks, address)
        height: int = self.bitcoin.call("getblockcount")
        return height

    def wait_synced(self) -> None:
        """Every node at bitcoind's height, with no sync warning (fundchannel answers 304 before)."""
        height = self.bitcoin.call("getblockcount")

        def synced() -> bool:
            for name in self.nodes:
                info = self.rpc(name, "getinfo")
                if info.get("blockheight") != height:
                    return False
                if "warning_bitcoind_sync" in info or "warning_lightningd_sync" in info:
                    return False
            return True

        wait_for(f"nodes to sync to block {height}", synced, self.timeout_s)

    # -- bootstrap ---------------------------------------------------------------------------

    def bootstrap(
        self,
        topology: str = "line",
        *,
        capacity_sat: int = 5_000_000,
        push_ratio: float = 0.5,
        channels: int = 1,
        fund_btc: float = 1.0,
    ) -> list[dict[str, Any]]:
        """Bring a fresh network to routable channels (see the module docstring).

        ``channels`` parallel channels per link (two give multi-part payments a second path).
        Idempotent enough to run twice: nodes already funded are not funded again, peers
        already connected are fine, and channels that exist between a pair count.
        """
        names = list(self.nodes)
        links = pairs(names, topology)
        if self.bitcoin.call("getblockcount") < 101:
            self.ensure_wallet()
            self.log("mining 101 blocks")
            self.mine(101)
        else:
            self.ensure_wallet()
        for name in names:
            opens = sum(1 for a, _ in links if a == name) * channels
            need = int(capacity_sat * opens * 1.1) + 50_000  # + the anchor reserve
            funds = self.rpc(name, "listfunds")
            confirmed = sum(
                int(o["amount_msat"]) for o in funds["outputs"] if o["status"] == "confirmed"
            )
            if confirmed // SAT >= need:
                continue
            address = self.rpc(name, "newaddr")
            address = address.get("p2tr") or address.get("bech32")
            self.log(f"funding {name} with {fund_btc} BTC")
            self.bitcoin.call("sendtoaddress", address, fund_btc, wallet=self.wallet)
        self.mine(1)
        self.wait_synced()
        wait_for(
            "nodes to see their confirmed funds",
            lambda: all(
                any(o["status"] == "confirmed" for o in self.rpc(n, "listfunds")["outputs"])
                for n in names
            ),
            self.timeout_s,
        )
        ids = {name: self.rpc(name, "getinfo")["id"] for name in names}
        opened = []
        for a, b in links:
            have = len(self._channels(a, ids[b]))
            if have >= channels:
                continue
            host, port = self._address(b)
            self.rpc(a, "connect", id=ids[b], host=host, port=port)
            push = int(capacity_sat * SAT * push_ratio)
            for _ in range(channels - have):
                self.log(f"{a} opens {capacity_sat} sat to {b} (pushing {push // SAT} sat)")
                opened.append(
                    self.rpc(a, "fundchannel", id=ids[b], amount=capacity_sat, push_msat=push)
                )
                self.mine(1)  # confirm the funding before the next one spends the change
                self.wait_synced()
        self.mine(1)
        self.wait_synced()
        wait_for(
            "channels to reach CHANNELD_NORMAL",
            lambda: all(
                [c["state"] for c in self._channels(a, ids[b])] == ["CHANNELD_NORMAL"] * channels
                for a, b in links
            ),
            self.timeout_s,
        )
        self.mine(5)  # six confirmations in all: channels are announced
        self.wait_synced()
        wait_for(
            "gossip: both directions of every channel at every node",
            lambda: all(
                len(self.rpc(n, "listchannels")["channels"]) >= 2 * len(links) * channels
                for n in names
            ),
            self.timeout_s,
            poll_s=0.5,
        )
        return opened

    def _channels(self, node: str, peer_id: str) -> list[dict[str, Any]]:
        channels = self.rpc(node, "listpeerchannels", id=peer_id)["channels"]
        return [c for c in channels if str(c["state"]).startswith("CHANNELD")]

    def _address(self, name: str) -> tuple[str, int]:
        if name in self.addresses:
            host, _, port = self.addresses[name].rpartition(":")
            return host, int(port)
        binding = self.rpc(name, "getinfo")["binding"][0]
        return str(binding["address"]), int(binding["port"])

    def status(self) -> dict[str, Any]:
        """Height, and per node its id, channels (state, capacity, ours) and on-chain funds."""
        out: dict[str, Any] = {"blockheight": self.bitcoin.call("getblockcount"), "nodes": {}}
        for name in self.nodes:
            info = self.rpc(name, "getinfo")
            channels = self.rpc(name, "listpeerchannels")["channels"]
            funds = self.rpc(name, "listfunds")["outputs"]
            out["nodes"][name] = {
                "id": info["id"],
                "blockheight": info["blockheight"],
                "version": info.get("version"),
                "onchain_msat": sum(int(o["amount_msat"]) for o in funds),
                "channels": [
                    {
                        "peer": c["peer_id"][:16],
                        "short_channel_id": c.get("short_channel_id"),
                        "state": c["state"],
                        "total_msat": int(c["total_msat"]),
                        "to_us_msat": int(c["to_us_msat"]),
                        "spendable_msat": int(c.get("spendable_msat", 0)),
                    }
                    for c in channels
                ],
            }
        return out


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def binaries() -> dict[str, str] | None:
    """bitcoind, bitcoin-cli and lightningd from $BITCOIND / $BITCOIN_CLI / $LIGHTNINGD or PATH."""
    found = {
        name: os.environ.get(env) or shutil.which(name)
        for name, env in (
            ("bitcoind", "BITCOIND"),
            ("bitcoin-cli", "BITCOIN_CLI"),
            ("lightningd", "LIGHTNINGD"),
        )
    }
    if not all(found.values()):
        return None
    return {k: str(v) for k, v in found.items()}


class LocalRegtest:
    """bitcoind and ``names`` lightningd processes on loopback, in a temporary directory."""

    USER, PASSWORD = "rtuser", "rtpass"

    def __init__(self, names: Sequence[str] = ("alice", "bob", "carol")) -> None:
        found = binaries()
        if found is None:
            raise RegtestError("bitcoind, bitcoin-cli and lightningd are not on PATH")
        self.bin = found
        self.names = list(names)
        self.root = Path(tempfile.mkdtemp(prefix="rt"))  # short: unix socket paths are limited
        self.rpc_port = free_port()
        self.ports = {name: free_port() for name in self.names}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def bitcoin(self) -> BitcoinRpc:
        return BitcoinRpc(f"http://127.0.0.1:{self.rpc_port}", self.USER, self.PASSWORD)

    def socket(self, name: str) -> str:
        return str(self.root / name / "regtest" / "lightning-rpc")

    def start(self) -> LocalRegtest:
        datadir = self.root / "bitcoin"
        datadir.mkdir()
        args = [
            self.bin["bitcoind"],
            "-regtest",
            f"-datadir={datadir}",
            "-server=1",
            "-listen=0",
            "-connect=0",
            "-dnsseed=0",
            "-rpcbind=127.0.0.1",
            "-rpcallowip=127.0.0.1",
            f"-rpcport={self.rpc_port}",
            f"-rpcuser={self.USER}",
            f"-rpcpassword={self.PASSWORD}",
            "-fallbackfee=0.00001",
            "-txindex=0",
            "-printtoconsole=0",
            "-rpcworkqueue=64",
            "-rpcthreads=8",
        ]
        self.procs["bitcoind"] = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for("bitcoind's RPC", lambda: self.bitcoin.call("getblockcount") >= 0, 60)
        for name in self.names:
            self.start_node(name)
        return self

    def start_node(self, name: str) -> None:
        """Start (or restart) one lightningd and wait for its socket."""
        lightning_dir = self.root / name
        lightning_dir.mkdir(exist_ok=True)
        args = [
            self.bin["lightningd"],
            "--network=regtest",
            f"--lightning-dir={lightning_dir}",
            f"--bind-addr=127.0.0.1:{self.ports[name]}",
            f"--alias={name}",
            "--log-level=info",
            f"--log-file={lightning_dir / 'log'}",
            f"--bitcoin-cli={self.bin['bitcoin-cli']}",
            f"--bitcoin-datadir={self.root / 'bitcoin'}",
            "--bitcoin-rpcconnect=127.0.0.1",
            f"--bitcoin-rpcport={self.rpc_port}",
            f"--bitcoin-rpcuser={self.USER}",
            f"--bitcoin-rpcpassword={self.PASSWORD}",
            "--developer",
            "--dev-bitcoind-poll=1",
            "--dev-fast-gossip",
        ]
        self.procs[name] = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(f"{name}'s RPC socket", lambda: Path(self.socket(name)).exists(), 60)

    def kill(self, name: str) -> None:
        """kill -9 one daemon (crash tests)."""
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        if name in self.names:
            Path(self.socket(name)).unlink(missing_ok=True)

    def regtest(self, log: Callable[[str], None] = lambda m: None) -> Regtest:
        from pyln.client import LightningRpc

        nodes = {name: LightningRpc(self.socket(name)) for name in self.names}
        return Regtest(self.bitcoin, nodes, log=log)

    def stop(self) -> None:
        """Stop the nodes (``stop``), then bitcoind, then anything left by PID."""
        from pyln.client import LightningRpc

        for name in self.names:
            if name in self.procs and self.procs[name].poll() is None:
                with contextlib.suppress(Exception):  # it may be down already
                    LightningRpc(self.socket(name)).call("stop", {})
        with contextlib.suppress(RegtestError):
            self.bitcoin.call("stop")
        for name, proc in list(self.procs.items()):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            del self.procs[name]
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalRegtest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
