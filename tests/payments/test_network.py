"""The simulated network: HTLCs, multi-part payments, liquidity, closes, and conservation."""

from __future__ import annotations

import hashlib

import networkx as nx
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from negotiator.errors import PaymentFailed
from payments import Chain, ChannelGraph, LightningNetwork, Watchtower, scale_free_graph
from payments.network import HopFailed


def secret(tag: object) -> tuple[str, str]:
    """(preimage hex, payment hash hex)."""
    pre = hashlib.sha256(str(tag).encode()).digest()
    return pre.hex(), hashlib.sha256(pre).hexdigest()


def diamond(left: int, right: int) -> LightningNetwork:
    """0 -> 1 -> 3 and 0 -> 2 -> 3, every channel funded on the sender's side only."""
    graph = ChannelGraph()
    for i in range(4):
        graph.add_node(f"n{i}")
    graph.open_channel(0, 1, left, 0, reserve_ppm=0)
    graph.open_channel(1, 3, left, 0, reserve_ppm=0)
    graph.open_channel(0, 2, right, 0, reserve_ppm=0)
    graph.open_channel(2, 3, right, 0, reserve_ppm=0)
    return LightningNetwork(graph, Chain(tx_fee_msat=1_000))


def test_an_htlc_locks_liquidity_then_moves_it_on_fulfil_or_returns_it_on_fail() -> None:
    net = diamond(1_000_000, 1_000_000)
    g = net.graph
    total = net.total_msat()
    pre, h = secret(1)
    route = net.offer([0, 2], 100_000, h, final_cltv=18)
    fee = 1 + 10 * 100_000 // 1_000_000
    assert route.amounts == [100_000 + fee, 100_000] and route.fee == fee
    assert route.expiries == [18 + 6, 18]  # each hop expires cltv_delta blocks after the next
    assert g.locked[0] == 100_000 + fee and g.balance[0] == 1_000_000 - 100_000 - fee
    assert net.total_msat() == total
    net.fulfil(route, pre)
    assert g.balance[1] == 100_000 + fee and g.balance[3] == 100_000 and g.locked[0] == 0
    other = net.offer([0, 2], 50_000, secret(2)[1], 18)
    net.fail(other)
    assert g.balance[1] == 100_000 + fee and g.locked == [0, 0, 0, 0]
    with pytest.raises(PaymentFailed):
        net.fulfil(net.offer([0, 2], 10, h, 18), secret(3)[0])  # wrong preimage
    assert net.total_msat() == total


def test_a_hop_without_liquidity_fails_back_the_hops_before_it() -> None:
    net = diamond(1_000_000, 1_000_000)
    g = net.graph
    g.balance[2] = 10  # node 1 has almost nothing towards 3
    before = list(g.balance)
    with pytest.raises(HopFailed) as info:
        net.offer([0, 2], 100_000, secret(1)[1], 18)
    assert info.value.edge == 2 and info.value.position == 1
    assert g.balance == before and g.locked == [0, 0, 0, 0]


def test_an_htlc_in_flight_expires_at_its_timelock() -> None:
    net = diamond(1_000_000, 1_000_000)
    before = list(net.graph.balance)
    route = net.offer([0, 2], 100_000, secret(1)[1], final_cltv=3)
    net.chain.mine(3 + 6 - 1)
    assert route.state == "offered"
    net.chain.mine()
    assert route.state == "failed" and net.graph.balance == before
    assert net.counters.expired_htlcs == 1


def max_flow(net: LightningNetwork, src: int, dst: int) -> int:
    g = net.graph
    flow = nx.DiGraph()
    for e in range(len(g.source)):
        u, v = g.source[e], g.target[e]
        cap = g.spendable(e) + (flow[u][v]["capacity"] if flow.has_edge(u, v) else 0)
        flow.add_edge(u, v, capacity=cap)
    value: int = nx.maximum_flow_value(flow, src, dst)
    return value


def test_a_payment_larger_than_any_path_succeeds_in_parts() -> None:
    net = diamond(600_000, 600_000)
    total = net.total_msat()
    pre, h = secret(1)
    payment = net.send(0, 3, 1_000_000, h)
    assert len(payment.parts) >= 2
    assert sum(p.delivered for p in payment.parts) == 1_000_000
    net.settle(payment, pre)
    assert net.graph.balance[3] + net.graph.balance[7] == 1_000_000  # node 3 got it all
    assert net.total_msat() == total


def test_a_payment_beyond_the_max_flow_fails_whole_with_a_reason() -> None:
    net = diamond(600_000, 600_000)
    before = list(net.graph.balance)
    flow = max_flow(net, 0, 3)
    assert flow == 1_200_000
    with pytest.raises(PaymentFailed) as info:
        net.send(0, 3, flow + 1, secret(1)[1])
    assert info.value.reason in {"insufficient_outbound", "insufficient_inbound", "no_route"}
    assert net.graph.balance == before and not net.inflight  # nothing moved, nothing locked
    with pytest.raises(PaymentFailed) as info:  # within the flow, but fees push it over
        net.send(0, 3, flow, secret(2)[1])
    assert net.graph.balance == before and not net.inflight


def test_splicing_resizes_a_channel_after_confirmation() -> None:
    net = diamond(1_000_000, 1_000_000)
    net.chain.fund(0, 5_000_000)
    total = net.total_msat()
    g = net.graph
    net.splice_in(0, 0, 2_000_000)
    assert g.capacity[0] == 1_000_000 and net.total_msat() == total  # waits for a block
    net.chain.mine()
    assert g.capacity[0] == 3_000_000 and g.balance[0] == 3_000_000
    assert g.scid[0] == "1x0x1" and net.chain.wallet(0) == 5_000_000 - 2_000_000 - 1_000
    net.splice_out(0, 0, 500_000)
    assert g.capacity[0] == 2_500_000 and net.total_msat() == total
    net.chain.mine()
    assert net.chain.wallet(0) == 3_000_000 - 1_000 + 500_000 - 1_000
    assert net.counters.splices == 2 and net.total_msat() == total


def test_circular_rebalancing_moves_liquidity_between_own_channels() -> None:
    graph = ChannelGraph()
    for i in range(3):
        graph.add_node(f"n{i}")
    graph.open_channel(0, 1, 900_000, 100_000, reserve_ppm=0)  # 0 is rich towards 1
    graph.open_channel(1, 2, 500_000, 500_000, reserve_ppm=0)
    graph.open_channel(2, 0, 900_000, 100_000, reserve_ppm=0)  # ... and poor towards 2
    net = LightningNetwork(graph)
    total = net.total_msat()
    fee = net.rebalance(0, out_channel=0, in_channel=2, amount=300_000)
    assert graph.balance[0] == 900_000 - 300_000 - fee
    assert graph.balance[5] == 100_000 + 300_000  # node 0's side of channel 2
    assert net.counters.rebalances == 1 and net.total_msat() == total


def test_the_watchtower_punishes_a_revoked_state_and_without_it_the_cheat_pays() -> None:
    for watched in (True, False):
        net = diamond(1_000_000, 1_000_000)
        chain = net.chain
        tower = Watchtower(chain) if watched else None
        total = net.total_msat()
        payment = net.send(0, 3, 400_000, secret(1)[1])  # node 0 pays: its balance drops
        net.settle(payment, secret(1)[0])
        channel = payment.parts[0].path[0] >> 1
        net.breach(channel, cheater=0)  # broadcasts the old state with 1,000,000 msat
        chain.mine(chain.to_self_delay + 2)
        peer = net.graph.ends[channel][1]
        if tower is not None:
            assert tower.interventions == 1
            assert chain.wallet(0) == 0
            assert chain.wallet(peer) == 1_000_000 - 2 * chain.tx_fee_msat
        else:
            assert chain.wallet(0) == 1_000_000 - chain.tx_fee_msat  # got away with it
        assert net.total_msat() == total


def test_routing_on_a_thousand_node_scale_free_graph() -> None:
    net = LightningNetwork(scale_free_graph(1000, seed=4))
    total = net.total_msat()
    done = 0
    for i in range(300):
        src, dst = (i * 7919) % 1000, (i * 104729 + 1) % 1000
        if src == dst:
            continue
        pre, h = secret(i)
        try:
            payment = net.send(src, dst, 200_000, h)
        except PaymentFailed:
            continue
        net.settle(payment, pre)
        done += 1
    assert done > 280 and net.total_msat() == total


class Conservation(RuleBasedStateMachine):
    """Random payments, failures, splices, rebalances and a cheat: no msat appears or vanishes."""

    def __init__(self) -> None:
        super().__init__()
        graph = scale_free_graph(12, attach=2, capacity_msat=(1_000_000, 20_000_000), seed=5)
        self.net = LightningNetwork(graph, Chain(tx_fee_msat=5_000, to_self_delay=3))
        for node in range(12):
            self.net.chain.fund(node, 10_000_000)
        self.tower = Watchtower(self.net.chain)
        self.total = self.net.total_msat()
        self.n = 0
        self.held: list[object] = []

    def _hash(self) -> tuple[str, str]:
        self.n += 1
        return secret(self.n)

    @rule(src=st.integers(0, 11), dst=st.integers(0, 11), amount=st.integers(1, 30_000_000))
    def pay(self, src: int, dst: int, amount: int) -> None:
        if src == dst:
            return
        pre, h = self._hash()
        try:
            payment = self.net.send(src, dst, amount, h)
        except PaymentFailed:
            return
        self.net.settle(payment, pre)

    @rule(src=st.integers(0, 11), dst=st.integers(0, 11), amount=st.integers(1, 5_000_000))
    def hold_then_fail(self, src: int, dst: int, amount: int) -> None:
        if src == dst:
            return
        try:
            payment = self.net.send(src, dst, amount, self._hash()[1])
        except PaymentFailed:
            return
        self.held.append(payment)

    @rule()
    def release(self) -> None:
        if self.held:
            self.net.abort(self.held.pop())  # type: ignore[arg-type]

    @rule(channel=st.integers(0, 19), amount=st.integers(10_000, 5_000_000), out=st.booleans())
    def splice(self, channel: int, amount: int, out: bool) -> None:
        g = self.net.graph
        if not g.open[channel]:
            return
        node = g.ends[channel][0]
        try:
            if out:
                self.net.splice_out(channel, node, amount)
            else:
                self.net.splice_in(channel, node, amount)
        except (PaymentFailed, ValueError):
            return

    @rule(node=st.integers(0, 11), amount=st.integers(1_000, 2_000_000))
    def rebalance(self, node: int, amount: int) -> None:
        channels = self.net.graph.channels_of(node)
        if len(channels) < 2:
            return
        try:
            self.net.rebalance(node, channels[0], channels[1], amount)
        except (PaymentFailed, ValueError):
            return

    @rule(channel=st.integers(0, 19), revoked=st.booleans())
    def close(self, channel: int, revoked: bool) -> None:
        g = self.net.graph
        if not g.open[channel] or g.locked[channel]:
            return
        node = g.ends[channel][0]
        if revoked:
            self.net.breach(channel, node)
        else:
            self.net.force_close(channel, node)

    @rule(blocks=st.integers(1, 5))
    def mine(self, blocks: int) -> None:
        self.net.chain.mine(blocks)

    @invariant()
    def conserved(self) -> None:
        assert self.net.total_msat() == self.total
        g = self.net.graph
        for c in range(g.channel_count):
            a, b = g.balance[2 * c], g.balance[2 * c + 1]
            assert a >= 0 and b >= 0 and g.locked[c] >= 0
            if g.open[c]:
                assert a + b + g.locked[c] == g.capacity[c]
        assert all(v >= 0 for v in self.net.chain.wallets.values())


Conservation.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
TestConservation = Conservation.TestCase
