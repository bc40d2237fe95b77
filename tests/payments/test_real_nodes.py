"""Against real lightningd v26.06 and bitcoind v29 (``pytest -m regtest``, binaries on PATH).

The ``regtest_network`` fixture (tests/conftest.py) starts bitcoind and alice, bob, carol on
loopback, bootstraps a line of two balanced 5M sat channels per link, and skips when the
binaries are absent.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from pyln.client import LightningRpc, RpcError
from typer.testing import CliRunner

from negotiator.cli import app
from negotiator.errors import PaymentFailed
from negotiator.settlement import PaymentStatus
from payments.cln import ClnNode, ClnRail

pytestmark = [pytest.mark.regtest, pytest.mark.anyio]

FUNDS = 10**12


def rail(network: Any, **kw: Any) -> ClnRail:
    nodes = [ClnNode(name, network.socket(name)) for name in network.names]
    placement = {agent: agent % len(nodes) for agent in range(30)}
    return ClnRail(nodes, placement, accounts=dict.fromkeys(placement, FUNDS), **kw)


def test_bootstrap_gave_three_nodes_routable_channels(regtest_network: Any) -> None:
    status = regtest_network.regtest().status()
    assert set(status["nodes"]) == {"alice", "bob", "carol"}
    for node in status["nodes"].values():
        assert node["version"].startswith("v26.06")
        assert {c["state"] for c in node["channels"]} == {"CHANNELD_NORMAL"}
    assert [len(status["nodes"][n]["channels"]) for n in ("alice", "bob", "carol")] == [2, 4, 2]
    gossip = LightningRpc(regtest_network.socket("alice")).listchannels()["channels"]
    assert len(gossip) >= 8  # both directions of four channels


async def test_invoice_and_xpay_over_two_hops(regtest_network: Any) -> None:
    alice = LightningRpc(regtest_network.socket("alice"))
    carol_id = LightningRpc(regtest_network.socket("carol")).getinfo()["id"]
    r = rail(regtest_network)
    invoice = await r.create_invoice(2, 1_000_000, "two-hops", "energy")  # alice -> carol
    result = await r.pay(0, invoice)
    assert hashlib.sha256(bytes.fromhex(result.preimage)).hexdigest() == invoice.payment_hash
    assert result.fee_msat == 1 + 10 * 1_000_000 // 1_000_000  # bob: base 1 msat + 10 ppm
    pays = alice.listpays(payment_hash=invoice.payment_hash)["pays"]
    assert [p["status"] for p in pays] == ["complete"] and pays[0]["destination"] == carol_id


async def test_a_payment_larger_than_one_channel_is_split(regtest_network: Any) -> None:
    r = rail(regtest_network)
    invoice = await r.create_invoice(2, 3_500_000_000, "multi-part", "")  # 3.5M sat, 2.5M a side
    result = await r.pay(0, invoice)
    assert hashlib.sha256(bytes.fromhex(result.preimage)).hexdigest() == invoice.payment_hash
    parts = LightningRpc(regtest_network.socket("alice")).listsendpays(
        payment_hash=invoice.payment_hash
    )["payments"]
    assert sum(1 for p in parts if p["status"] == "complete") >= 2


async def test_an_expired_invoice_is_refused(regtest_network: Any) -> None:
    r = rail(regtest_network, invoice_expiry_s=1)
    invoice = await r.create_invoice(2, 10_000, "expiring", "")
    await anyio.sleep(2.5)
    with pytest.raises(PaymentFailed) as info:
        await r.pay(0, invoice)
    assert info.value.reason == "expired"  # xpay 207


async def test_a_duplicate_attempt_makes_no_second_payment(regtest_network: Any) -> None:
    first = rail(regtest_network, namespace="dup-test")
    invoice = await first.create_invoice(2, 20_000, "agreement-1", "")
    await first.pay(0, invoice)
    again = rail(regtest_network, namespace="dup-test")
    same = await again.create_invoice(2, 20_000, "agreement-1", "")  # invoice 900: reused
    assert same.payment_hash == invoice.payment_hash
    await again.pay(0, same)  # xpay 219: looked up, not paid again
    alice = LightningRpc(regtest_network.socket("alice"))
    assert len(alice.listpays(payment_hash=invoice.payment_hash)["pays"]) == 1
    with pytest.raises(RpcError) as info:
        alice.xpay(invstring=invoice.request)
    assert info.value.error["code"] == 219


async def test_a_node_killed_during_a_batch_pays_nothing_twice_and_explains_the_rest(
    regtest_network: Any,
) -> None:
    r = rail(regtest_network, timeout_s=20, concurrency=4)
    invoices = [await r.create_invoice(2, 10_000, f"crash-{i}", "") for i in range(20)]
    outcomes: dict[str, str] = {}

    async def pay(i: int) -> None:
        try:
            await r.pay(0 if i % 2 else 3, invoices[i])  # agents 0 and 3 are on alice
            outcomes[invoices[i].payment_hash] = "settled"
        except PaymentFailed as exc:
            outcomes[invoices[i].payment_hash] = exc.reason

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(pay, i)
        await anyio.sleep(0.5)
        regtest_network.kill("alice")
    regtest_network.start_node("alice")
    deadline = time.monotonic() + 60
    alice = LightningRpc(regtest_network.socket("alice"))
    while time.monotonic() < deadline:  # reconnected, and nothing in flight any more
        channels = alice.listpeerchannels()["channels"]
        pending = [p for p in alice.listpays()["pays"] if p["status"] == "pending"]
        if all(c.get("peer_connected") for c in channels) and not pending:
            break
        await anyio.sleep(0.5)
    paid: dict[str, int] = {}
    for p in alice.listpays()["pays"]:
        if p["status"] == "complete":
            paid[p["payment_hash"]] = paid.get(p["payment_hash"], 0) + 1
    assert all(n == 1 for n in paid.values())  # nothing paid twice
    for invoice in invoices:
        outcome = outcomes[invoice.payment_hash]
        assert outcome in {"settled", "unreconciled", "not_sent", "payment_failed", "pending"}
        if outcome == "settled":
            assert invoice.payment_hash in paid
        truth = await r.lookup(invoice.payment_hash)  # reconciliation after the restart
        assert (truth is PaymentStatus.COMPLETE) == (invoice.payment_hash in paid)


def test_simulate_settles_every_agreement_on_real_nodes(
    regtest_network: Any, tmp_path: Path
) -> None:
    out = tmp_path / "cln.json"
    nodes = [f"--cln={name}={regtest_network.socket(name)}" for name in regtest_network.names]
    args = ["simulate", "--agents", "200", "--slots", "2", "--slots-per-day", "3"]
    args += ["--quiet", "--json", str(out)]  # the second slot is 8:00-16:00: PV surplus
    result = CliRunner().invoke(app, [*args, "--rail", "cln", *nodes])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["rail"] == "cln" and data["settled"] == data["agreements"] > 0
    assert data["failed_settlements"] == 0
