"""A simulated Bitcoin chain: wallets, time-locked outputs, blocks, fees, and a watchtower.

Only what settlement needs: on-chain wallets per node, transactions whose outputs mature after a
number of blocks (one confirmation for a payment, ``to_self_delay`` blocks for the broadcaster's
side of a commitment), a flat fee per transaction paid to miners, and observers told of each block
(HTLC expiry, the watchtower). Money is conserved: wallets + outputs not yet matured + fees paid
to miners is constant apart from :meth:`Chain.fund` (coins from outside).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from negotiator.errors import PaymentFailed


class TxKind(enum.StrEnum):
    """Why a transaction was broadcast."""

    PAYMENT = "payment"
    """An on-chain HTLC: the fallback when no Lightning route exists."""
    SPLICE_IN = "splice_in"
    SPLICE_OUT = "splice_out"
    CLOSE = "close"
    """A commitment transaction with the latest state (unilateral close)."""
    REVOKED = "revoked"
    """A commitment transaction with a revoked state: a cheating attempt."""
    PENALTY = "penalty"
    """The justice transaction: the honest side sweeps the cheater's output."""


@dataclass(slots=True)
class Output:
    """Coins waiting to reach ``owner``'s wallet at height ``matures``."""

    owner: int
    amount: int
    matures: int
    revoked_by: int | None = None
    """For a cheater's output: the honest node that may sweep it before it matures."""


@dataclass(slots=True)
class Tx:
    """A transaction as the chain sees it."""

    kind: TxKind
    fee: int
    outputs: list[Output]
    channel: int | None = None
    height: int | None = None
    """Block that confirmed it (None while in the mempool)."""
    on_confirm: Callable[[Tx], None] | None = field(default=None, repr=False)


class Chain:
    """Blocks every ``block_interval_s`` of simulated time, mined on demand."""

    def __init__(
        self,
        *,
        block_interval_s: float = 600.0,
        tx_fee_msat: int = 2_000_000,
        to_self_delay: int = 144,
    ) -> None:
        if block_interval_s <= 0 or tx_fee_msat < 0 or to_self_delay < 1:
            raise ValueError("bad chain parameters")
        self.block_interval_s = block_interval_s
        self.tx_fee_msat = tx_fee_msat
        self.to_self_delay = to_self_delay
        self.height = 0
        self.wallets: dict[int, int] = {}
        self.mempool: list[Tx] = []
        self.outputs: list[Output] = []
        """Confirmed outputs not yet matured."""
        self.miner_fees = 0
        self.minted = 0
        self.observers: list[Callable[[int, list[Tx]], None]] = []

    def fund(self, node: int, amount: int) -> None:
        """Coins from outside the simulation (genesis funding)."""
        if amount < 0:
            raise ValueError("cannot fund a negative amount")
        self.wallets[node] = self.wallets.get(node, 0) + amount
        self.minted += amount

    def wallet(self, node: int) -> int:
        """Confirmed, spendable on-chain msat of ``node``."""
        return self.wallets.get(node, 0)

    def spend(self, node: int, amount: int) -> None:
        """Take ``amount`` from ``node``'s wallet or raise PaymentFailed and take nothing."""
        have = self.wallets.get(node, 0)
        if amount > have:
            raise PaymentFailed("onchain_insufficient", f"node {node} has {have} < {amount} msat")
        self.wallets[node] = have - amount

    def broadcast(self, tx: Tx) -> Tx:
        """Put a transaction in the mempool (its inputs were already taken by the caller)."""
        if tx.fee < 0 or any(o.amount < 0 for o in tx.outputs):
            raise ValueError("negative amounts in a transaction")
        self.mempool.append(tx)
        return tx

    def mine(self, blocks: int = 1) -> None:
        """Mine ``blocks`` blocks: confirm the mempool, mature outputs, tell the observers."""
        for _ in range(blocks):
            self.height += 1
            confirmed, self.mempool = self.mempool, []
            for tx in confirmed:
                tx.height = self.height
                self.miner_fees += tx.fee
                if tx.on_confirm is not None:
                    tx.on_confirm(
                        tx
                    )  # may take its outputs (a splice-in moves them into a channel)
                for out in tx.outputs:
                    out.matures = max(out.matures, self.height)
                    self.outputs.append(out)
            for observer in list(self.observers):
                observer(self.height, confirmed)
            self._mature()

    def _mature(self) -> None:
        still: list[Output] = []
        for out in self.outputs:
            if out.matures <= self.height:
                self.wallets[out.owner] = self.wallets.get(out.owner, 0) + out.amount
            else:
                still.append(out)
        self.outputs = still

    def total_msat(self) -> int:
        """Every coin the chain accounts for: wallets, mempool, outputs waiting, miners' fees."""
        pending = sum(o.amount for tx in self.mempool for o in tx.outputs)
        pending += sum(tx.fee for tx in self.mempool)
        return (
            sum(self.wallets.values())
            + pending
            + sum(o.amount for o in self.outputs)
            + (self.miner_fees)
        )


class Watchtower:
    """Watches the chain for revoked commitments of its clients' channels and punishes them.

    A cheater's output on a revoked commitment is time-locked for ``to_self_delay`` blocks; the
    tower sees the revoked transaction in the block that confirms it and broadcasts the penalty
    transaction at once, which sweeps that output to the honest node (minus one fee).
    """

    def __init__(self, chain: Chain, clients: set[int] | None = None) -> None:
        self.chain = chain
        self.clients: set[int] | None = clients
        """Nodes it protects (None: every node)."""
        self.interventions = 0
        self.online = True
        chain.observers.append(self._on_block)

    def _on_block(self, height: int, confirmed: list[Tx]) -> None:
        if not self.online:
            return
        for tx in confirmed:
            if tx.kind is not TxKind.REVOKED:
                continue
            for out in tx.outputs:
                victim = out.revoked_by
                if victim is None or (self.clients is not None and victim not in self.clients):
                    continue
                if out.matures <= height:
                    continue  # too late: the time lock has run out
                self._punish(out, victim, tx.channel)

    def _punish(self, out: Output, victim: int, channel: int | None) -> None:
        chain = self.chain
        fee = min(chain.tx_fee_msat, out.amount)
        chain.outputs.remove(out)  # swept before it matured
        swept = Output(victim, out.amount - fee, chain.height + 1)
        chain.broadcast(Tx(TxKind.PENALTY, fee, [swept], channel))
        self.interventions += 1
