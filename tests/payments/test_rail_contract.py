"""One contract for every rail: the simulated network, ClnRail on the socket double, and ClnRail
on real regtest nodes when their binaries are installed (marked ``regtest``)."""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from negotiator.errors import AlreadyPaid, InvoiceError, PaymentFailed
from negotiator.settlement import PaymentStatus, Rail
from payments import Chain, ChannelGraph, LightningNetwork, Placement, SimulatedLightning
from payments.cln import ClnNode, ClnRail
from payments.graph import node_secret
from tests.payments.cln_double import ClnDouble

pytestmark = pytest.mark.anyio

AGENTS = 6
FUNDS = 1_000_000_000  # msat per agent
PLACEMENT = {agent: agent % 3 for agent in range(AGENTS)}
"""Agents 0 and 3 on the first node, 1 and 4 on the second, 2 and 5 on the third."""


@dataclass
class Subject:
    rail: Rail
    too_big_msat: int
    """An amount no route can carry."""
    expire: Callable[[], None]
    """Make every invoice issued so far expire."""


def simulated(expiry_s: int) -> Subject:
    funding = dict.fromkeys(range(AGENTS), FUNDS)
    graph = ChannelGraph()  # alice - bob - carol, as on the double and the regtest network
    for name in ("alice", "bob", "carol"):
        graph.add_node(name, secret=node_secret(3, name))
    graph.open_channel(0, 1, 5_000_000_000, 0)
    graph.open_channel(1, 2, 5_000_000_000, 0)
    placement = Placement(PLACEMENT, [0, 1, 2])
    now = [time.time()]
    rail = SimulatedLightning(
        LightningNetwork(graph, Chain()),
        placement,
        accounts=funding,
        onchain_fallback=False,
        invoice_expiry_s=expiry_s,
        clock=lambda: now[0],
    )

    def expire() -> None:
        now[0] += expiry_s + 1

    return Subject(rail, 6_000_000_000, expire)


@pytest.fixture(
    params=["simulated", "cln-double", pytest.param("cln-regtest", marks=pytest.mark.regtest)]
)
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    if request.param == "simulated":
        yield simulated(expiry_s=3600)
        return
    if request.param == "cln-regtest":  # real lightningd and bitcoind, when installed
        network = request.getfixturevalue("regtest_network")
        nodes = [ClnNode(name, network.socket(name)) for name in network.names]
        rail = ClnRail(nodes, PLACEMENT, accounts=dict.fromkeys(range(AGENTS), FUNDS), timeout_s=30)
        yield Subject(rail, 12_000_000_000, lambda: time.sleep(2.5))
        return
    with ClnDouble(Path(tempfile.mkdtemp(prefix="cln"))) as double:
        nodes = [ClnNode(n.name, double.socket(n.name)) for n in double.nodes]
        rail = ClnRail(nodes, PLACEMENT, accounts=dict.fromkeys(range(AGENTS), FUNDS), timeout_s=5)
        yield Subject(rail, 6_000_000_000, lambda: time.sleep(1.1))


def proves(preimage: str, payment_hash: str) -> bool:
    return hashlib.sha256(bytes.fromhex(preimage)).hexdigest() == payment_hash


async def test_an_invoice_is_idempotent_by_label(subject: Subject) -> None:
    rail = subject.rail
    first = await rail.create_invoice(2, 250_000, "agreement-1", "energy slot 1")
    assert first.payee == 2 and first.amount_msat == 250_000 and first.request
    assert await rail.create_invoice(2, 250_000, "agreement-1", "energy slot 1") == first
    with pytest.raises(InvoiceError) as info:
        await rail.create_invoice(2, 999, "agreement-1", "")
    assert info.value.reason == "label_reused"
    assert await rail.lookup(first.payment_hash) is PaymentStatus.PENDING


async def test_a_payment_across_nodes_is_proven_by_its_preimage_and_made_once(
    subject: Subject,
) -> None:
    rail = subject.rail
    invoice = await rail.create_invoice(2, 250_000, "agreement-2", "energy")
    before = await rail.balance(0)
    result = await rail.pay(0, invoice)
    assert proves(result.preimage, invoice.payment_hash)
    assert result.amount_msat == 250_000 and result.fee_msat >= 0  # > 0 over two hops
    assert await rail.balance(0) == before - 250_000 - result.fee_msat
    assert await rail.balance(2) == FUNDS + 250_000
    assert await rail.lookup(invoice.payment_hash) is PaymentStatus.COMPLETE
    with pytest.raises(AlreadyPaid):
        await rail.pay(0, invoice)
    assert rail.stats.summary()["outcomes"] == {"succeeded": 1}


async def test_agents_on_one_node_settle_by_internal_transfer(subject: Subject) -> None:
    rail = subject.rail
    invoice = await rail.create_invoice(3, 100_000, "agreement-3", "")  # 0 and 3 share a node
    result = await rail.pay(0, invoice)
    assert proves(result.preimage, invoice.payment_hash) and result.fee_msat == 0
    assert (await rail.balance(0), await rail.balance(3)) == (FUNDS - 100_000, FUNDS + 100_000)


async def test_what_cannot_be_paid_fails_whole_with_a_reason(subject: Subject) -> None:
    rail = subject.rail
    for agent in range(AGENTS):  # enough in the account, too much for the channels
        if isinstance(rail, (ClnRail, SimulatedLightning)):
            rail.accounts[agent] = subject.too_big_msat * 2
    invoice = await rail.create_invoice(2, subject.too_big_msat, "agreement-4", "")
    with pytest.raises(PaymentFailed) as info:
        await rail.pay(0, invoice)
    assert info.value.reason in {"no_route", "insufficient_outbound", "insufficient_inbound"}
    assert await rail.lookup(invoice.payment_hash) is not PaymentStatus.COMPLETE


async def test_unknown_and_expired_invoices_are_refused(subject: Subject) -> None:
    import msgspec

    rail = subject.rail
    invoice = await rail.create_invoice(2, 1_000, "agreement-5", "")
    with pytest.raises(PaymentFailed) as info:
        await rail.pay(0, msgspec.structs.replace(invoice, amount_msat=1))
    assert info.value.reason == "unknown_invoice"
    with pytest.raises(PaymentFailed) as info:
        await rail.pay(99, invoice)
    assert info.value.reason == "unknown_payer"
    if isinstance(rail, ClnRail):  # the double's invoices use the node's clock: a short one
        rail.expiry = 1
    short = await rail.create_invoice(2, 1_000, "agreement-6", "")
    subject.expire()
    with pytest.raises(PaymentFailed) as info:
        await rail.pay(0, short)
    assert info.value.reason == "expired"
