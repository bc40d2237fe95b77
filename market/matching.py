"""Matching: who negotiates with whom in a slot.

The board matcher is a posted-ask board: sellers' asks are ranked cheapest first (ties broken at
random), buyers arrive in random order and each is paired with up to ``max_partners`` sellers that
still have unallocated quantity, so every buyer holds several negotiations at once and a seller's
surplus is spread over several buyers. Each pairing carries the quantity allocated to it, which
bounds what the buyer will propose.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from negotiator.actor import Matcher, Pairing, Position
from negotiator.messages import Side


def board_matcher(max_partners: int = 2) -> Matcher:
    """A matcher that pairs each buyer with up to ``max_partners`` of the cheapest asks."""
    if max_partners < 1:
        raise ValueError("max_partners must be at least 1")

    def match(
        slot: int, positions: Sequence[Position], view: object, rng: np.random.Generator
    ) -> list[Pairing]:
        pairings: list[Pairing] = []
        for resource in sorted({p.resource for p in positions}):
            of_resource = [p for p in positions if p.resource == resource and p.quantity > 0]
            buyers = [p for p in of_resource if p.side is Side.BUY]
            sellers = [p for p in of_resource if p.side is Side.SELL]
            if buyers and sellers:
                pairings.extend(_match_board(buyers, sellers, max_partners, rng))
        return pairings

    return match


def _match_board(
    buyers: list[Position], sellers: list[Position], max_partners: int, rng: np.random.Generator
) -> list[Pairing]:
    tiebreak = rng.permutation(len(sellers))
    order = sorted(range(len(sellers)), key=lambda i: (sellers[i].reservation, tiebreak[i]))
    asks = [sellers[i] for i in order]
    capacity = [p.quantity for p in asks]
    pairings: list[Pairing] = []
    cursor = 0
    for b in rng.permutation(len(buyers)):
        buyer = buyers[int(b)]
        need = buyer.quantity
        partners = 0
        while need > 0 and partners < max_partners and cursor < len(asks):
            if capacity[cursor] == 0:
                cursor += 1
                continue
            q = min(need, capacity[cursor])
            pairings.append(Pairing(buyer.agent, asks[cursor].agent, Side.BUY, q))
            capacity[cursor] -= q
            need -= q
            partners += 1
    return pairings
