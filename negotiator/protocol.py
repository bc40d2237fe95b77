"""The negotiation protocol: a pure transition function over frozen state.

``start(propose, now, ...)`` opens a negotiation; ``transition(state, message, now)`` returns the next
state and the events that happened, or raises :class:`ProtocolViolation` and leaves the state as it
was. No I/O, no clock reads, no randomness: ``now`` is passed in (monotonic seconds).

Phases::

    proposed --counter--> countered --counter--> countered ...
       |  \\                 |
       |   accept/reject/withdraw (whoever may), or the deadline passes -> expired
       v
    accepted --invoice--> settling --paid--> settled
       \\________ settlement_failed ________> failed

Rules:

* Offers alternate: only the party whose ``turn`` it is may counter, accept or reject; either party
  may withdraw while the negotiation is open.
* Every message's ``seq`` must exceed the last accepted one (replays are refused).
* An offer's ``round`` is the previous round plus one; answers (accept, reject) carry the round they
  answer. At most ``max_rounds`` offers are made: at the last one, only accept or reject is legal.
* A message that arrives after the wall-clock ``deadline`` of an open negotiation is not applied: the
  negotiation becomes ``expired``.
* Accept must repeat the terms on the table exactly; a counter-offer cannot change the resource or
  the delivery window.
* The runtime (sender ``SYSTEM``) may close a negotiation: ``Timeout`` expires an open one (its
  deadline or the slot's gate closure passed), or an accepted one whose Accept reached the runtime
  only after it had closed the negotiation (the runtime is the arbiter of that race and never
  relays such an Accept), ``Withdraw`` withdraws it for a failed agent, and
  ``SettlementFailed`` fails an agreement whose payment failed. Sequence numbers do not apply.
* Settlement: the seller issues an invoice for exactly the agreed amount; the buyer's Paid must carry
  that payment hash and a preimage that hashes to it. Either side may report the settlement failed.
"""

from __future__ import annotations

import enum
import hashlib
import math
from typing import Final

import msgspec

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
    Terms,
    Timeout,
    Withdraw,
)


class Phase(enum.IntEnum):
    """Where a negotiation stands."""

    PROPOSED = 0
    COUNTERED = 1
    ACCEPTED = 2
    REJECTED = 3
    WITHDRAWN = 4
    EXPIRED = 5
    SETTLING = 6
    SETTLED = 7
    FAILED = 8


OPEN: Final = frozenset({Phase.PROPOSED, Phase.COUNTERED})
TERMINAL: Final = frozenset(
    {Phase.REJECTED, Phase.WITHDRAWN, Phase.EXPIRED, Phase.SETTLED, Phase.FAILED}
)

# The members again as module globals, for the hot path: on Python 3.11 ``Phase.COUNTERED`` goes
# through the enum metaclass's ``__getattr__`` hook (~0.09 us against ~0.01 us for a global), and
# every message reads a few.
_PROPOSED: Final = Phase.PROPOSED
_COUNTERED: Final = Phase.COUNTERED
_ACCEPTED: Final = Phase.ACCEPTED
_REJECTED: Final = Phase.REJECTED
_WITHDRAWN: Final = Phase.WITHDRAWN
_EXPIRED: Final = Phase.EXPIRED
_SETTLING: Final = Phase.SETTLING
_SETTLED: Final = Phase.SETTLED
_FAILED: Final = Phase.FAILED
_BUY: Final = Side.BUY


class Event(enum.Enum):
    """What a transition did, for the agent's and the runtime's bookkeeping."""

    OPENED = "opened"
    COUNTERED = "countered"
    AGREED = "agreed"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    INVOICED = "invoiced"
    SETTLED = "settled"
    FAILED = "failed"


class NegotiationState(msgspec.Struct, frozen=True, gc=False):
    """Everything the protocol knows about one negotiation."""

    nid: int
    buyer: int
    seller: int
    phase: Phase
    round: int
    seq: int
    turn: int
    """Address of the party expected to move next; -1 when nobody is (after acceptance)."""
    terms: Terms
    max_rounds: int
    deadline: float
    """Monotonic seconds after which the open negotiation expires; ``math.inf`` for none."""
    payment_hash: str = ""


_EV_OPENED: Final = (Event.OPENED,)
_EV_COUNTERED: Final = (Event.COUNTERED,)
_EV_AGREED: Final = (Event.AGREED,)
_EV_REJECTED: Final = (Event.REJECTED,)
_EV_WITHDRAWN: Final = (Event.WITHDRAWN,)
_EV_EXPIRED: Final = (Event.EXPIRED,)
_EV_INVOICED: Final = (Event.INVOICED,)
_EV_SETTLED: Final = (Event.SETTLED,)
_EV_FAILED: Final = (Event.FAILED,)

Transition = tuple[NegotiationState, tuple[Event, ...]]

_replace = msgspec.structs.replace


def _check_terms(nid: int, terms: Terms) -> None:
    if terms.quantity <= 0 or terms.price < 0 or terms.end < terms.start:
        raise ProtocolViolation(Violation.BAD_TERMS, nid, repr(terms))


def start(
    propose: Propose, now: float, *, max_rounds: int, deadline: float = math.inf
) -> Transition:
    """Open a negotiation from its first message (both parties call this)."""
    nid = propose.nid
    if type(propose) is not Propose:
        raise ProtocolViolation(Violation.ILLEGAL_IN_PHASE, nid, "a negotiation opens with propose")
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be at least 1, got {max_rounds}")
    if propose.sender == propose.receiver or propose.sender < 0 or propose.receiver < 0:
        raise ProtocolViolation(Violation.WRONG_PARTY, nid, "parties must be two agents")
    if propose.round != 1:
        raise ProtocolViolation(Violation.WRONG_ROUND, nid, "propose is round 1")
    if propose.seq < 1:
        raise ProtocolViolation(Violation.REPLAY, nid, "sequence numbers start at 1")
    _check_terms(nid, propose.terms)
    if propose.side is _BUY:
        buyer, seller = propose.sender, propose.receiver
    else:
        buyer, seller = propose.receiver, propose.sender
    state = NegotiationState(
        nid,
        buyer,
        seller,
        _PROPOSED,
        1,
        propose.seq,
        propose.receiver,
        propose.terms,
        max_rounds,
        deadline,
    )
    return state, _EV_OPENED


def expire(state: NegotiationState, now: float) -> Transition:
    """Expire an open negotiation whose deadline has passed (a timer calls this)."""
    if state.phase not in OPEN:
        raise ProtocolViolation(
            Violation.CLOSED, state.nid, f"cannot expire when {state.phase.name}"
        )
    if now < state.deadline:
        raise ProtocolViolation(Violation.ILLEGAL_IN_PHASE, state.nid, "deadline not reached")
    return _replace(state, phase=_EXPIRED, turn=-1), _EV_EXPIRED


def transition(state: NegotiationState, message: AnyMessage, now: float) -> Transition:
    """Apply one message to a negotiation; raise ProtocolViolation if it is not legal now."""
    nid = state.nid
    if message.nid != nid:
        raise ProtocolViolation(Violation.UNKNOWN_NEGOTIATION, nid, f"message for {message.nid}")
    phase = state.phase
    if phase in TERMINAL:
        raise ProtocolViolation(Violation.CLOSED, nid, f"negotiation is {phase.name}")
    kind = type(message)
    sender = message.sender
    if sender == SYSTEM:
        return _system_transition(state, kind)
    if sender == state.buyer:
        other = state.seller
    elif sender == state.seller:
        other = state.buyer
    else:
        raise ProtocolViolation(Violation.WRONG_PARTY, nid, f"{sender} is not a party")
    seq = message.seq
    if seq <= state.seq:
        raise ProtocolViolation(Violation.REPLAY, nid, f"seq {seq} <= {state.seq}")
    if phase > _COUNTERED:
        return _settlement_transition(state, message, kind)
    # Open: the hot path of every negotiation, written out (one call, no replace()).
    if now > state.deadline:
        return _replace(state, phase=_EXPIRED, turn=-1), _EV_EXPIRED
    if kind not in _OPEN_KINDS:
        raise ProtocolViolation(Violation.ILLEGAL_IN_PHASE, nid, f"{kind.__name__} while open")
    receiver = message.receiver
    if receiver != other:
        raise ProtocolViolation(Violation.WRONG_PARTY, nid, f"receiver {receiver}")
    if kind is Withdraw:
        return _replace(state, phase=_WITHDRAWN, seq=seq, turn=-1), _EV_WITHDRAWN
    if sender != state.turn:
        raise ProtocolViolation(Violation.OUT_OF_TURN, nid, f"{sender} moved out of turn")
    rnd = state.round
    if kind is Counter:
        terms = message.terms  # type: ignore[union-attr]
        if message.round != rnd + 1:
            raise ProtocolViolation(
                Violation.WRONG_ROUND, nid, f"round {message.round}, expected {rnd + 1}"
            )
        if rnd >= state.max_rounds:
            raise ProtocolViolation(Violation.ROUND_LIMIT, nid, f"{state.max_rounds} rounds made")
        if terms.quantity <= 0 or terms.price < 0 or terms.end < terms.start:
            raise ProtocolViolation(Violation.BAD_TERMS, nid, repr(terms))
        old = state.terms
        if terms.resource != old.resource or terms.start != old.start or terms.end != old.end:
            raise ProtocolViolation(Violation.BAD_TERMS, nid, "resource or window changed")
        new = NegotiationState(
            nid,
            state.buyer,
            state.seller,
            _COUNTERED,
            rnd + 1,
            seq,
            receiver,
            terms,
            state.max_rounds,
            state.deadline,
        )
        return new, _EV_COUNTERED
    if message.round != rnd:
        raise ProtocolViolation(
            Violation.WRONG_ROUND, nid, f"round {message.round}, expected {rnd}"
        )
    if kind is Accept:
        if message.terms != state.terms:  # type: ignore[union-attr]
            raise ProtocolViolation(Violation.TERMS_MISMATCH, nid, "accept must repeat the offer")
        new = NegotiationState(
            nid,
            state.buyer,
            state.seller,
            _ACCEPTED,
            rnd,
            seq,
            -1,
            state.terms,
            state.max_rounds,
            state.deadline,
        )
        return new, _EV_AGREED
    return _replace(state, phase=_REJECTED, seq=seq, turn=-1), _EV_REJECTED


def _system_transition(state: NegotiationState, kind: type) -> Transition:
    """The runtime (sender SYSTEM) closes negotiations: deadline, failed peer, failed payment."""
    phase = state.phase
    if kind is Timeout and (phase in OPEN or phase is _ACCEPTED):
        # The runtime arbitrates a race: an Accept it received after it had closed the
        # negotiation (deadline, gate) is void, and the accepter learns so by this Timeout.
        return _replace(state, phase=_EXPIRED, turn=-1), _EV_EXPIRED
    if phase in OPEN:
        if kind is Withdraw:
            return _replace(state, phase=_WITHDRAWN, turn=-1), _EV_WITHDRAWN
    elif kind is SettlementFailed:
        return _replace(state, phase=_FAILED), _EV_FAILED
    raise ProtocolViolation(
        Violation.ILLEGAL_IN_PHASE, state.nid, f"system {kind.__name__} when {state.phase.name}"
    )


def _settlement_transition(state: NegotiationState, message: AnyMessage, kind: type) -> Transition:
    nid = state.nid
    phase = state.phase
    sender = message.sender
    if message.receiver != state.buyer and message.receiver != state.seller:
        raise ProtocolViolation(Violation.WRONG_PARTY, nid, f"receiver {message.receiver}")
    if kind is SettlementFailed:
        return _replace(state, phase=_FAILED, seq=message.seq), _EV_FAILED
    if kind is InvoiceIssued and phase is _ACCEPTED:
        assert isinstance(message, InvoiceIssued)
        invoice = message.invoice
        if sender != state.seller or invoice.payee != state.seller:
            raise ProtocolViolation(Violation.WRONG_PARTY, nid, "only the seller invoices")
        if message.receiver != state.buyer:
            raise ProtocolViolation(Violation.WRONG_PARTY, nid, "invoices go to the buyer")
        if invoice.amount_msat != state.terms.amount_msat():
            raise ProtocolViolation(
                Violation.TERMS_MISMATCH,
                nid,
                f"invoice for {invoice.amount_msat} msat, agreed {state.terms.amount_msat()}",
            )
        new = _replace(state, phase=_SETTLING, seq=message.seq, payment_hash=invoice.payment_hash)
        return new, _EV_INVOICED
    if kind is Paid and phase in _PAYABLE:
        assert isinstance(message, Paid)
        if sender != state.buyer:
            raise ProtocolViolation(Violation.WRONG_PARTY, nid, "only the buyer pays")
        if state.payment_hash and message.payment_hash != state.payment_hash:
            raise ProtocolViolation(Violation.TERMS_MISMATCH, nid, "paid another payment hash")
        if hashlib.sha256(bytes.fromhex(message.preimage)).hexdigest() != message.payment_hash:
            raise ProtocolViolation(Violation.TERMS_MISMATCH, nid, "preimage does not match")
        new = _replace(state, phase=_SETTLED, seq=message.seq, payment_hash=message.payment_hash)
        return new, _EV_SETTLED
    raise ProtocolViolation(Violation.ILLEGAL_IN_PHASE, nid, f"{kind.__name__} when {phase.name}")


_PAYABLE: Final = frozenset({_ACCEPTED, _SETTLING})
_OPEN_KINDS: Final = frozenset({Counter, Accept, Reject, Withdraw})
