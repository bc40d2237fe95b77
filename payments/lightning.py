"""``SimulatedLightning``: the embedded default rail, a Lightning network in this process.

It implements :class:`negotiator.settlement.Rail` like the Core Lightning adapter does: the payee's
node issues a signed BOLT11 invoice (``bcrt``), the payer's node pays it over the channel graph
(multi-hop, fees, multi-part when no single path has the liquidity), the preimage proves payment,
and an invoice is paid at most once.

Agents map onto nodes (:class:`payments.graph.Placement`): an agent with its own node pays from
its channels; agents sharing a hub node hold internal accounts there, debited and credited by the
hub (a payment between two customers of one hub never touches a channel). When Lightning cannot
carry a payment, it falls back to an on-chain HTLC locked to the same payment hash (one block, one
on-chain fee), so an agreement is never left unsettled without a recorded reason.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping

from negotiator.errors import AlreadyPaid, InvoiceError, PaymentFailed
from negotiator.messages import Invoice
from negotiator.metrics import PaymentStats
from negotiator.settlement import PaymentResult, PaymentStatus, reissue
from payments import invoices
from payments.chain import Output, Tx, TxKind, Watchtower
from payments.graph import Placement
from payments.network import LightningNetwork


class SimulatedLightning:
    """A rail over a simulated Lightning network (see the module docstring)."""

    name = "lightning"
    concurrency = 1

    def __init__(
        self,
        network: LightningNetwork,
        placement: Placement,
        *,
        accounts: Mapping[int, int] | None = None,
        seed: int = 0,
        currency: str = "bcrt",
        invoice_expiry_s: int = 3600,
        min_final_cltv: int = 18,
        onchain_fallback: bool = True,
        watchtower: bool = True,
        clock: Callable[[], float] = time.time,
        stats: PaymentStats | None = None,
    ) -> None:
        self.network = network
        self.placement = placement
        self.currency = currency
        self.expiry = invoice_expiry_s
        self.min_final_cltv = min_final_cltv
        self.onchain_fallback = onchain_fallback
        self.clock = clock
        self._key = hashlib.sha256(f"lightning-rail/{seed}".encode()).digest()
        self._hubs = set(placement.hubs)
        self.accounts: dict[int, int] = {}
        """Internal accounts of agents on shared (hub) nodes, msat."""
        for agent, node in placement.node_of.items():
            if node in self._hubs:
                self.accounts[agent] = int((accounts or {}).get(agent, 0))
        self._invoices: dict[str, tuple[Invoice, str]] = {}
        self._by_label: dict[str, Invoice] = {}
        self._status: dict[str, PaymentStatus] = {}
        self.tower = Watchtower(network.chain) if watchtower else None
        self.stats = stats or PaymentStats()
        self.stats.liquidity = network.graph.utilization
        self.stats.events = self.events

    @property
    def total_msat(self) -> int:
        """All money in the network (channels, HTLCs in flight, chain): conserved by payments."""
        return self.network.total_msat()

    # -- the Rail interface --------------------------------------------------------------------

    async def create_invoice(
        self, payee: int, amount_msat: int, label: str, description: str
    ) -> Invoice:
        """A BOLT11 invoice from ``payee``'s node; the same label and terms give the same one."""
        node = self.placement.node_of.get(payee)
        if node is None:
            raise InvoiceError("unknown_payee", f"no agent {payee} on the network")
        if amount_msat <= 0:
            raise InvoiceError("bad_amount", f"{amount_msat} msat")
        existing = reissue(self._by_label.get(label), payee, amount_msat, label)
        if existing is not None:
            return existing
        preimage = hmac.digest(self._key, label.encode(), "sha256")
        payment_hash = hashlib.sha256(preimage).hexdigest()
        secret = hmac.digest(self._key, b"secret/" + label.encode(), "sha256").hex()
        now = self.clock()
        request = invoices.encode(
            self.network.graph.nodes[node].key,
            currency=self.currency,
            amount_msat=amount_msat,
            timestamp=int(now),
            payment_hash=payment_hash,
            payment_secret=secret,
            description=description,
            expiry=self.expiry,
            min_final_cltv=self.min_final_cltv,
        )
        invoice = Invoice(payee, amount_msat, payment_hash, label, request, now + self.expiry)
        self._invoices[payment_hash] = (invoice, preimage.hex())
        self._by_label[label] = invoice
        self._status[payment_hash] = PaymentStatus.PENDING
        return invoice

    async def pay(self, payer: int, invoice: Invoice) -> PaymentResult:
        """Pay ``invoice`` from ``payer``: all or nothing, over Lightning or else on chain."""
        started = time.perf_counter()
        try:
            return self._pay(payer, invoice)
        finally:
            self.stats.wall.observe(time.perf_counter() - started)

    async def lookup(self, payment_hash: str) -> PaymentStatus:
        """What became of a payment hash."""
        return self._status.get(payment_hash, PaymentStatus.UNKNOWN)

    async def balance(self, node: int) -> int:
        """An agent's spendable msat: its hub account, or its node's outbound liquidity."""
        if node in self.accounts:
            return self.accounts[node]
        where = self.placement.node_of.get(node)
        if where is None:
            raise PaymentFailed("unknown_node", f"no agent {node}")
        return self.network.graph.outbound(where)

    # -- paying --------------------------------------------------------------------------------

    def _pay(self, payer: int, invoice: Invoice) -> PaymentResult:
        entry = self._invoices.get(invoice.payment_hash)
        if entry is None or entry[0] != invoice:
            raise PaymentFailed("unknown_invoice", invoice.payment_hash)
        issued, preimage = entry
        h = issued.payment_hash
        if self._status[h] is PaymentStatus.COMPLETE:
            raise AlreadyPaid("already_paid", h)
        if self.clock() > issued.expires_at:
            self.stats.record("expired")
            raise PaymentFailed("expired", h)
        src = self.placement.node_of.get(payer)
        if src is None:
            raise PaymentFailed("unknown_payer", f"no agent {payer}")
        dst = self.placement.node_of[issued.payee]
        amount = issued.amount_msat
        stats = self.stats
        if payer in self.accounts and self.accounts[payer] < amount:
            stats.record("insufficient_funds")
            raise PaymentFailed("insufficient_funds", f"account {payer} < {amount} msat")
        if src == dst:  # two customers of one hub: an internal transfer
            fee, parts, hops, latency = 0, 1, 0, 0.0
            outcome = "succeeded"
        else:
            network = self.network
            try:
                try:
                    payment = network.send(src, dst, amount, h, final_cltv=self.min_final_cltv)
                except PaymentFailed:
                    if not self._replenish(src, dst, amount):
                        raise
                    payment = network.send(src, dst, amount, h, final_cltv=self.min_final_cltv)
            except PaymentFailed as exc:
                stats.attempts += 1
                if not self.onchain_fallback:
                    stats.record(exc.reason)
                    self._status[h] = PaymentStatus.FAILED
                    raise
                fee = self._onchain(src, dst, amount, exc.reason, payer)
                parts, hops = 1, 0
                latency = network.chain.block_interval_s * 1000.0
                outcome = "onchain"
            else:
                network.settle(payment, preimage)
                fee, parts, hops = payment.fee, len(payment.parts), payment.hops
                latency = payment.latency_ms
                stats.attempts += payment.attempts
                outcome = "succeeded"
        if payer in self.accounts:
            self.accounts[payer] -= amount + fee
        if issued.payee in self.accounts:
            self.accounts[issued.payee] += amount
        self._status[h] = PaymentStatus.COMPLETE
        stats.record(outcome)
        stats.parts.observe(parts)
        stats.hops.observe(hops)
        stats.latency.observe(latency / 1000.0)
        if outcome == "onchain":
            stats.onchain_fees_msat += fee
        else:
            stats.fees_msat += fee
        stats.amount_msat += amount
        return PaymentResult(h, preimage, amount, fee)

    def _replenish(self, src: int, dst: int, amount: int) -> bool:
        """Liquidity management after a failed attempt; returns whether anything changed.

        What a service provider does: the payer splices its own savings into its channel when
        it lacks outbound liquidity; the payee's peer splices in on its side when the payee
        lacks inbound liquidity (selling inbound capacity is the provider's business); and when
        neither is the problem, hubs rebalance depleted channels between them circularly. Any
        splice waits for its confirmation.
        """
        network = self.network
        g = network.graph
        p = network.params
        need = amount + p.max_fee_base_msat + amount * p.max_fee_ppm // 1_000_000
        spliced = False
        if g.outbound(src) < need:
            spliced |= self._splice(src, src, need - g.outbound(src))
        if g.inbound(dst) < amount:
            edges = [e for e in g.adjacency[dst] if g.open[e >> 1]]
            if edges:
                widest = max(edges, key=lambda e: g.capacity[e >> 1])
                spliced |= self._splice(g.target[widest], dst, amount - g.inbound(dst))
        if spliced:
            network.chain.mine(network.splice_depth)
            return True
        return self._rebalance_hubs()

    def _splice(self, node: int, towards: int, short: int) -> bool:
        """``node`` splices twice the shortfall (or what its wallet allows) into its channel with
        ``towards`` (its widest channel when they are the same node)."""
        network = self.network
        g = network.graph
        chain = network.chain
        edges = [e for e in g.adjacency[node] if g.open[e >> 1]]
        if towards != node:
            edges = [e for e in edges if g.target[e] == towards]
        if not edges:
            return False
        top_up = min(chain.wallet(node) - chain.tx_fee_msat, 2 * short)
        if top_up < short:
            return False
        widest = max(edges, key=lambda e: g.capacity[e >> 1])
        network.splice_in(widest >> 1, node, top_up)
        return True

    def _rebalance_hubs(self) -> bool:
        """Hubs refill channels to other hubs that are under 10% on their side, circularly."""
        network = self.network
        g = network.graph
        hubs = self._hubs
        moved = False
        for hub in hubs:
            mesh = [e for e in g.adjacency[hub] if g.open[e >> 1] and g.target[e] in hubs]
            for poor in mesh:
                capacity = g.capacity[poor >> 1]
                if g.spendable(poor) >= capacity // 10:
                    continue
                rich = max(mesh, key=g.spendable)
                move = min(capacity // 2 - g.spendable(poor), g.spendable(rich) // 2)
                if rich == poor or move <= 0:
                    continue
                try:
                    network.rebalance(hub, rich >> 1, poor >> 1, move)
                except PaymentFailed:
                    continue
                moved = True
        return moved

    def _onchain(self, src: int, dst: int, amount: int, why: str, payer: int) -> int:
        """An on-chain HTLC to the payee's node, claimed with the preimage at one confirmation."""
        chain = self.network.chain
        fee = chain.tx_fee_msat
        if payer in self.accounts and self.accounts[payer] < amount + fee:
            self.stats.record("insufficient_funds")
            raise PaymentFailed("insufficient_funds", f"{why}; on chain needs {amount + fee} msat")
        try:
            chain.spend(src, amount + fee)
        except PaymentFailed as exc:
            self.stats.record(f"{why}")
            raise PaymentFailed(why, f"no route, and on chain: {exc.detail}") from None
        chain.broadcast(Tx(TxKind.PAYMENT, fee, [Output(dst, amount, chain.height + 1)]))
        chain.mine()
        return fee

    # -- reporting -----------------------------------------------------------------------------

    def events(self) -> dict[str, int]:
        """Counts of liquidity and security events (for metrics and the summary)."""
        c = self.network.counters
        return {
            "rebalances": c.rebalances,
            "splices": c.splices,
            "closes": c.closes,
            "breaches": c.breaches,
            "watchtower_interventions": self.tower.interventions if self.tower else 0,
            "expired_htlcs": c.expired_htlcs,
            "blocks": self.network.chain.height,
        }
