"""The trader: a buyer or a seller in each slot, holding several negotiations at once.

Its reservation price comes from the outside option: a buyer pays at most the grid's import price,
a seller takes at least the export price. It opens at an aspiration anchored on the mean-field
guidance when there is one (the expected clearing price for its type, else the community's recent
volume-weighted price, pushed a little in its own favour), otherwise on the other side's outside
option, and concedes along its strategy.
Quantity is reserved per negotiation, so the negotiations it holds at once can never commit more
than it has; what is left at gate closure goes to the grid.

Handlers are synchronous and pure apart from the agent's own state; every message goes through the
protocol (``negotiator.protocol``), the agent's own moves included.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Final

from agents.strategies import TimeDependent
from negotiator.actor import Effect, Pay, Position, Skip
from negotiator.errors import ProtocolViolation, Violation
from negotiator.messages import (
    SYSTEM,
    Accept,
    AnyMessage,
    Counter,
    InvoiceIssued,
    Paid,
    Propose,
    Reject,
    SettlementFailed,
    Side,
    Start,
    Terms,
    Timeout,
    Withdraw,
)
from negotiator.protocol import NegotiationState, Phase, start, transition

GUIDANCE_MARGIN: Final = 0.05
"""How far from the guidance price a trader opens, in its own favour (5%)."""

NetPosition = Callable[[int], int]
"""``slot -> Wh``: positive when the agent needs energy, negative when it has surplus."""
Tariff = Callable[[int], tuple[int, int]]
"""``slot -> (import_price, export_price)`` in msat per kWh."""


class _Neg:
    __slots__ = ("reserved", "state")

    def __init__(self, state: NegotiationState, reserved: int) -> None:
        self.state = state
        self.reserved = reserved


class Trader:
    """An energy trader with a time-dependent concession strategy."""

    __slots__ = (
        "_aspiration",
        "_available",
        "_closed_nids",
        "_deadline_s",
        "_max_rounds",
        "_negs",
        "_net",
        "_prices",
        "_reservation",
        "_side",
        "_slot",
        "_tariff",
        "address",
        "agent_type",
        "bought_wh",
        "cost_msat",
        "exported_wh",
        "imported_wh",
        "resource",
        "revenue_msat",
        "sold_wh",
        "strategy",
    )

    def __init__(
        self,
        address: int,
        agent_type: str,
        net: NetPosition,
        tariff: Tariff,
        strategy: TimeDependent,
        *,
        max_rounds: int = 10,
        deadline_s: float = math.inf,
        resource: str = "energy",
    ) -> None:
        if max_rounds < 1:
            raise ValueError("max_rounds must be at least 1")
        self.address = address
        self.agent_type = agent_type
        self.strategy = strategy
        self.resource = resource
        self._net = net
        self._tariff = tariff
        self._max_rounds = max_rounds
        self._deadline_s = deadline_s
        self._negs: dict[int, _Neg] = {}
        self._closed_nids: set[int] = set()
        self._slot = -1
        self._side = Side.BUY
        self._available = 0
        self._aspiration = 0
        self._reservation = 0
        self._prices: tuple[int, ...] = ()
        self.bought_wh = self.sold_wh = self.imported_wh = self.exported_wh = 0
        self.cost_msat = self.revenue_msat = 0

    # -- slots --------------------------------------------------------------------------------

    def open_slot(self, slot: int, view: object) -> Position | None:
        """Read the net need and the tariff, set reservation and aspiration prices."""
        net = self._net(slot)
        self._slot = slot
        self._closed_nids.clear()
        self._prices = ()
        self._available = abs(net)
        if net == 0:
            return None
        imp, exp = self._tariff(slot)
        guidance = _anchor_price(view, self.agent_type)
        if net > 0:
            self._side = Side.BUY
            self._reservation = imp
            anchor = exp if guidance is None else int(guidance * (1 - GUIDANCE_MARGIN))
            self._aspiration = min(max(anchor, exp), imp)
        else:
            self._side = Side.SELL
            self._reservation = exp
            anchor = imp if guidance is None else int(guidance * (1 + GUIDANCE_MARGIN))
            self._aspiration = max(min(anchor, imp), exp)
        return Position(
            self.address, self._side, abs(net), self._reservation, self.agent_type, self.resource
        )

    def close_slot(self, slot: int) -> None:
        """Gate closure: untraded quantity goes to the grid at the tariff."""
        for nid in [n for n, neg in self._negs.items() if neg.state.phase in _OPEN]:
            self._release(nid)
        left = self._available
        self._available = 0
        if left <= 0:
            return
        imp, exp = self._tariff(slot)
        if self._side is Side.BUY:
            self.imported_wh += left
            self.cost_msat += left * imp // 1000
        else:
            self.exported_wh += left
            self.revenue_msat += left * exp // 1000

    # -- messages -----------------------------------------------------------------------------

    def handle(self, message: AnyMessage, now: float) -> Sequence[Effect]:
        """Dispatch one message by kind."""
        return _DISPATCH[type(message)](self, message, now)

    def _on_start(self, msg: Start, now: float) -> Sequence[Effect]:
        if msg.sender != SYSTEM or msg.receiver != self.address:
            raise ProtocolViolation(Violation.WRONG_PARTY, msg.nid, "only the runtime starts")
        if msg.nid in self._negs or msg.nid in self._closed_nids:
            raise ProtocolViolation(Violation.REPLAY, msg.nid, "negotiation seen before")
        q = min(self._available, msg.quantity)
        if q <= 0 or msg.slot != self._slot or msg.side is not self._side:
            return (Skip(msg.nid, self.address),)
        price = (self._prices or self._schedule())[0]
        terms = Terms(self.resource, q, price, msg.slot, msg.slot + 1)
        propose = Propose(msg.nid, self.address, msg.counterparty, 1, 1, self._side, terms)
        state, _ = start(propose, now, max_rounds=self._max_rounds, deadline=now + self._deadline_s)
        self._available -= q
        self._negs[msg.nid] = _Neg(state, q)
        return (propose,)

    def _on_propose(self, msg: Propose, now: float) -> Sequence[Effect]:
        nid = msg.nid
        if msg.receiver != self.address:
            raise ProtocolViolation(Violation.WRONG_PARTY, nid, f"addressed to {msg.receiver}")
        if nid in self._negs or nid in self._closed_nids:
            raise ProtocolViolation(Violation.REPLAY, nid, "negotiation seen before")
        state, _ = start(msg, now, max_rounds=self._max_rounds, deadline=now + self._deadline_s)
        terms = msg.terms
        q = min(self._available, terms.quantity)
        compatible = (
            msg.side is not self._side
            and terms.resource == self.resource
            and terms.start == self._slot
        )
        if not compatible or q <= 0:
            reject = Reject(nid, self.address, msg.sender, 1, msg.seq + 1, "no_interest")
            transition(state, reject, now)  # our own move is checked like any other
            self._closed_nids.add(nid)
            return (reject,)
        self._available -= q
        neg = _Neg(state, q)
        self._negs[nid] = neg
        return self._respond(neg, msg.sender, msg.seq, now)

    def _on_counter(self, msg: Counter, now: float) -> Sequence[Effect]:
        neg = self._neg(msg.nid)
        neg.state = transition(neg.state, msg, now)[0]
        if neg.state.phase is Phase.EXPIRED:
            self._release(msg.nid)
            return ()
        if msg.terms.quantity < neg.reserved:  # they want less: give the difference back
            self._available += neg.reserved - msg.terms.quantity
            neg.reserved = msg.terms.quantity
        return self._respond(neg, msg.sender, msg.seq, now)

    def _respond(self, neg: _Neg, other: int, seq: int, now: float) -> Sequence[Effect]:
        """AC_next against our own schedule: accept what beats our next offer, else counter."""
        state = neg.state
        offer = state.terms
        nid, rnd = state.nid, state.round
        last = rnd >= state.max_rounds
        bound = self._reservation if last else (self._prices or self._schedule())[rnd]
        price = offer.price
        good = price <= bound if self._side is Side.BUY else price >= bound
        reply: Any
        if good and offer.quantity <= neg.reserved:
            reply = Accept(nid, self.address, other, rnd, seq + 1, offer)
        elif not last:
            terms = Terms(offer.resource, neg.reserved, bound, offer.start, offer.end)
            reply = Counter(nid, self.address, other, rnd + 1, seq + 1, terms)
        else:
            reply = Reject(nid, self.address, other, rnd, seq + 1, "no_agreement")
        neg.state = transition(state, reply, now)[0]
        self._closed(neg)
        return (reply,)

    def _schedule(self) -> tuple[int, ...]:
        self._prices = self.strategy.schedule(self._max_rounds, self._aspiration, self._reservation)
        return self._prices

    def _on_accept(self, msg: Accept, now: float) -> Sequence[Effect]:
        neg = self._neg(msg.nid)
        neg.state = transition(neg.state, msg, now)[0]
        self._closed(neg)
        return ()

    def _on_close(self, msg: Reject | Withdraw | Timeout, now: float) -> Sequence[Effect]:
        neg = self._negs.get(msg.nid)
        if neg is None:
            if msg.sender == SYSTEM and type(msg) is Timeout:
                # The runtime closed a negotiation we never saw open (our Start, or the peer's
                # Propose, came too late to be relayed) or already closed ourselves: no-op.
                self._closed_nids.add(msg.nid)
                return ()
            neg = self._neg(msg.nid)  # raises UNKNOWN_NEGOTIATION
        was = neg.state.phase
        neg.state = transition(neg.state, msg, now)[0]
        if was is Phase.ACCEPTED:  # our Accept came too late: the runtime voided it
            q = neg.state.terms.quantity
            if self.address == neg.state.buyer:
                self.bought_wh -= q
            else:
                self.sold_wh -= q
            neg.reserved = q
        self._closed(neg)
        return ()

    def _on_invoice(self, msg: InvoiceIssued, now: float) -> Sequence[Effect]:
        neg = self._neg(msg.nid)
        neg.state = transition(neg.state, msg, now)[0]  # checks payee and amount
        return (Pay(msg.nid, self.address, msg.invoice),)

    def _on_paid(self, msg: Paid, now: float) -> Sequence[Effect]:
        neg = self._neg(msg.nid)
        neg.state = transition(neg.state, msg, now)[0]
        amount = neg.state.terms.amount_msat()
        if self.address == neg.state.buyer:
            self.cost_msat += amount + msg.fee_msat
        else:
            self.revenue_msat += amount
        del self._negs[msg.nid]
        self._closed_nids.add(msg.nid)
        return ()

    def _on_failed(self, msg: SettlementFailed, now: float) -> Sequence[Effect]:
        neg = self._neg(msg.nid)
        neg.state = transition(neg.state, msg, now)[0]
        state = neg.state
        q, slot = state.terms.quantity, state.terms.start
        if self.address == state.buyer:  # the energy was not bought: the grid supplies it
            self.bought_wh -= q
            self.imported_wh += q
            self.cost_msat += q * self._tariff(slot)[0] // 1000
        else:
            self.sold_wh -= q
            self.exported_wh += q
            self.revenue_msat += q * self._tariff(slot)[1] // 1000
        del self._negs[msg.nid]
        self._closed_nids.add(msg.nid)
        return ()

    # -- bookkeeping --------------------------------------------------------------------------

    def _neg(self, nid: int) -> _Neg:
        neg = self._negs.get(nid)
        if neg is None:
            raise ProtocolViolation(Violation.UNKNOWN_NEGOTIATION, nid, f"agent {self.address}")
        return neg

    def _closed(self, neg: _Neg) -> None:
        phase = neg.state.phase
        if phase is Phase.ACCEPTED:
            if self.address == neg.state.buyer:
                self.bought_wh += neg.state.terms.quantity
            else:
                self.sold_wh += neg.state.terms.quantity
            self._available += neg.reserved - neg.state.terms.quantity
            neg.reserved = 0
        elif phase in _ENDED:
            self._release(neg.state.nid)

    def _release(self, nid: int) -> None:
        neg = self._negs.pop(nid)
        self._closed_nids.add(nid)
        self._available += neg.reserved

    @property
    def open_negotiations(self) -> int:
        """Negotiations not yet settled, failed or closed."""
        return len(self._negs)


_OPEN: Final = frozenset({Phase.PROPOSED, Phase.COUNTERED})
_ENDED: Final = frozenset({Phase.REJECTED, Phase.WITHDRAWN, Phase.EXPIRED})

_DISPATCH: Final[dict[type, Callable[[Trader, Any, float], Sequence[Effect]]]] = {
    Start: Trader._on_start,
    Propose: Trader._on_propose,
    Counter: Trader._on_counter,
    Accept: Trader._on_accept,
    Reject: Trader._on_close,
    Withdraw: Trader._on_close,
    Timeout: Trader._on_close,
    InvoiceIssued: Trader._on_invoice,
    Paid: Trader._on_paid,
    SettlementFailed: Trader._on_failed,
}


def _anchor_price(view: object, agent_type: str) -> float | None:
    """The mean-field service's expected clearing price for this type, else its recent VWAP."""
    advice = getattr(view, "guidance", None)
    if isinstance(advice, dict):
        mine = advice.get(agent_type)
        price = getattr(mine, "price", None)
        if price is not None:
            return float(price)
    vwap = getattr(view, "guidance_price", None)
    return None if vwap is None else float(vwap)
