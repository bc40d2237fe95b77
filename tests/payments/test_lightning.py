"""The simulated Lightning rail behind the Rail interface: invoices, payments, hubs, fallback."""

from __future__ import annotations

import hashlib

import msgspec
import pytest

from negotiator.errors import AlreadyPaid, InvoiceError, PaymentFailed
from negotiator.settlement import PaymentStatus
from payments import Chain, LightningNetwork, SimulatedLightning, community_graph, invoices

pytestmark = pytest.mark.anyio

SAT = 1000


def rail(*, own_nodes: bool = True, fallback: bool = True, inbound: int = 0) -> SimulatedLightning:
    funding = {i: 1_000_000 * SAT for i in range(6)}
    graph, placement = community_graph(
        funding,
        inbound={i: inbound or 1_000_000 * SAT for i in range(6)},
        hubs=2,
        own_nodes=own_nodes,
        seed=7,
    )
    chain = Chain(tx_fee_msat=2_000 * SAT)
    for node in range(len(graph.nodes)):
        chain.fund(node, 500_000 * SAT)
    return SimulatedLightning(
        LightningNetwork(graph, chain),
        placement,
        accounts=funding if not own_nodes else None,
        seed=7,
        onchain_fallback=fallback,
    )


async def test_an_invoice_is_a_signed_bolt11_from_the_payees_node_and_is_idempotent() -> None:
    r = rail()
    invoice = await r.create_invoice(3, 250_000, "agreement-1", "energy slot 1")
    decoded = invoices.decode(invoice.request)
    node = r.network.graph.nodes[r.placement.node_of[3]]
    assert decoded.payee == node.node_id and decoded.currency == "bcrt"
    assert decoded.payment_hash == invoice.payment_hash and decoded.amount_msat == 250_000
    assert await r.create_invoice(3, 250_000, "agreement-1", "energy slot 1") == invoice
    with pytest.raises(InvoiceError) as info:
        await r.create_invoice(3, 999, "agreement-1", "")
    assert info.value.reason == "label_reused"
    with pytest.raises(InvoiceError):
        await r.create_invoice(99, 1, "x", "")


async def test_a_payment_crosses_hubs_pays_fees_and_the_preimage_proves_it() -> None:
    r = rail()
    total = r.total_msat
    invoice = await r.create_invoice(1, 250_000, "agreement-1", "")  # agent 1 is on the other hub
    before = await r.balance(0)
    result = await r.pay(0, invoice)
    assert hashlib.sha256(bytes.fromhex(result.preimage)).hexdigest() == invoice.payment_hash
    assert result.fee_msat > 0  # the hubs charge for forwarding
    assert await r.balance(0) == before - 250_000 - result.fee_msat
    assert await r.lookup(invoice.payment_hash) is PaymentStatus.COMPLETE
    with pytest.raises(AlreadyPaid):
        await r.pay(0, invoice)
    assert r.total_msat == total
    summary = r.stats.summary()
    assert summary["success_rate"] == 1.0 and summary["hops_mean"] == 3


async def test_customers_of_one_hub_pay_by_internal_transfer() -> None:
    r = rail(own_nodes=False)
    same = await r.create_invoice(2, 400_000, "a", "")  # agents 0 and 2 share hub 0
    await r.pay(0, same)
    assert (r.accounts[0], r.accounts[2]) == (1_000_000 * SAT - 400_000, 1_000_000 * SAT + 400_000)
    other = await r.create_invoice(1, 400_000, "b", "")  # hub 0 -> hub 1 over their channel
    result = await r.pay(0, other)
    assert r.accounts[0] == 1_000_000 * SAT - 800_000 - result.fee_msat
    assert r.accounts[1] == 1_000_000 * SAT + 400_000
    with pytest.raises(PaymentFailed) as info:
        await r.pay(0, await r.create_invoice(1, 10**12, "c", ""))
    assert info.value.reason == "insufficient_funds"


async def test_without_a_route_it_settles_on_chain_with_the_same_hash_or_fails_with_a_reason() -> (
    None
):
    for fallback in (True, False):
        r = rail(fallback=fallback, inbound=1_000 * SAT)  # sellers can receive almost nothing
        for hub in r.placement.hubs:
            r.network.chain.wallets[hub] = 0  # ... and their hubs cannot splice more in
        invoice = await r.create_invoice(1, 50_000 * SAT, "agreement-9", "")
        if fallback:
            result = await r.pay(0, invoice)
            assert result.fee_msat == r.network.chain.tx_fee_msat
            assert r.stats.outcomes == {"onchain": 1}
            assert r.network.chain.height == 1
            assert await r.lookup(invoice.payment_hash) is PaymentStatus.COMPLETE
        else:
            with pytest.raises(PaymentFailed) as info:
                await r.pay(0, invoice)
            assert info.value.reason == "insufficient_inbound"
            assert await r.lookup(invoice.payment_hash) is PaymentStatus.FAILED


async def test_unknown_and_expired_invoices_are_refused() -> None:
    now = [1_000_000.0]
    r = rail()
    r.clock = lambda: now[0]
    invoice = await r.create_invoice(1, 1_000, "a", "")
    forged = msgspec.structs.replace(invoice, amount_msat=1)
    with pytest.raises(PaymentFailed, match="unknown_invoice"):
        await r.pay(0, forged)
    now[0] += 3601
    with pytest.raises(PaymentFailed, match="expired"):
        await r.pay(0, invoice)


async def test_a_payer_short_of_outbound_liquidity_splices_in_from_its_wallet_first() -> None:
    r = rail(inbound=5_000_000 * SAT)  # the payee can receive it: only the payer is short
    net = r.network
    node = r.placement.node_of[0]
    total = r.total_msat
    wallet = net.chain.wallet(node)
    invoice = await r.create_invoice(1, 1_200_000 * SAT, "big", "")  # more than its channel holds
    result = await r.pay(0, invoice)
    assert r.stats.outcomes == {"succeeded": 1}  # over Lightning, not on chain
    assert net.counters.splices == 1 and net.chain.wallet(node) < wallet
    assert result.fee_msat < net.chain.tx_fee_msat and r.total_msat == total


async def test_a_payee_short_of_inbound_liquidity_gets_it_from_its_hub() -> None:
    r = rail(inbound=100_000 * SAT)  # the sellers' hubs sold them little inbound capacity
    hub = r.network.graph.target[r.network.graph.adjacency[r.placement.node_of[1]][0]]
    invoice = await r.create_invoice(1, 300_000 * SAT, "sale", "")
    await r.pay(0, invoice)
    assert r.stats.outcomes == {"succeeded": 1} and r.network.counters.splices == 1
    assert r.network.chain.wallet(hub) < 500_000 * SAT  # the hub paid for the splice


async def test_hubs_rebalance_a_depleted_channel_between_them() -> None:
    funding = {i: 1_000_000 * SAT for i in range(6)}
    graph, placement = community_graph(funding, hubs=3, own_nodes=False, seed=7)
    net = LightningNetwork(graph)
    r = SimulatedLightning(net, placement, accounts=funding, onchain_fallback=False)
    hub0, hub1, _ = placement.hubs
    e = next(e for e in graph.adjacency[hub0] if graph.target[e] == hub1)
    c = e >> 1
    graph.balance[e ^ 1] += graph.balance[e] - graph.reserve[c]  # hub0 -> hub1 drained
    graph.balance[e] = graph.reserve[c]
    graph.capacity[c] = graph.balance[e] + graph.balance[e ^ 1]
    total = r.total_msat
    assert await r.balance(0) == 1_000_000 * SAT
    net.finder.learn_failure(  # and hub0 -> hub2 -> hub1 is believed dry as well
        next(x for x in graph.adjacency[hub0] if graph.target[x] != hub1), 1
    )
    await r.pay(0, await r.create_invoice(1, 600_000 * SAT, "a", ""))  # hub0's agent -> hub1's
    assert net.counters.rebalances >= 1 and r.stats.outcomes == {"succeeded": 1}
    assert r.total_msat == total
