"""The trader: a buyer or a seller in each slot, holding several negotiations at once.

Its reservation price comes from the outside option: a buyer pays at most the grid's import price,
a seller takes at least the export price. It opens at an aspiration anchored on the mean-field
guidance when there is one (the expected clearing price for its type, else the community's recent
volume-weighted price, pushed a little in its own favour), otherwise on the other side's outside
option, and concedes along its strategy.
Quantity is reserved per negotiation, so the negotiations it holds at once can never commit more
than it has; what is left at gate closure goes to the grid.

With a ``forecast`` (samples of its net position for the slot), the trader decides before it knows
that position, as it must in a real market: it chooses the side and the quantity that minimise
its mean-CVaR cost (:mod:`agents.risk`; ``risk_aversion`` is gamma) at the expected price, and its
reservation is the exact mean-CVaR reservation for that quantity. At gate closure the realised
position, net of what it traded, goes to the grid at the tariff: surplus bought is exported, a
shortfall imported. A risk-neutral trader buys the newsvendor quantile; a risk-averse one hedges
the expensive tail (a buyer buys more, a seller sells less).

With a ``policy`` (a learned pricing rule, :mod:`agents.learned`), the trader's limit and the
quantity it offers come from the policy instead of the tariff and its whole position.

Handlers are synchronous and pure apart from the agent's own state; every message goes through the
protocol (``negotiator.protocol``), the agent's own moves included.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Sequence
from typing import Any, Final

import numpy as np

from agents.risk import reservation_price, risk
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
Forecast = Callable[[int], np.ndarray]
"""``slot -> samples`` of the agent's net position in the slot (Wh), before it is known."""
_CANDIDATES: Final = np.linspace(0.05, 0.95, 19)
"""Quantiles of the forecast a trader considers as its quantity."""
Limit = Callable[[int, str, int, int, int, object], tuple[int, int]]
"""``(slot, agent_type, net_wh, import_price, export_price, view) -> (limit, quantity)``: a
learned trader's limit price (msat per kWh) and the quantity it offers (Wh) when a slot opens."""
Tariff = Callable[[int], tuple[int, int]]
"""``slot -> (import_price, export_price)`` in msat per kWh."""


class _Neg:
    __slots__ = ("reserved", "state")

    def __init__(self, state: NegotiationState, reserved: int) -> None:
        self.state = state
        self.reserved = reserved


class Trader:
    """A trader with a time-dependent concession strategy: each slot it buys ``net(slot)`` units
    (or sells, when negative) of its ``resource`` between the limits ``tariff(slot)`` gives (the
    most it pays to buy, the least it takes to sell; msat per 1,000 units) and books the rest with
    :meth:`outside_option`. Its fields are named for energy, the first domain (``imported_wh``:
    units to the outside option), but it trades any resource (:mod:`domains`)."""

    __slots__ = (
        "_after",
        "_alpha",
        "_aspiration",
        "_available",
        "_closed_nids",
        "_deadline_s",
        "_forecast",
        "_gamma",
        "_max_rounds",
        "_negs",
        "_net",
        "_policy",
        "_prices",
        "_reservation",
        "_side",
        "_slot",
        "_tariff",
        "_traded",
        "address",
        "agent_type",
        "bought_wh",
        "cost_msat",
        "exported_wh",
        "imported_wh",
        "peer_paid_msat",
        "peer_received_msat",
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
        forecast: Forecast | None = None,
        risk_aversion: float = 0.0,
        alpha: float = 0.05,
        policy: Limit | None = None,
    ) -> None:
        if max_rounds < 1:
            raise ValueError("max_rounds must be at least 1")
        if not 0 <= risk_aversion <= 1 or not 0 < alpha <= 1:
            raise ValueError("risk_aversion must be in [0, 1] and alpha in (0, 1]")
        self._forecast = forecast
        self._policy = policy
        self._gamma = risk_aversion
        self._alpha = alpha
        self._traded = 0
        """Signed quantity agreed in the current slot: + bought, - sold."""
        self._after = array("q")
        """Per closed slot: the position left to the grid (+ imported, - exported)."""
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
        self.peer_paid_msat = self.peer_received_msat = 0
        """What it paid peers (fees included) and was paid by them, for agreements it made."""

    # -- slots --------------------------------------------------------------------------------

    def open_slot(self, slot: int, view: object) -> Position | None:
        """Read the net need (or its forecast) and the tariff, set reservation and aspiration."""
        self._slot = slot
        self._closed_nids.clear()
        self._prices = ()
        self._traded = 0
        imp, exp = self._tariff(slot)
        guidance = _anchor_price(view, self.agent_type)
        if self._forecast is None:
            net = self._net(slot)
            side = Side.BUY if net > 0 else Side.SELL
            quantity, reservation = abs(net), imp if net > 0 else exp
            if self._policy is not None and net:
                limit, offered = self._policy(slot, self.agent_type, net, imp, exp, view)
                quantity, reservation = min(max(offered, 0), abs(net)), min(max(limit, exp), imp)
        else:
            expected = (imp + exp) / 2 if guidance is None else guidance
            side, quantity, reservation = self._plan(self._forecast(slot), imp, exp, expected)
        self._available = quantity
        if quantity == 0:
            return None
        self._side = side
        self._reservation = reservation
        if side is Side.BUY:
            anchor = exp if guidance is None else int(guidance * (1 - GUIDANCE_MARGIN))
            self._aspiration = min(max(anchor, exp), reservation)
        else:
            anchor = imp if guidance is None else int(guidance * (1 + GUIDANCE_MARGIN))
            self._aspiration = max(min(anchor, imp), reservation)
        return Position(self.address, side, quantity, reservation, self.agent_type, self.resource)

    def _plan(self, samples: np.ndarray, imp: int, exp: int, price: float) -> tuple[Side, int, int]:
        """Side, quantity and reservation from forecast samples under mean-CVaR: the quantity
        (a quantile of the forecast, or nothing) that minimises the risk of the slot's cost when
        traded at ``price``, and the exact reservation for it."""
        need = np.asarray(samples, np.float64)
        side = Side.BUY if float(np.median(need)) > 0 else Side.SELL
        sign = 1.0 if side is Side.BUY else -1.0
        wanted = np.clip(sign * need, 0.0, None)
        candidates = np.unique(np.rint(np.quantile(wanted, _CANDIDATES)))
        candidates = candidates[candidates > 0]
        if candidates.size == 0:
            return side, 0, imp if side is Side.BUY else exp
        # cost of trading q at price: sign * price * q plus the grid bill of what remains
        rest = need[None, :] - sign * candidates[:, None]
        bill = (np.clip(rest, 0, None) * imp - np.clip(-rest, 0, None) * exp) / 1000
        scores = sign * price * candidates / 1000 + risk(bill, self._gamma, self._alpha)
        idle = risk(
            (np.clip(need, 0, None) * imp - np.clip(-need, 0, None) * exp) / 1000,
            self._gamma,
            self._alpha,
        )
        best = int(np.argmin(scores))
        if scores[best] >= idle:
            return side, 0, imp if side is Side.BUY else exp
        q = float(candidates[best])
        value = float(
            reservation_price(side, need, q, imp, exp, gamma=self._gamma, alpha=self._alpha)
        )
        return side, int(q), int(min(max(value, exp), imp))

    def reopen(self, slot: int) -> Position | None:
        """The aftermarket, before gate closure: what is still untraded after an agreement
        failed (the same side and reservation as at the opening), or None."""
        if slot != self._slot or self._available <= 0:
            return None
        return Position(
            self.address,
            self._side,
            self._available,
            self._reservation,
            self.agent_type,
            self.resource,
        )

    def close_slot(self, slot: int) -> None:
        """Gate closure: the realised position, net of what was traded, goes to the grid at
        the tariff."""
        for nid in [n for n, neg in self._negs.items() if neg.state.phase in _OPEN]:
            self._release(nid)
        self._available = 0
        left = self._net(slot) - self._traded
        if len(self._after) <= slot:
            self._after.extend([0] * (slot + 1 - len(self._after)))
        self._after[slot] = left
        self.outside_option(slot, left, +1)

    def outside_option(self, slot: int, position: int, sign: int) -> None:
        """Book (``sign`` +1) or take back (-1, a settlement failed) the untraded ``position``
        of ``slot`` (+ to buy, - to sell) with the outside option. For energy that is the grid
        at the tariff (what this does); a domain's trader overrides it (a spot courier...)."""
        imp, exp = self._tariff(slot)
        if position > 0:
            self.imported_wh += sign * position
            self.cost_msat += sign * (position * imp // 1000)
        elif position < 0:
            self.exported_wh += sign * -position
            self.revenue_msat += sign * (-position * exp // 1000)

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
        if neg.state.phase is _EXPIRED:
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
        good = price <= bound if self._side is _BUY else price >= bound
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
        if was is _ACCEPTED:  # our Accept came too late: the runtime voided it
            q = neg.state.terms.quantity
            if self.address == neg.state.buyer:
                self.bought_wh -= q
                self._traded -= q
            else:
                self.sold_wh -= q
                self._traded += q
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
            self.peer_paid_msat += amount + msg.fee_msat
        else:
            self.revenue_msat += amount
            self.peer_received_msat += amount
        del self._negs[msg.nid]
        self._closed_nids.add(msg.nid)
        return ()

    def _on_failed(self, msg: SettlementFailed, now: float) -> Sequence[Effect]:
        neg = self._neg(msg.nid)
        neg.state = transition(neg.state, msg, now)[0]
        state = neg.state
        q, slot = state.terms.quantity, state.terms.start
        delta = q if self.address == state.buyer else -q  # what was not delivered after all
        if self.address == state.buyer:
            self.bought_wh -= q
        else:
            self.sold_wh -= q
        if slot < len(self._after):  # the slot is closed: redo its grid side without the trade
            before = self._after[slot]
            self.outside_option(slot, before, -1)
            self._after[slot] = before + delta
            self.outside_option(slot, before + delta, +1)
        else:  # the slot is still open: the quantity can be traded again (the aftermarket)
            self._traded -= delta
            self._available += q
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
        if phase is _ACCEPTED:
            if self.address == neg.state.buyer:
                self.bought_wh += neg.state.terms.quantity
                self._traded += neg.state.terms.quantity
            else:
                self.sold_wh += neg.state.terms.quantity
                self._traded -= neg.state.terms.quantity
            self._available += neg.reserved - neg.state.terms.quantity
            neg.reserved = 0
        elif phase in _ENDED:
            self._release(neg.state.nid)

    def _release(self, nid: int) -> None:
        neg = self._negs.pop(nid)
        self._closed_nids.add(nid)
        self._available += neg.reserved

    @property
    def learned(self) -> bool:
        """Whether a policy sets this trader's limits."""
        return self._policy is not None

    @property
    def policy(self) -> Limit | None:
        """The pricing rule that sets its limit and quantity (None: the tariff, everything)."""
        return self._policy

    @policy.setter
    def policy(self, rule: Limit | None) -> None:
        self._policy = rule

    @property
    def open_negotiations(self) -> int:
        """Negotiations not yet settled, failed or closed."""
        return len(self._negs)


_OPEN: Final = frozenset({Phase.PROPOSED, Phase.COUNTERED})
_ENDED: Final = frozenset({Phase.REJECTED, Phase.WITHDRAWN, Phase.EXPIRED})
_ACCEPTED: Final = Phase.ACCEPTED  # read as globals on the hot path: see negotiator.protocol
_EXPIRED: Final = Phase.EXPIRED
_BUY: Final = Side.BUY

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
