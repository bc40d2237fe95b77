"""A test double of lightningd's JSON-RPC unix socket, built from the recorded v26.06.6 traffic.

Several fake nodes share one simulated Lightning network (``payments.LightningNetwork``), each
serving ``<dir>/<name>/regtest/lightning-rpc`` with the framing the transcripts show: a stream of
JSON objects in, one compact object plus ``"\\n\\n"`` out per request, the id echoed byte for byte,
responses written as commands complete (not in request order), errors as ``{code, message}`` with
the recorded codes and messages. The adapter's real code path through pyln-client runs against it.

Fault injection for the reconciliation tests: ``delay_s`` (xpay takes that long), ``hang_up``
(xpay completes, then the connection is closed without an answer), ``kill(name)`` (the socket
disappears; calls fail as with a dead lightningd) and ``revive(name)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from coincurve import PublicKey

from negotiator.errors import InvoiceError, PaymentFailed
from payments import Chain, ChannelGraph, LightningNetwork, invoices
from payments.graph import node_secret

VERSION = "v26.06.6"
DEFAULT_EXPIRY = 604_800
MIN_FINAL_CLTV = 10


class RpcFailure(Exception):
    """An error answer: ``{"code": code, "message": message}``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Node:
    def __init__(self, name: str, index: int, root: Path) -> None:
        self.name = name
        self.index = index
        self.dir = root / name
        self.socket = self.dir / "regtest" / "lightning-rpc"
        self.invoices: dict[str, dict[str, Any]] = {}  # by label
        self.pays: list[dict[str, Any]] = []
        self.sendpays: list[dict[str, Any]] = []
        self.server: socketserver.ThreadingUnixStreamServer | None = None
        self.thread: threading.Thread | None = None
        self.hang_up = False


class ClnDouble:
    """Fake lightningd nodes on a shared simulated network (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        names: Sequence[str] = ("alice", "bob", "carol"),
        *,
        topology: str = "line",
        capacity_msat: int = 5_000_000_000,
        push_msat: int = 0,
        seed: int = 0,
    ) -> None:
        self.root = Path(root)
        graph = ChannelGraph()
        self.nodes = [_Node(name, i, self.root) for i, name in enumerate(names)]
        for node in self.nodes:
            graph.add_node(node.name, secret=node_secret(seed, f"cln-double/{node.name}"))
        pairs = list(zip(range(len(names)), range(1, len(names)), strict=False))
        if topology == "ring" and len(names) > 2:
            pairs.append((len(names) - 1, 0))
        elif topology == "hub":
            pairs = [(0, i) for i in range(1, len(names))]
        for a, b in pairs:  # funded by the opener, who may push some to the peer (push_msat)
            graph.open_channel(a, b, capacity_msat - push_msat, push_msat, scid=f"103x{a + 1}x0")
        self.network = LightningNetwork(graph, Chain())
        self.graph = graph
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.delay_s = 0.0
        self.calls: list[tuple[str, str]] = []
        self._index = 0

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> ClnDouble:
        for node in self.nodes:
            self._serve(node)
        return self

    def close(self) -> None:
        for node in self.nodes:
            self.kill(node.name)

    def __enter__(self) -> ClnDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def socket(self, name: str) -> str:
        return str(self.node(name).socket)

    def node(self, name: str) -> _Node:
        return next(n for n in self.nodes if n.name == name)

    def node_id(self, name: str) -> str:
        return self.graph.nodes[self.node(name).index].node_id

    def kill(self, name: str) -> None:
        """Stop answering, as a killed lightningd: the socket file goes away."""
        node = self.node(name)
        if node.server is not None:
            node.server.shutdown()
            node.server.server_close()
            node.server = None
        if node.socket.exists():
            node.socket.unlink()

    def revive(self, name: str) -> None:
        self._serve(self.node(name))

    def hang_up_after_xpay(self, name: str, on: bool = True) -> None:
        """xpay completes on the network, then the connection closes without an answer."""
        self.node(name).hang_up = on

    def _serve(self, node: _Node) -> None:
        node.socket.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(node.socket.parent, 0o700)
        double = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                double._connection(node, self.request)

        server = socketserver.ThreadingUnixStreamServer(str(node.socket), Handler)
        server.daemon_threads = True
        os.chmod(node.socket, 0o600)
        node.server = server
        node.thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        node.thread.start()

    # -- framing -------------------------------------------------------------------------------

    def _connection(self, node: _Node, sock: socket.socket) -> None:
        decoder = json.JSONDecoder()
        buf = ""
        write = threading.Lock()
        workers: list[threading.Thread] = []
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk.decode()
            while "}" in buf:
                text = buf.lstrip()
                try:
                    obj, end = decoder.raw_decode(text)
                except json.JSONDecodeError:
                    if text.count("{") > text.count("}"):
                        break  # incomplete: wait for more
                    self._send(
                        sock,
                        write,
                        _error(None, -32600, f"Failed to parse RPC JSON response '{text}'"),
                    )
                    return
                buf = text[end:]
                t = threading.Thread(
                    target=self._answer, args=(node, sock, write, obj), daemon=True
                )
                workers.append(t)
                t.start()
        for t in workers:
            t.join(timeout=30)

    def _send(self, sock: socket.socket, write: threading.Lock, response: dict[str, Any]) -> None:
        data = json.dumps(response, separators=(",", ":")) + "\n\n"
        with write, contextlib.suppress(OSError):
            sock.sendall(data.encode())

    def _answer(
        self, node: _Node, sock: socket.socket, write: threading.Lock, request: Any
    ) -> None:
        if not isinstance(request, dict) or "jsonrpc" not in request:
            self._send(
                sock,
                write,
                _error(None, -32600, 'JSON-RPC message does not contain "jsonrpc" field'),
            )
            return
        if request.get("jsonrpc") != "2.0":
            self._send(
                sock, write, _error(None, -32600, 'jsonrpc: "2.0" must be specified in the request')
            )
            return
        if "id" not in request:
            self._send(sock, write, _error(None, -32600, "No id"))
            return
        rid = request["id"]
        if isinstance(rid, (dict, list)):
            self._send(sock, write, _error(None, -32600, "Expected string/primitive for id"))
            return
        method = request.get("method")
        if method is None:
            self._send(sock, write, _error(rid, -32600, "No method"))
            return
        if not isinstance(method, str):
            self._send(sock, write, _error(rid, -32600, "Expected string for method"))
            return
        if "params" not in request:
            self._send(sock, write, _error(rid, -32600, "No params"))
            return
        params = request["params"]
        if not isinstance(params, (dict, list)):
            self._send(sock, write, _error(rid, -32602, "Expected array or object for params"))
            return
        self.calls.append((node.name, method))
        try:
            result = self._dispatch(node, method, params)
        except RpcFailure as exc:
            self._send(sock, write, _error(rid, exc.code, exc.message))
            return
        if method == "xpay" and node.hang_up:
            sock.shutdown(socket.SHUT_RDWR)
            return
        self._send(sock, write, {"jsonrpc": "2.0", "id": rid, "result": result})

    # -- commands ------------------------------------------------------------------------------

    def _dispatch(self, node: _Node, method: str, params: dict[str, Any] | list[Any]) -> Any:
        handlers: dict[str, Callable[[_Node, dict[str, Any]], Any]] = {
            "getinfo": self._getinfo,
            "invoice": self._invoice,
            "listinvoices": self._listinvoices,
            "waitinvoice": self._waitinvoice,
            "xpay": self._xpay,
            "listpays": self._listpays,
            "listsendpays": self._listsendpays,
            "listpeerchannels": self._listpeerchannels,
            "listfunds": self._listfunds,
            "decode": self._decode,
        }
        if method in ("keysend", "renepay"):
            raise RpcFailure(-32601, f'Command "{method}" is deprecated')
        handler = handlers.get(method)
        if handler is None:
            raise RpcFailure(-32601, f"Unknown command '{method}'")
        if isinstance(params, list):
            raise RpcFailure(-32602, "positional parameters are not supported by this double")
        return handler(node, params)

    def _getinfo(self, node: _Node, p: dict[str, Any]) -> Any:
        for key in p:
            raise RpcFailure(
                -32602,
                f"unknown parameter: {key}, this may be caused by a failure to autodetect"
                " key=value-style parameters. Please try using the -k flag and explicit"
                " key=value pairs of parameters.",
            )
        g = self.graph
        channels = g.channels_of(node.index)
        node_id = self.node_id(node.name)
        return {
            "id": node_id,
            "alias": node.name,
            "color": node_id[:6],
            "num_peers": len(channels),
            "num_pending_channels": 0,
            "num_active_channels": len(channels),
            "num_inactive_channels": 0,
            "address": [],
            "binding": [{"type": "ipv4", "address": "127.0.0.1", "port": 19846 + node.index}],
            "version": VERSION,
            "blockheight": 108 + self.network.chain.height,
            "network": "regtest",
            "fees_collected_msat": 0,
            "lightning-dir": f"{node.dir}/regtest",
        }

    def _invoice(self, node: _Node, p: dict[str, Any]) -> Any:
        amount = p.get("amount_msat")
        if isinstance(amount, str) and amount.endswith("msat") and amount[:-4].isdigit():
            amount = int(amount[:-4])
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise RpcFailure(
                -32602,
                f"amount_msat: should be positive msat or 'any': invalid token '{json.dumps(amount)}'",
            )
        label = str(p["label"])
        with self.lock:
            if label in node.invoices:
                raise RpcFailure(900, f"Duplicate label '{label}'")
            preimage = (
                p.get("preimage")
                or hashlib.sha256(f"{node.name}/{label}/{time.time()}".encode()).hexdigest()
            )
            payment_hash = hashlib.sha256(bytes.fromhex(preimage)).hexdigest()
            secret = hashlib.sha256(f"secret/{payment_hash}".encode()).hexdigest()
            now = int(time.time())
            expiry = int(p.get("expiry") or DEFAULT_EXPIRY)
            key = self.graph.nodes[node.index].key
            bolt11 = invoices.encode(
                key,
                currency="bcrt",
                amount_msat=amount,
                timestamp=now,
                payment_hash=payment_hash,
                payment_secret=secret,
                description=str(p.get("description", "")),
                expiry=expiry,
                min_final_cltv=int(p.get("cltv") or MIN_FINAL_CLTV),
            )
            self._index += 1
            entry = {
                "label": label,
                "bolt11": bolt11,
                "payment_hash": payment_hash,
                "amount_msat": amount,
                "status": "unpaid",
                "description": str(p.get("description", "")),
                "expires_at": now + expiry,
                "created_index": self._index,
                "_preimage": preimage,
            }
            node.invoices[label] = entry
            result: dict[str, Any] = {
                "payment_hash": payment_hash,
                "expires_at": now + expiry,
                "bolt11": bolt11,
                "payment_secret": secret,
                "created_index": self._index,
            }
            if self.graph.inbound(node.index) < amount:
                result["warning_capacity"] = "Insufficient incoming channel capacity to pay invoice"
            return result

    def _public(self, entry: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in entry.items() if not k.startswith("_")}
        if entry["status"] == "unpaid" and time.time() > entry["expires_at"]:
            out["status"] = "expired"
        return out

    def _listinvoices(self, node: _Node, p: dict[str, Any]) -> Any:
        with self.lock:
            found = list(node.invoices.values())
            if "label" in p:
                found = [i for i in found if i["label"] == p["label"]]
            if "payment_hash" in p:
                found = [i for i in found if i["payment_hash"] == p["payment_hash"]]
            return {"invoices": [self._public(i) for i in found]}

    def _waitinvoice(self, node: _Node, p: dict[str, Any]) -> Any:
        with self.changed:
            entry = node.invoices.get(str(p.get("label")))
            if entry is None:
                raise RpcFailure(-1, "Label not found")
            while entry["status"] != "paid":
                remaining = entry["expires_at"] - time.time()
                if remaining <= 0:
                    raise RpcFailure(903, "Invoice expired")
                self.changed.wait(min(remaining, 1.0))
            return self._public(entry)

    def _decode(self, node: _Node, p: dict[str, Any]) -> Any:
        text = str(p.get("string", ""))
        try:
            fields = invoices.decode(text)
        except InvoiceError:
            if text.lower().startswith("ln"):
                raise RpcFailure(
                    -32602, f"string: Bad bech32 string: invalid token '\"{text}\"'"
                ) from None
            raise RpcFailure(
                -32602, f"string: Unparsable string: invalid token '\"{text}\"'"
            ) from None
        return {
            "type": "bolt11 invoice",
            "currency": fields.currency,
            "created_at": fields.timestamp,
            "expiry": fields.expiry,
            "payee": fields.payee,
            "amount_msat": fields.amount_msat,
            "description": fields.description,
            "min_final_cltv_expiry": fields.min_final_cltv,
            "payment_secret": fields.payment_secret,
            "payment_hash": fields.payment_hash,
            "valid": True,
        }

    def _destination(self, node_id: str) -> tuple[_Node, dict[str, Any] | None]:
        for other in self.nodes:
            if self.node_id(other.name) == node_id:
                return other, None
        raise RpcFailure(205, f"Failed: Unknown destination node {node_id}")

    def _xpay(self, node: _Node, p: dict[str, Any]) -> Any:
        if "invstring" not in p:
            raise RpcFailure(-32602, "missing required parameter: invstring")
        try:
            fields = invoices.decode(str(p["invstring"]))
        except InvoiceError:
            raise RpcFailure(-32602, "Invalid bolt11 invoice: Bad bech32 string") from None
        if p.get("amount_msat") is not None:
            raise RpcFailure(-32602, "amount_msat unnecessary")
        if self.delay_s:
            time.sleep(self.delay_s)
        with self.changed:
            late = time.time() - (fields.timestamp + fields.expiry)
            if late > 0:
                raise RpcFailure(207, f"Invoice expired {int(late)} seconds ago")
            dest, _ = self._destination(fields.payee)
            entry = next(
                (i for i in dest.invoices.values() if i["payment_hash"] == fields.payment_hash),
                None,
            )
            if any(
                x["payment_hash"] == fields.payment_hash and x["status"] == "complete"
                for x in node.pays
            ):
                raise RpcFailure(219, "Already paid this invoice successfully")
            if entry is None or entry["status"] == "paid":
                raise RpcFailure(203, "Destination refused the payment")
            amount = fields.amount_msat
            try:
                payment = self.network.send(node.index, dest.index, amount, fields.payment_hash)
            except PaymentFailed:
                out = self.graph.outbound(node.index)
                n = len(self.graph.channels_of(node.index))
                raise RpcFailure(
                    205,
                    "Failed: We could not find a usable set of paths. Total source capacity"
                    f" is only {out}msat (in {n} channels).",
                ) from None
            maxfee = p.get("maxfee")
            if maxfee is not None and payment.fee > int(maxfee):
                self.network.abort(payment)
                raise RpcFailure(206, "Failed: Could not find route without excessive cost")
            self.network.settle(payment, entry["_preimage"])
            now = int(time.time())
            entry.update(
                status="paid",
                paid_at=now,
                amount_received_msat=amount,
                payment_preimage=entry["_preimage"],
                pay_index=len(node.pays) + 1,
            )
            self._index += 1
            sent = amount + payment.fee
            node.pays.append(
                {
                    "bolt11": p["invstring"],
                    "destination": fields.payee,
                    "payment_hash": fields.payment_hash,
                    "status": "complete",
                    "created_at": now,
                    "completed_at": now,
                    "preimage": entry["_preimage"],
                    "amount_msat": amount,
                    "amount_sent_msat": sent,
                    "created_index": self._index,
                    "updated_index": self._index,
                }
            )
            for i, part in enumerate(payment.parts):
                node.sendpays.append(
                    {
                        "created_index": self._index,
                        "id": len(node.sendpays) + 1,
                        "payment_hash": fields.payment_hash,
                        "groupid": 1,
                        "partid": i + 1,
                        "destination": fields.payee,
                        "amount_msat": part.delivered,
                        "amount_sent_msat": part.amounts[0],
                        "created_at": now,
                        "completed_at": now,
                        "status": "complete",
                        "payment_preimage": entry["_preimage"],
                        "bolt11": p["invstring"],
                    }
                )
            self.changed.notify_all()
            return {
                "payment_preimage": entry["_preimage"],
                "amount_msat": amount,
                "amount_sent_msat": sent,
                "failed_parts": payment.attempts - len(payment.parts),
                "successful_parts": len(payment.parts),
            }

    def _listpays(self, node: _Node, p: dict[str, Any]) -> Any:
        with self.lock:
            pays = [
                x
                for x in node.pays
                if all(
                    x.get(k) == v for k, v in p.items() if k in ("bolt11", "payment_hash", "status")
                )
            ]
            return {"pays": pays}

    def _listsendpays(self, node: _Node, p: dict[str, Any]) -> Any:
        with self.lock:
            found = [
                x
                for x in node.sendpays
                if all(
                    x.get(k) == v for k, v in p.items() if k in ("bolt11", "payment_hash", "status")
                )
            ]
            return {"payments": found}

    def _listpeerchannels(self, node: _Node, p: dict[str, Any]) -> Any:
        g = self.graph
        peer = p.get("id")
        if peer is not None:
            try:
                PublicKey(bytes.fromhex(str(peer)))
            except ValueError:
                raise RpcFailure(
                    -32602, f"id: should be a node id: invalid token '\"{peer}\"'"
                ) from None
        out = []
        with self.lock:
            for e in g.adjacency[node.index]:
                c = e >> 1
                if not g.open[c]:
                    continue
                peer_id = g.nodes[g.target[e]].node_id
                if peer is not None and peer != peer_id:
                    continue
                out.append(
                    {
                        "peer_id": peer_id,
                        "peer_connected": True,
                        "state": "CHANNELD_NORMAL",
                        "short_channel_id": g.scid[c],
                        "direction": e & 1,
                        "to_us_msat": g.balance[e],
                        "total_msat": g.capacity[c],
                        "spendable_msat": g.spendable(e),
                        "receivable_msat": g.spendable(e ^ 1),
                        "our_reserve_msat": g.reserve[c],
                        "their_reserve_msat": g.reserve[c],
                        "fee_base_msat": g.base_fee[e],
                        "fee_proportional_millionths": g.fee_ppm[e],
                        "htlcs": [],
                    }
                )
        return {"channels": out}

    def _listfunds(self, node: _Node, p: dict[str, Any]) -> Any:
        channels = self._listpeerchannels(node, {})["channels"]
        return {
            "outputs": [],
            "channels": [
                {
                    "peer_id": c["peer_id"],
                    "connected": True,
                    "state": c["state"],
                    "short_channel_id": c["short_channel_id"],
                    "our_amount_msat": c["to_us_msat"],
                    "amount_msat": c["total_msat"],
                }
                for c in channels
            ],
        }


def _error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}
