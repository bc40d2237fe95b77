"""The regtest driver without binaries: topologies, and bitcoind's JSON-RPC as recorded."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from negotiator.cli import app
from payments.regtest import BitcoinRpc, Regtest, RegtestError, pairs


def test_topologies_say_who_opens_a_channel_to_whom() -> None:
    names = ["alice", "bob", "carol", "dave"]
    assert pairs(names, "line") == [("alice", "bob"), ("bob", "carol"), ("carol", "dave")]
    assert pairs(names, "ring")[-1] == ("dave", "alice") and len(pairs(names, "ring")) == 4
    assert pairs(names, "hub") == [("alice", "bob"), ("alice", "carol"), ("alice", "dave")]
    with pytest.raises(ValueError, match="topology"):
        pairs(names, "mesh")
    with pytest.raises(ValueError, match="two nodes"):
        pairs(["alice"], "line")


class FakeBitcoind(BaseHTTPRequestHandler):
    """Answers as bitcoind v29.4 did in ../shared/cln-transcripts (bitcoind_rpc.json)."""

    height = 0
    seen: ClassVar[list[tuple[str, str, list[Any]]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        method, params = body["method"], body["params"]
        FakeBitcoind.seen.append((self.path, method, params))
        status, answer = 200, {"result": None, "error": None, "id": body["id"]}
        if self.headers["Authorization"] != "Basic cnR1c2VyOnJ0cGFzcw==":  # rtuser:rtpass
            status, answer = 401, {}
        elif method == "getblockcount":
            answer["result"] = FakeBitcoind.height
        elif method == "createwallet":
            answer["result"] = {"name": params[0]}
        elif method == "getnewaddress":
            answer["result"] = "bcrt1q8m7vmxdwtz82c30q3frj2340krv3wr53xw23cz"
        elif method == "generatetoaddress":
            FakeBitcoind.height += params[0]
            answer["result"] = ["00" * 32] * params[0]
        elif method == "sendtoaddress":
            status = 500
            answer["error"] = {"code": -5, "message": f"Invalid Bitcoin address: {params[0]}"}
        else:
            status = 404
            answer["error"] = {"code": -32601, "message": "Method not found"}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def bitcoind() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeBitcoind)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeBitcoind.height, FakeBitcoind.seen = 0, []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_bitcoind_calls_answer_and_errors_carry_code_and_message(bitcoind: str) -> None:
    rpc = BitcoinRpc(bitcoind, "rtuser", "rtpass")
    assert rpc.call("getblockcount") == 0
    with pytest.raises(RegtestError, match="-5 Invalid Bitcoin address: nope"):
        rpc.call("sendtoaddress", "nope", 1, wallet="miner")
    with pytest.raises(RegtestError, match="-32601 Method not found"):
        rpc.call("nosuchmethod")
    with pytest.raises(RegtestError, match="HTTP 401"):
        BitcoinRpc(bitcoind, "rtuser", "wrong").call("getblockcount")
    with pytest.raises(RegtestError, match="getblockcount"):
        BitcoinRpc("http://127.0.0.1:1", "u", "p", timeout_s=2).call("getblockcount")


def test_mining_uses_the_miner_wallet(bitcoind: str) -> None:
    network = Regtest(BitcoinRpc(bitcoind, "rtuser", "rtpass"), {})
    network.ensure_wallet()
    assert network.mine(101) == 101
    assert ("/wallet/miner", "getnewaddress", []) in FakeBitcoind.seen
    assert ("/", "generatetoaddress", [101, "bcrt1q8m7vmxdwtz82c30q3frj2340krv3wr53xw23cz"]) in (
        FakeBitcoind.seen
    )
    with pytest.raises(ValueError):
        network.mine(0)
    result = CliRunner().invoke(app, ["regtest", "mine", "6", "--bitcoin-url", bitcoind])
    assert result.exit_code == 0 and "height 107" in result.output


def test_regtest_commands_need_their_nodes() -> None:
    result = CliRunner().invoke(app, ["regtest", "status"])
    assert result.exit_code == 2 and "--cln" in result.output
    result = CliRunner().invoke(app, ["regtest", "bootstrap", "--cln", "a=/x", "--topology", "x"])
    assert result.exit_code == 2 and "topology" in result.output
