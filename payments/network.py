"""The Lightning network simulation: HTLCs, multi-part payments, liquidity management, closes.

HTLC lifecycle: :meth:`LightningNetwork.offer` locks the amount hop by hop from the sender (each
hop carries the amount plus the fees of the hops after it, and expires ``cltv_delta`` blocks later
than the next); if a hop lacks liquidity the hops already locked are failed back and the sender
learns which edge failed. :meth:`fulfil` with the preimage moves every locked amount to the far
side of its channel; :meth:`fail` gives it back. An HTLC still in flight when the chain reaches
its expiry height is failed back. A payment's parts are all held until the whole amount has
arrived, then fulfilled together, so a payment never succeeds partially.

Conservation (a Hypothesis test drives it): channel balances + HTLCs in flight + the chain's
wallets, waiting outputs and miners' fees never change, except by funding from outside.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from negotiator.errors import PaymentFailed
from payments.chain import Chain, Output, Tx, TxKind
from payments.graph import ChannelGraph
from payments.routing import Path, PathFinder, RoutingParams


class HopFailed(PaymentFailed):
    """An HTLC could not be locked on one hop (not enough liquidity, or the channel closed)."""

    def __init__(self, edge: int, amount: int, position: int) -> None:
        super().__init__("temporary_channel_failure", f"edge {edge} hop {position}: {amount} msat")
        self.edge = edge
        self.amount = amount
        self.position = position


@dataclass(slots=True)
class HtlcRoute:
    """One part of a payment locked along a path: the amount and expiry on every hop."""

    payment_hash: str
    path: Path
    amounts: list[int]
    expiries: list[int]
    latency_ms: float
    state: str = "offered"

    @property
    def delivered(self) -> int:
        """What reaches the destination."""
        return self.amounts[-1]

    @property
    def fee(self) -> int:
        """What the sender pays the forwarding nodes."""
        return self.amounts[0] - self.amounts[-1]


@dataclass(slots=True)
class Payment:
    """The held parts of a payment (all locked, none fulfilled yet) and what finding them cost."""

    payment_hash: str
    amount: int
    parts: list[HtlcRoute]
    attempts: int
    latency_ms: float
    """Simulated time: failed attempts, then the slowest part there and back."""

    @property
    def fee(self) -> int:
        """Total fee over all parts."""
        return sum(p.fee for p in self.parts)

    @property
    def hops(self) -> int:
        """Longest path among the parts."""
        return max((len(p.path) for p in self.parts), default=0)


@dataclass(slots=True)
class NetworkCounters:
    """What the liquidity machinery did."""

    rebalances: int = 0
    splices: int = 0
    closes: int = 0
    breaches: int = 0
    expired_htlcs: int = 0


class LightningNetwork:
    """A channel graph, a chain, a path finder, and the HTLCs in flight."""

    def __init__(
        self,
        graph: ChannelGraph,
        chain: Chain | None = None,
        params: RoutingParams | None = None,
        *,
        splice_depth: int = 1,
    ) -> None:
        self.graph = graph
        self.chain = chain or Chain()
        self.finder = PathFinder(graph, params)
        self.params = self.finder.params
        self.splice_depth = splice_depth
        self.inflight: dict[str, list[HtlcRoute]] = {}
        self.counters = NetworkCounters()
        self.chain.observers.append(self._on_block)

    # -- accounting ----------------------------------------------------------------------------

    def total_msat(self) -> int:
        """All money: channels (balances and HTLCs in flight) plus everything on chain."""
        return self.graph.channel_msat() + self.chain.total_msat()

    # -- HTLCs ---------------------------------------------------------------------------------

    def offer(self, path: Path, amount: int, payment_hash: str, final_cltv: int) -> HtlcRoute:
        """Lock ``amount`` (plus fees) along ``path``; raise HopFailed and lock nothing if a hop can't."""
        if not path or amount <= 0:
            raise ValueError("an HTLC needs a path and a positive amount")
        g = self.graph
        n = len(path)
        amounts = [0] * n
        expiries = [0] * n
        amt = amount
        cltv = self.chain.height + final_cltv
        base, ppm, delta = g.base_fee, g.fee_ppm, g.cltv
        for i in range(n - 1, -1, -1):
            amounts[i] = amt
            expiries[i] = cltv
            if i:  # the node at the start of hop i charges for forwarding over it
                e = path[i]
                amt += base[e] + ppm[e] * amt // 1_000_000
                cltv += delta[e]
        balance, reserve, locked, is_open = g.balance, g.reserve, g.locked, g.open
        latency = 0.0
        for i, e in enumerate(path):
            c = e >> 1
            a = amounts[i]
            latency += g.latency_ms[e]
            if not is_open[c] or balance[e] - reserve[c] < a:
                for j in range(i):
                    back = path[j]
                    balance[back] += amounts[j]
                    locked[back >> 1] -= amounts[j]
                raise HopFailed(e, a, i)
            balance[e] -= a
            locked[c] += a
        route = HtlcRoute(payment_hash, path, amounts, expiries, latency)
        self.inflight.setdefault(payment_hash, []).append(route)
        return route

    def fulfil(self, route: HtlcRoute, preimage: str) -> None:
        """Settle every hop of ``route`` with the preimage (sha256(preimage) must be the hash)."""
        if hashlib.sha256(bytes.fromhex(preimage)).hexdigest() != route.payment_hash:
            raise PaymentFailed("bad_preimage", route.payment_hash)
        self._resolve(route, fulfilled=True)

    def fail(self, route: HtlcRoute) -> None:
        """Fail ``route`` back: every hop gets its locked amount back."""
        self._resolve(route, fulfilled=False)

    def _resolve(self, route: HtlcRoute, *, fulfilled: bool) -> None:
        if route.state != "offered":
            raise ValueError(f"HTLC route already {route.state}")
        g = self.graph
        balance, locked, commitment = g.balance, g.locked, g.commitment
        for e, a in zip(route.path, route.amounts, strict=True):
            c = e >> 1
            locked[c] -= a
            commitment[c] += 1
            if fulfilled:
                far = e ^ 1
                balance[far] += a
                g.forwarded[e] += a
                g.peak[far] = max(g.peak[far], balance[far])
            else:
                balance[e] += a
        route.state = "fulfilled" if fulfilled else "failed"
        parts = self.inflight.get(route.payment_hash)
        if parts is not None:
            parts.remove(route)
            if not parts:
                del self.inflight[route.payment_hash]

    def _on_block(self, height: int, confirmed: list[Tx]) -> None:
        expired = [r for parts in self.inflight.values() for r in parts if r.expiries[0] <= height]
        for route in expired:
            self.fail(route)
            self.counters.expired_htlcs += 1

    # -- payments ------------------------------------------------------------------------------

    def send(
        self, src: int, dst: int, amount: int, payment_hash: str, *, final_cltv: int = 18
    ) -> Payment:
        """Find routes and lock HTLCs for the whole ``amount``, splitting it when no single path
        has the liquidity; raise PaymentFailed (nothing locked) when it cannot be done.

        The caller fulfils the parts with the preimage (or fails them).
        """
        if src == dst:
            raise ValueError("a payment needs two different nodes")
        if amount <= 0:
            raise PaymentFailed("bad_amount", f"{amount} msat")
        g = self.graph
        p = self.params
        budget = p.max_fee_base_msat + amount * p.max_fee_ppm // 1_000_000
        held: list[HtlcRoute] = []
        queue = [amount]
        attempts = 0
        latency = 0.0
        finder = self.finder
        reason = "no_route"
        while queue:
            part = queue.pop()
            part_budget = budget * part // amount
            placed = False
            tried: set[tuple[int, ...]] = set()
            for path in self._candidates(src, dst, part):
                if attempts >= p.max_attempts:
                    break
                key = tuple(path)
                if key in tried:
                    continue
                tried.add(key)
                attempts += 1
                try:
                    route = self.offer(path, part, payment_hash, final_cltv)
                except HopFailed as failure:
                    finder.learn_failure(failure.edge, failure.amount)
                    latency += 2 * sum(g.latency_ms[e] for e in path[: failure.position + 1])
                    continue
                if route.fee > part_budget:
                    self.fail(route)
                    reason = "fee_too_high"
                    continue
                held.append(route)
                placed = True
                break
            if placed:
                continue
            if part == amount:  # the whole amount found no path: can it be done at all?
                if g.outbound(src) < amount:
                    reason = "insufficient_outbound"
                    break
                if g.inbound(dst) < amount:
                    reason = "insufficient_inbound"
                    break
            if (
                attempts < p.max_attempts
                and part // 2 >= p.min_part_msat
                and len(held) + len(queue) + 2 <= p.max_parts
            ):
                queue += [part - part // 2, part // 2]
                continue
            break
        if queue or len(held) == 0 or sum(r.delivered for r in held) != amount:
            for route in held:
                self.fail(route)
            if attempts >= p.max_attempts:
                reason = "too_many_attempts"
            raise PaymentFailed(reason, f"{amount} msat from {src} to {dst} after {attempts} tries")
        latency += 2 * max(r.latency_ms for r in held)
        return Payment(payment_hash, amount, held, attempts, latency)

    def _candidates(self, src: int, dst: int, amount: int) -> Iterator[Path]:
        """Paths to try for one part, each computed after the failures before it were learned:
        the best path (cached tree), the best path again (now avoiding what failed), then Yen's
        k shortest. Lazy: a part that gets through on its first path costs no search at all."""
        finder = self.finder
        for _ in range(2):
            path = finder.best(src, dst, amount)
            if path is None:
                return
            yield path
        for path in finder.k_shortest(src, dst, amount):
            if all(finder.usable(e, amount) for e in path):
                yield path

    def settle(self, payment: Payment, preimage: str) -> None:
        """The destination has every part: fulfil them all."""
        for route in payment.parts:
            self.fulfil(route, preimage)

    def abort(self, payment: Payment) -> None:
        """Fail every part back."""
        for route in payment.parts:
            if route.state == "offered":
                self.fail(route)

    # -- liquidity -----------------------------------------------------------------------------

    def rebalance(self, node: int, out_channel: int, in_channel: int, amount: int) -> int:
        """Circular rebalancing: ``node`` pays itself out over one channel and back over another.

        Moves ``amount`` of its liquidity from ``out_channel`` to ``in_channel``; returns the fee
        paid (to the nodes on the cycle). Raises PaymentFailed and moves nothing if no cycle can.
        """
        g = self.graph
        out_e = _edge_from(g, out_channel, node)
        in_back = _edge_from(g, in_channel, node) ^ 1  # the hop into node
        if out_channel == in_channel:
            raise ValueError("rebalancing needs two different channels")
        middle = self.finder.shortest(
            g.target[out_e], g.source[in_back], amount, banned_nodes={node}
        )
        if middle is None:
            raise PaymentFailed("no_route", f"no cycle from channel {out_channel} to {in_channel}")
        secret = hashlib.sha256(f"rebalance/{node}/{self.counters.rebalances}".encode()).digest()
        payment_hash = hashlib.sha256(secret).hexdigest()
        route = self.offer([out_e, *middle, in_back], amount, payment_hash, 18)
        self.fulfil(route, secret.hex())
        self.counters.rebalances += 1
        self.finder.forget()
        return route.fee

    def splice_in(self, channel: int, node: int, amount: int) -> Tx:
        """Add ``amount`` from ``node``'s wallet to its side of ``channel`` (usable once confirmed)."""
        g = self.graph
        e = _edge_from(g, channel, node)
        chain = self.chain
        fee = chain.tx_fee_msat
        if amount <= 0:
            raise ValueError("splice amount must be positive")
        chain.spend(node, amount + fee)

        def confirm(tx: Tx) -> None:
            if not g.open[channel]:
                return  # closed meanwhile: the output simply returns the funds to the wallet
            tx.outputs.clear()  # the funds join the channel instead of a wallet
            g.capacity[channel] += amount
            g.balance[e] += amount
            g.peak[e] = max(g.peak[e], g.balance[e])
            g.scid[channel] = f"{tx.height}x{channel}x1"
            g.version += 1
            self.finder.forget()

        # until it confirms, the new funds sit in the splice transaction's channel output
        pending = Output(node, amount, chain.height + 1)
        tx = chain.broadcast(Tx(TxKind.SPLICE_IN, fee, [pending], channel, on_confirm=confirm))
        self.counters.splices += 1
        return tx

    def splice_out(self, channel: int, node: int, amount: int) -> Tx:
        """Take ``amount`` from ``node``'s side of ``channel`` to its wallet (one on-chain fee)."""
        g = self.graph
        e = _edge_from(g, channel, node)
        fee = self.chain.tx_fee_msat
        if amount <= fee:
            raise ValueError("splice-out must exceed the on-chain fee")
        if g.spendable(e) < amount:
            raise PaymentFailed("insufficient_outbound", f"channel {channel} side of {node}")
        g.balance[e] -= amount
        g.capacity[channel] -= amount
        g.reserve[channel] = min(g.reserve[channel], g.capacity[channel] // 100)
        g.version += 1
        out = Output(node, amount - fee, self.chain.height + self.splice_depth)
        tx = self.chain.broadcast(Tx(TxKind.SPLICE_OUT, fee, [out], channel))
        self.counters.splices += 1
        return tx

    # -- closing -------------------------------------------------------------------------------

    def force_close(self, channel: int, by: int) -> Tx:
        """Unilateral close at the latest state: ``by``'s side waits ``to_self_delay`` blocks."""
        return self._close(channel, by, revoked=False)

    def breach(self, channel: int, cheater: int) -> Tx:
        """``cheater`` broadcasts its best revoked state (its highest balance ever)."""
        return self._close(channel, cheater, revoked=True)

    def _close(self, channel: int, by: int, *, revoked: bool) -> Tx:
        g = self.graph
        if not g.open[channel]:
            raise ValueError(f"channel {channel} is closed")
        if g.locked[channel]:
            raise ValueError(f"channel {channel} has HTLCs in flight")
        e = _edge_from(g, channel, by)
        other = g.target[e]
        capacity = g.balance[e] + g.balance[e ^ 1]
        mine = g.peak[e] if revoked else g.balance[e]
        mine = min(mine, capacity)
        chain = self.chain
        fee = min(chain.tx_fee_msat, mine)
        delay = chain.height + chain.to_self_delay
        outputs = [
            Output(by, mine - fee, delay, revoked_by=other if revoked else None),
            Output(other, capacity - mine, chain.height + 1),
        ]
        g.balance[e] = g.balance[e ^ 1] = 0
        g.open[channel] = False
        g.version += 1
        if revoked:
            self.counters.breaches += 1
        else:
            self.counters.closes += 1
        kind = TxKind.REVOKED if revoked else TxKind.CLOSE
        return chain.broadcast(Tx(kind, fee, outputs, channel))


def _edge_from(graph: ChannelGraph, channel: int, node: int) -> int:
    a, b = graph.ends[channel]
    if node == a:
        return 2 * channel
    if node == b:
        return 2 * channel + 1
    raise ValueError(f"node {node} is not on channel {channel}")
