"""The trader, driven by hand: a full negotiation, several at once, replays refused."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import pytest

from agents import Trader, boulware, conceder, linear
from negotiator.actor import Pay, Skip
from negotiator.errors import ProtocolViolation, Violation
from negotiator.messages import (
    SYSTEM,
    Accept,
    Counter,
    InvoiceIssued,
    Paid,
    Propose,
    Reject,
    Side,
    Start,
    Terms,
    Timeout,
)
from payments import InProcessRail

TARIFF = (280_000, 80_000)


def trader(address: int, net: int, strategy: Any = None, max_rounds: int = 10) -> Trader:
    return Trader(
        address,
        "consumer" if net > 0 else "prosumer",
        lambda slot: net,
        lambda slot: TARIFF,
        strategy or linear(),
        max_rounds=max_rounds,
    )


def exchange(a: Trader, b: Trader, first: Sequence[Any]) -> list[Any]:
    """Deliver messages back and forth until nobody answers; return the whole transcript."""
    parties = {a.address: a, b.address: b}
    transcript, pending = [], list(first)
    while pending:
        message = pending.pop(0)
        transcript.append(message)
        if isinstance(message, (Pay, Skip)):
            continue
        pending.extend(parties[message.receiver].handle(message, 0.0))
    return transcript


@pytest.mark.parametrize("buyer_strategy", [boulware(), linear(), conceder()], ids=str)
@pytest.mark.parametrize("seller_strategy", [boulware(), linear(), conceder()], ids=str)
def test_a_buyer_and_a_seller_agree_within_both_reservations(
    buyer_strategy: Any, seller_strategy: Any
) -> None:
    buyer, seller = trader(1, 1500, buyer_strategy), trader(2, -2000, seller_strategy)
    assert buyer.open_slot(0, None) is not None and seller.open_slot(0, None) is not None
    transcript = exchange(buyer, seller, [Start(5, SYSTEM, 1, 0, 0, 2, Side.BUY, 2000, 0)])
    accept = next(m for m in transcript if isinstance(m, Accept))
    assert TARIFF[1] <= accept.terms.price <= TARIFF[0]
    assert accept.terms.quantity == 1500
    assert len([m for m in transcript if isinstance(m, (Propose, Counter))]) <= 10
    assert buyer.bought_wh == seller.sold_wh == 1500


@pytest.mark.anyio
async def test_settlement_messages_complete_the_trade() -> None:
    buyer, seller = trader(1, 1000), trader(2, -1000)
    buyer.open_slot(0, None)
    seller.open_slot(0, None)
    transcript = exchange(buyer, seller, [Start(5, SYSTEM, 1, 0, 0, 2, Side.BUY, 1000, 0)])
    accept = next(m for m in transcript if isinstance(m, Accept))
    rail = InProcessRail({1: 10**9, 2: 0})
    invoice = await rail.create_invoice(2, accept.terms.amount_msat(), "agreement-5", "")
    (pay,) = buyer.handle(InvoiceIssued(5, 2, 1, 0, accept.seq + 1, invoice), 0.0)
    assert isinstance(pay, Pay) and pay.invoice == invoice
    result = await rail.pay(1, invoice)
    paid = Paid(5, 1, 2, 0, accept.seq + 2, result.payment_hash, result.preimage)
    seller.handle(paid, 0.0)
    buyer.handle(Paid(5, 1, 1, 0, accept.seq + 2, result.payment_hash, result.preimage), 0.0)
    assert seller.revenue_msat == buyer.cost_msat == accept.terms.amount_msat()
    assert buyer.open_negotiations == seller.open_negotiations == 0


def test_several_negotiations_never_commit_more_than_it_has() -> None:
    buyer = trader(1, 1000)
    buyer.open_slot(0, None)
    (first,) = buyer.handle(Start(1, SYSTEM, 1, 0, 0, 2, Side.BUY, 600, 0), 0.0)
    (second,) = buyer.handle(Start(2, SYSTEM, 1, 0, 0, 3, Side.BUY, 600, 0), 0.0)
    (third,) = buyer.handle(Start(3, SYSTEM, 1, 0, 0, 4, Side.BUY, 600, 0), 0.0)
    assert isinstance(first, Propose) and first.terms.quantity == 600
    assert isinstance(second, Propose) and second.terms.quantity == 400
    assert isinstance(third, Skip)
    buyer.handle(Reject(1, 2, 1, 1, 2), 0.0)  # the first one fails: its 600 are free again
    (fourth,) = buyer.handle(Start(4, SYSTEM, 1, 0, 0, 5, Side.BUY, 900, 0), 0.0)
    assert isinstance(fourth, Propose) and fourth.terms.quantity == 600


def test_replays_and_forged_control_messages_are_refused() -> None:
    buyer, seller = trader(1, 1000), trader(2, -1000)
    buyer.open_slot(0, None)
    seller.open_slot(0, None)
    (propose,) = buyer.handle(Start(1, SYSTEM, 1, 0, 0, 2, Side.BUY, 1000, 0), 0.0)
    seller.handle(propose, 0.0)
    with pytest.raises(ProtocolViolation) as info:
        seller.handle(propose, 0.0)
    assert info.value.violation is Violation.REPLAY
    with pytest.raises(ProtocolViolation) as info:
        buyer.handle(Start(9, 3, 1, 0, 0, 2, Side.BUY, 10, 0), 0.0)  # Start from an agent
    assert info.value.violation is Violation.WRONG_PARTY
    with pytest.raises(ProtocolViolation) as info:
        buyer.handle(Timeout(77, 2, 1, 0, 0), 0.0)  # a Timeout from an agent
    assert info.value.violation is Violation.UNKNOWN_NEGOTIATION
    seller.handle(Timeout(1, SYSTEM, 2, 0, 0), 0.0)  # closed: a replay now is still refused
    with pytest.raises(ProtocolViolation):
        seller.handle(propose, 0.0)


def test_a_proposal_on_the_same_side_is_rejected() -> None:
    a, b = trader(1, 1000), trader(2, 500)
    a.open_slot(0, None)
    b.open_slot(0, None)
    (propose,) = a.handle(Start(1, SYSTEM, 1, 0, 0, 2, Side.BUY, 500, 0), 0.0)
    (reply,) = b.handle(propose, 0.0)
    assert isinstance(reply, Reject) and reply.reason == "no_interest"


def test_untraded_quantity_goes_to_the_grid_at_the_tariff() -> None:
    buyer, seller = trader(1, 2000), trader(2, -500)
    buyer.open_slot(3, None)
    seller.open_slot(3, None)
    buyer.close_slot(3)
    seller.close_slot(3)
    assert (buyer.imported_wh, buyer.cost_msat) == (2000, 2000 * TARIFF[0] // 1000)
    assert (seller.exported_wh, seller.revenue_msat) == (500, 500 * TARIFF[1] // 1000)


def test_guidance_anchors_the_opening_offer() -> None:
    class View:
        guidance_price = 200_000

    buyer = trader(1, 1000)
    buyer.open_slot(0, View())
    (propose,) = buyer.handle(Start(1, SYSTEM, 1, 0, 0, 2, Side.BUY, 1000, 0), 0.0)
    assert propose.terms.price == 190_000  # 5% below the guidance, in its own favour


def test_the_types_expected_clearing_price_is_preferred_to_the_recent_vwap() -> None:
    class Advice:
        price = 180_000.0

    class View:
        guidance_price = 200_000
        guidance: ClassVar[dict[str, object]] = {"consumer": Advice()}

    buyer = trader(1, 1000)
    assert buyer.agent_type == "consumer"
    buyer.open_slot(0, View())
    (propose,) = buyer.handle(Start(1, SYSTEM, 1, 0, 0, 2, Side.BUY, 1000, 0), 0.0)
    assert propose.terms.price == 171_000  # 5% below the expected clearing price


def test_a_runtime_timeout_for_a_negotiation_never_seen_is_ignored_and_closes_it() -> None:
    seller = trader(2, -1000)
    seller.open_slot(0, None)
    assert seller.handle(Timeout(5, SYSTEM, 2, 0, 0), 0.0) == ()
    late = Propose(5, 1, 2, 1, 1, Side.BUY, Terms("energy", 100, 200_000, 0, 1))
    with pytest.raises(ProtocolViolation) as info:  # its Propose, if it still came, is refused
        seller.handle(late, 0.0)
    assert info.value.violation is Violation.REPLAY


def test_an_accept_voided_by_the_runtime_gives_the_quantity_back() -> None:
    buyer, seller = trader(1, 1000), trader(2, -1000)
    buyer.open_slot(0, None)
    seller.open_slot(0, None)
    (propose,) = buyer.handle(Start(1, SYSTEM, 1, 0, 0, 2, Side.BUY, 1000, 0), 0.0)
    message = propose
    for _ in range(20):  # play until one side accepts
        replies = (seller if message.receiver == 2 else buyer).handle(message, 0.0)
        (message,) = replies
        if isinstance(message, Accept):
            break
    assert isinstance(message, Accept)
    accepter = seller if message.sender == 2 else buyer
    done = accepter.sold_wh + accepter.bought_wh
    assert done == message.terms.quantity
    # The runtime had already expired the negotiation: it drops the Accept and says Timeout.
    accepter.handle(Timeout(1, SYSTEM, accepter.address, 0, 0), 0.0)
    assert accepter.sold_wh + accepter.bought_wh == 0
    assert accepter.open_negotiations == 0
    accepter.close_slot(0)  # all of it goes to the grid
    assert accepter.imported_wh + accepter.exported_wh == 1000


def forecaster(address: int, samples: Any, realised: int, gamma: float) -> Trader:
    return Trader(
        address,
        "member",
        lambda slot: realised,
        lambda slot: TARIFF,
        linear(),
        forecast=lambda slot: samples,
        risk_aversion=gamma,
    )


def test_with_a_forecast_the_quantity_and_reservation_come_from_mean_cvar() -> None:
    import numpy as np

    need = np.random.default_rng(0).normal(1000, 400, 2000)
    neutral = forecaster(1, need, 0, 0.0).open_slot(0, None)
    averse = forecaster(2, need, 0, 0.9).open_slot(0, None)
    assert neutral is not None and averse is not None
    assert neutral.side is Side.BUY and averse.side is Side.BUY
    # at the tariff's midpoint, buying costs as much as the expected grid bill at the median
    assert abs(neutral.quantity - np.median(need)) < 0.1 * np.median(need)
    assert averse.quantity > neutral.quantity  # hedging the expensive high-need tail
    assert TARIFF[1] <= neutral.reservation <= averse.reservation <= TARIFF[0]
    surplus = forecaster(3, -need, 0, 0.0).open_slot(0, None)
    careful = forecaster(4, -need, 0, 0.9).open_slot(0, None)
    assert surplus is not None and careful is not None and careful.side is Side.SELL
    assert careful.quantity < surplus.quantity  # a short seller buys back at import
    certain = forecaster(5, np.full(50, 700.0), 0, 0.5).open_slot(0, None)
    assert certain is not None and (certain.quantity, certain.reservation) == (700, TARIFF[0])


def test_with_a_forecast_the_realised_position_net_of_trades_goes_to_the_grid() -> None:
    import numpy as np

    buyer = forecaster(1, np.full(10, 1500.0), 1100, 0.0)  # expected 1,500, needs 1,100
    seller = trader(2, -2000)
    assert buyer.open_slot(0, None) is not None and seller.open_slot(0, None) is not None
    exchange(buyer, seller, [Start(7, SYSTEM, 1, 0, 0, 2, Side.BUY, 1500, 0)])
    assert buyer.bought_wh == 1500
    buyer.close_slot(0)
    assert buyer.exported_wh == 400 and buyer.imported_wh == 0  # bought too much: exported
    assert buyer.revenue_msat == 400 * TARIFF[1] // 1000


def test_a_learned_rule_sets_the_limit_and_the_quantity_within_the_tariff_and_the_position() -> (
    None
):
    seen = []

    def rule(slot: int, kind: str, net: int, imp: int, exp: int, view: object) -> tuple[int, int]:
        seen.append((slot, kind, net, imp, exp, view))
        return (imp + 5000 if net > 0 else 150_000), 10 * abs(net)  # too high, too much

    view = object()
    buyer = Trader(1, "consumer", lambda s: 700, lambda s: TARIFF, boulware(), policy=rule)
    position = buyer.open_slot(3, view)
    assert position is not None
    assert (position.reservation, position.quantity) == (280_000, 700)  # clamped
    assert seen == [(3, "consumer", 700, 280_000, 80_000, view)]
    seller = Trader(2, "prosumer", lambda s: -400, lambda s: TARIFF, boulware(), policy=rule)
    position = seller.open_slot(3, view)
    assert position is not None and (position.reservation, position.quantity) == (150_000, 400)
    idle = Trader(3, "consumer", lambda s: 0, lambda s: TARIFF, boulware(), policy=rule)
    assert idle.open_slot(3, view) is None and len(seen) == 2  # no position, no question
    assert buyer.learned and buyer.policy is rule
    buyer.policy = None  # back to the tariff and the whole position
    position = buyer.open_slot(4, view)
    assert not buyer.learned and position is not None
    assert (position.reservation, position.quantity) == (280_000, 700)
