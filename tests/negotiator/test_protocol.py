"""The protocol state machine: every legal transition, every illegal one, random sequences."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from negotiator.errors import ProtocolViolation, Violation
from negotiator.messages import (
    SYSTEM,
    Accept,
    AnyMessage,
    Counter,
    Invoice,
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
from negotiator.protocol import (
    OPEN,
    TERMINAL,
    Event,
    NegotiationState,
    Phase,
    expire,
    start,
    transition,
)

B, S, X = 1, 2, 3  # buyer, seller, outsider
NID = 7
T = Terms("energy", 1000, 200_000, 5, 6)
PREIMAGE = "11" * 32
HASH = "02d449a31fbb267c8f352e9968a79e3e5fc95c1bbeaa502fd6454ebde5a4bedc"  # sha256(0x11 * 32)


def terms(price: int = 200_000, quantity: int = 1000) -> Terms:
    return Terms("energy", quantity, price, 5, 6)


def opened(max_rounds: int = 5, deadline: float = math.inf) -> NegotiationState:
    """Buyer B proposed T to seller S."""
    state, events = start(
        Propose(NID, B, S, 1, 1, Side.BUY, T), 0.0, max_rounds=max_rounds, deadline=deadline
    )
    assert events == (Event.OPENED,)
    return state


def countered() -> NegotiationState:
    """S countered at round 2; it is B's turn."""
    return transition(opened(), Counter(NID, S, B, 2, 2, terms(250_000)), 0.0)[0]


def accepted() -> NegotiationState:
    return transition(countered(), Accept(NID, B, S, 2, 3, terms(250_000)), 0.0)[0]


def invoice(amount: int = 250_000, payee: int = S) -> Invoice:
    return Invoice(payee, amount, HASH, "agreement-7", "inprocess:x", 1e12)


def settling() -> NegotiationState:
    return transition(accepted(), InvoiceIssued(NID, S, B, 0, 4, invoice()), 0.0)[0]


# -- legal transitions -----------------------------------------------------------------------


def test_propose_by_buyer_opens_with_seller_to_move() -> None:
    state = opened()
    assert (state.phase, state.buyer, state.seller, state.turn) == (Phase.PROPOSED, B, S, S)
    assert (state.round, state.seq, state.terms) == (1, 1, T)


def test_propose_by_seller_makes_the_receiver_the_buyer() -> None:
    state, _ = start(Propose(NID, S, B, 1, 1, Side.SELL, T), 0.0, max_rounds=3)
    assert (state.buyer, state.seller, state.turn) == (B, S, B)


def test_counter_alternates_turns_and_counts_rounds() -> None:
    state = countered()
    assert (state.phase, state.round, state.turn, state.terms.price) == (
        Phase.COUNTERED,
        2,
        B,
        250_000,
    )
    state, events = transition(state, Counter(NID, B, S, 3, 3, terms(220_000)), 0.0)
    assert (state.round, state.turn, events) == (3, S, (Event.COUNTERED,))


@pytest.mark.parametrize("make", [opened, countered], ids=["proposed", "countered"])
def test_accept_takes_the_offer_on_the_table(make: Callable[[], NegotiationState]) -> None:
    state = make()
    mover, other = state.turn, B if state.turn == S else S
    new, events = transition(state, Accept(NID, mover, other, state.round, 9, state.terms), 0.0)
    assert (new.phase, new.turn, events) == (Phase.ACCEPTED, -1, (Event.AGREED,))


@pytest.mark.parametrize("make", [opened, countered], ids=["proposed", "countered"])
def test_reject_ends_the_negotiation(make: Callable[[], NegotiationState]) -> None:
    state = make()
    other = B if state.turn == S else S
    new, events = transition(state, Reject(NID, state.turn, other, state.round, 9), 0.0)
    assert (new.phase, events) == (Phase.REJECTED, (Event.REJECTED,))


@pytest.mark.parametrize("party", [B, S])
def test_either_party_may_withdraw_out_of_turn(party: int) -> None:
    other = S if party == B else B
    new, events = transition(opened(), Withdraw(NID, party, other, 1, 5), 0.0)
    assert (new.phase, events) == (Phase.WITHDRAWN, (Event.WITHDRAWN,))


def test_a_late_message_expires_the_negotiation_without_applying_it() -> None:
    state = opened(deadline=10.0)
    new, events = transition(state, Counter(NID, S, B, 2, 2, terms(1)), 10.5)
    assert (new.phase, new.terms, events) == (Phase.EXPIRED, T, (Event.EXPIRED,))


def test_expire_after_the_deadline() -> None:
    new, events = expire(opened(deadline=1.0), 2.0)
    assert (new.phase, events) == (Phase.EXPIRED, (Event.EXPIRED,))


@pytest.mark.parametrize(
    ("message", "phase"),
    [
        (Timeout(NID, SYSTEM, B, 0, 0), Phase.EXPIRED),
        (Withdraw(NID, SYSTEM, B, 0, 0, "agent_failure"), Phase.WITHDRAWN),
    ],
    ids=["timeout", "withdraw"],
)
def test_the_runtime_closes_open_negotiations(message: AnyMessage, phase: Phase) -> None:
    assert transition(countered(), message, 0.0)[0].phase is phase


def test_the_runtime_voids_an_accept_that_came_after_it_closed_the_negotiation() -> None:
    new, events = transition(accepted(), Timeout(NID, SYSTEM, S, 0, 0), 0.0)
    assert (new.phase, events) == (Phase.EXPIRED, (Event.EXPIRED,))


def test_invoice_then_paid_settles() -> None:
    state = settling()
    assert (state.phase, state.payment_hash) == (Phase.SETTLING, HASH)
    new, events = transition(state, Paid(NID, B, S, 0, 5, HASH, PREIMAGE), 0.0)
    assert (new.phase, events) == (Phase.SETTLED, (Event.SETTLED,))


def test_the_seller_settles_on_paid_without_seeing_the_invoice() -> None:
    new, _ = transition(accepted(), Paid(NID, B, S, 0, 5, HASH, PREIMAGE), 0.0)
    assert (new.phase, new.payment_hash) == (Phase.SETTLED, HASH)


def test_the_buyer_gets_its_own_copy_of_paid() -> None:
    new, _ = transition(settling(), Paid(NID, B, B, 0, 5, HASH, PREIMAGE), 0.0)
    assert new.phase is Phase.SETTLED


@pytest.mark.parametrize("make", [accepted, settling], ids=["accepted", "settling"])
@pytest.mark.parametrize("sender", [B, S, SYSTEM])
def test_settlement_can_fail(make: Callable[[], NegotiationState], sender: int) -> None:
    new, events = transition(make(), SettlementFailed(NID, sender, B, 0, 9, "no_route"), 0.0)
    assert (new.phase, events) == (Phase.FAILED, (Event.FAILED,))


# -- illegal transitions ---------------------------------------------------------------------


def _closed(phase: Phase) -> Callable[[], NegotiationState]:
    def make() -> NegotiationState:
        if phase is Phase.REJECTED:
            return transition(opened(), Reject(NID, S, B, 1, 2), 0.0)[0]
        if phase is Phase.WITHDRAWN:
            return transition(opened(), Withdraw(NID, B, S, 1, 2), 0.0)[0]
        if phase is Phase.EXPIRED:
            return transition(opened(), Timeout(NID, SYSTEM, B, 0, 0), 0.0)[0]
        if phase is Phase.SETTLED:
            return transition(settling(), Paid(NID, B, S, 0, 5, HASH, PREIMAGE), 0.0)[0]
        return transition(settling(), SettlementFailed(NID, SYSTEM, B, 0, 0, "x"), 0.0)[0]

    return make


ILLEGAL = [
    ("wrong negotiation", opened, Counter(NID + 1, S, B, 2, 2, T), Violation.UNKNOWN_NEGOTIATION),
    ("outsider", opened, Counter(NID, X, B, 2, 2, T), Violation.WRONG_PARTY),
    ("wrong receiver", opened, Counter(NID, S, X, 2, 2, T), Violation.WRONG_PARTY),
    ("replayed seq", countered, Counter(NID, B, S, 3, 2, T), Violation.REPLAY),
    ("old seq", countered, Accept(NID, B, S, 2, 1, terms(250_000)), Violation.REPLAY),
    ("out of turn counter", opened, Counter(NID, B, S, 2, 2, T), Violation.OUT_OF_TURN),
    ("out of turn accept", opened, Accept(NID, B, S, 1, 2, T), Violation.OUT_OF_TURN),
    ("out of turn reject", countered, Reject(NID, S, B, 2, 3), Violation.OUT_OF_TURN),
    ("counter skips a round", opened, Counter(NID, S, B, 3, 2, T), Violation.WRONG_ROUND),
    ("accept of another round", countered, Accept(NID, B, S, 1, 3, T), Violation.WRONG_ROUND),
    ("accept other terms", countered, Accept(NID, B, S, 2, 3, T), Violation.TERMS_MISMATCH),
    (
        "counter changes resource",
        opened,
        Counter(NID, S, B, 2, 2, Terms("heat", 1, 1, 5, 6)),
        Violation.BAD_TERMS,
    ),
    (
        "counter changes window",
        opened,
        Counter(NID, S, B, 2, 2, Terms("energy", 1, 1, 6, 7)),
        Violation.BAD_TERMS,
    ),
    ("zero quantity", opened, Counter(NID, S, B, 2, 2, terms(1, 0)), Violation.BAD_TERMS),
    ("second propose", opened, Propose(NID, S, B, 2, 2, Side.SELL, T), Violation.ILLEGAL_IN_PHASE),
    ("party sends timeout", opened, Timeout(NID, S, B, 1, 2), Violation.ILLEGAL_IN_PHASE),
    (
        "start mid-way",
        opened,
        Start(NID, S, B, 1, 2, B, Side.SELL, 1, 5),
        Violation.ILLEGAL_IN_PHASE,
    ),
    (
        "invoice while open",
        opened,
        InvoiceIssued(NID, S, B, 1, 2, invoice()),
        Violation.ILLEGAL_IN_PHASE,
    ),
    ("paid while open", opened, Paid(NID, B, S, 1, 2, HASH, PREIMAGE), Violation.ILLEGAL_IN_PHASE),
    ("counter after accept", accepted, Counter(NID, S, B, 3, 9, T), Violation.ILLEGAL_IN_PHASE),
    ("accept twice", accepted, Accept(NID, S, B, 2, 9, terms(250_000)), Violation.ILLEGAL_IN_PHASE),
    (
        "system timeout after invoice",
        settling,
        Timeout(NID, SYSTEM, B, 0, 0),
        Violation.ILLEGAL_IN_PHASE,
    ),
    ("party timeout after accept", accepted, Timeout(NID, S, B, 0, 9), Violation.ILLEGAL_IN_PHASE),
    (
        "invoice by the buyer",
        accepted,
        InvoiceIssued(NID, B, S, 0, 4, invoice()),
        Violation.WRONG_PARTY,
    ),
    (
        "invoice for another payee",
        accepted,
        InvoiceIssued(NID, S, B, 0, 4, invoice(payee=X)),
        Violation.WRONG_PARTY,
    ),
    (
        "invoice to the seller",
        accepted,
        InvoiceIssued(NID, S, S, 0, 4, invoice()),
        Violation.WRONG_PARTY,
    ),
    (
        "invoice wrong amount",
        accepted,
        InvoiceIssued(NID, S, B, 0, 4, invoice(1)),
        Violation.TERMS_MISMATCH,
    ),
    (
        "second invoice",
        settling,
        InvoiceIssued(NID, S, B, 0, 5, invoice()),
        Violation.ILLEGAL_IN_PHASE,
    ),
    ("paid by the seller", settling, Paid(NID, S, B, 0, 5, HASH, PREIMAGE), Violation.WRONG_PARTY),
    (
        "paid another hash",
        settling,
        Paid(NID, B, S, 0, 5, "ab" * 32, PREIMAGE),
        Violation.TERMS_MISMATCH,
    ),
    (
        "paid with a false preimage",
        accepted,
        Paid(NID, B, S, 0, 5, HASH, "22" * 32),
        Violation.TERMS_MISMATCH,
    ),
    (
        "settlement to outsider",
        settling,
        SettlementFailed(NID, B, X, 0, 5, "x"),
        Violation.WRONG_PARTY,
    ),
] + [
    (f"anything when {phase.name.lower()}", _closed(phase), msg, Violation.CLOSED)
    for phase in sorted(TERMINAL)
    for msg in (
        Counter(NID, S, B, 9, 99, T),
        Withdraw(NID, B, S, 0, 99),
        Timeout(NID, SYSTEM, B, 0, 0),
    )
]


@pytest.mark.parametrize(
    ("make", "message", "violation"),
    [pytest.param(m, msg, v, id=name) for name, m, msg, v in ILLEGAL],
)
def test_illegal_messages_raise_and_leave_the_state_alone(
    make: Callable[[], NegotiationState], message: AnyMessage, violation: Violation
) -> None:
    state = make()
    before = state
    with pytest.raises(ProtocolViolation) as info:
        transition(state, message, 0.0)
    assert info.value.violation is violation
    assert info.value.nid == NID
    assert state == before


def test_round_limit_allows_only_accept_or_reject_at_the_last_offer() -> None:
    state = opened(max_rounds=2)
    state = transition(state, Counter(NID, S, B, 2, 2, terms(250_000)), 0.0)[0]
    with pytest.raises(ProtocolViolation) as info:
        transition(state, Counter(NID, B, S, 3, 3, T), 0.0)
    assert info.value.violation is Violation.ROUND_LIMIT
    assert transition(state, Reject(NID, B, S, 2, 3), 0.0)[0].phase is Phase.REJECTED


@pytest.mark.parametrize(
    ("propose", "violation"),
    [
        (Propose(NID, B, B, 1, 1, Side.BUY, T), Violation.WRONG_PARTY),
        (Propose(NID, SYSTEM, S, 1, 1, Side.BUY, T), Violation.WRONG_PARTY),
        (Propose(NID, B, S, 2, 1, Side.BUY, T), Violation.WRONG_ROUND),
        (Propose(NID, B, S, 1, 0, Side.BUY, T), Violation.REPLAY),
        (Propose(NID, B, S, 1, 1, Side.BUY, terms(1, 0)), Violation.BAD_TERMS),
        (Propose(NID, B, S, 1, 1, Side.BUY, Terms("e", 1, 1, 6, 5)), Violation.BAD_TERMS),
    ],
    ids=["self-dealing", "system", "round", "seq", "quantity", "window"],
)
def test_bad_opening_is_refused(propose: Propose, violation: Violation) -> None:
    with pytest.raises(ProtocolViolation) as info:
        start(propose, 0.0, max_rounds=3)
    assert info.value.violation is violation


def test_expire_before_the_deadline_is_refused() -> None:
    with pytest.raises(ProtocolViolation):
        expire(opened(deadline=5.0), 1.0)


# -- random sequences never corrupt state ------------------------------------------------------

_PARTIES = st.sampled_from([B, S, X, SYSTEM])
_KINDS = st.sampled_from(
    ["counter", "accept", "reject", "withdraw", "timeout", "invoice", "paid", "failed", "propose"]
)

_ALLOWED: dict[Phase, set[Phase]] = {
    Phase.PROPOSED: {
        Phase.COUNTERED,
        Phase.ACCEPTED,
        Phase.REJECTED,
        Phase.WITHDRAWN,
        Phase.EXPIRED,
    },
    Phase.COUNTERED: {
        Phase.COUNTERED,
        Phase.ACCEPTED,
        Phase.REJECTED,
        Phase.WITHDRAWN,
        Phase.EXPIRED,
    },
    # the runtime's Timeout voids an Accept that lost the race with the deadline
    Phase.ACCEPTED: {Phase.SETTLING, Phase.SETTLED, Phase.FAILED, Phase.EXPIRED},
    Phase.SETTLING: {Phase.SETTLED, Phase.FAILED},
}


class ProtocolMachine(RuleBasedStateMachine):
    """Random messages against a live negotiation: refused ones change nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.state = opened(max_rounds=4, deadline=100.0)
        self.now = 0.0
        self.max_seq = self.state.seq

    @rule(
        kind=_KINDS,
        sender=_PARTIES,
        receiver=_PARTIES,
        round_delta=st.integers(-1, 2),
        seq_delta=st.integers(-1, 2),
        price=st.sampled_from([200_000, 250_000]),
        quantity=st.sampled_from([1000, 500]),
        dt=st.sampled_from([0.0, 1.0, 60.0]),
        amount=st.sampled_from([None, 1]),
    )
    def send(
        self,
        kind: str,
        sender: int,
        receiver: int,
        round_delta: int,
        seq_delta: int,
        price: int,
        quantity: int,
        dt: float,
        amount: int | None,
    ) -> None:
        s = self.state
        self.now += dt
        rnd, seq = max(0, s.round + round_delta), max(0, s.seq + seq_delta)
        offer = terms(price, quantity) if kind == "counter" else s.terms
        inv = invoice(s.terms.amount_msat() if amount is None else amount)
        message: AnyMessage = {
            "counter": lambda: Counter(NID, sender, receiver, rnd, seq, offer),
            "accept": lambda: Accept(NID, sender, receiver, rnd, seq, offer),
            "reject": lambda: Reject(NID, sender, receiver, rnd, seq),
            "withdraw": lambda: Withdraw(NID, sender, receiver, rnd, seq),
            "timeout": lambda: Timeout(NID, sender, receiver, rnd, seq),
            "invoice": lambda: InvoiceIssued(NID, sender, receiver, rnd, seq, inv),
            "paid": lambda: Paid(NID, sender, receiver, rnd, seq, HASH, PREIMAGE),
            "failed": lambda: SettlementFailed(NID, sender, receiver, rnd, seq, "x"),
            "propose": lambda: Propose(NID, sender, receiver, 1, seq, Side.BUY, offer),
        }[kind]()
        before = self.state
        try:
            new, events = transition(before, message, self.now)
        except ProtocolViolation as exc:
            assert exc.nid == NID
            assert self.state is before
            return
        assert len(events) == 1
        assert new.phase in _ALLOWED[before.phase], (before.phase, kind, new.phase)
        if sender != SYSTEM and new.phase is not Phase.EXPIRED:
            assert new.seq == message.seq > before.seq
        self.state = new

    @invariant()
    def state_is_consistent(self) -> None:
        s = self.state
        assert 1 <= s.round <= s.max_rounds
        assert (s.buyer, s.seller) == (B, S)
        if s.phase in OPEN:
            assert s.turn in (B, S)
        elif s.phase is not Phase.SETTLING:
            assert s.turn == -1 or s.phase in (Phase.SETTLED, Phase.FAILED)
        if s.phase is Phase.SETTLED:
            assert s.payment_hash == HASH


ProtocolMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=30, deadline=None
)
TestProtocolMachine = ProtocolMachine.TestCase
