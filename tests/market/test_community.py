"""The synthetic community, the tariff and the board matcher."""

from __future__ import annotations

import numpy as np
import pytest

from market import Community, CommunitySpec, TimeOfUseTariff, board_matcher
from negotiator.actor import Position
from negotiator.messages import Side


def test_same_seed_same_community() -> None:
    spec = CommunitySpec(agents=50, slots=48)
    a = Community.generate(spec, np.random.default_rng(5))
    b = Community.generate(spec, np.random.default_rng(5))
    c = Community.generate(spec, np.random.default_rng(6))
    assert np.array_equal(a.net_wh, b.net_wh) and not np.array_equal(a.net_wh, c.net_wh)


def test_profiles_are_physical() -> None:
    community = Community.generate(CommunitySpec(agents=300, slots=24), np.random.default_rng(1))
    assert (community.load_wh > 0).all() and (community.pv_wh >= 0).all()
    night = [0, 1, 2, 3, 4, 5, 19, 20, 21, 22, 23]
    assert (community.pv_wh[:, night] == 0).all()
    consumers = [i for i, t in enumerate(community.agent_types) if t == "consumer"]
    assert (community.pv_wh[consumers] == 0).all()
    assert 0.2 < 1 - len(consumers) / 300 < 0.6
    daily_kwh = community.load_wh.sum(axis=1) / 1000
    assert 5 < np.median(daily_kwh) < 15  # about 3,500 kWh a year
    assert community.net(0, 3) == community.load_wh[0, 3] - community.pv_wh[0, 3]


def test_tariff_is_time_of_use() -> None:
    tariff = TimeOfUseTariff(slots_per_day=96)
    assert tariff(0) == (220_000, 80_000)
    assert tariff(12 * 4)[0] == 280_000 and tariff(18 * 4)[0] == 350_000
    assert tariff(96 + 18 * 4)[0] == 350_000  # the next day too
    with pytest.raises(ValueError):
        TimeOfUseTariff(export=400_000)


def pos(
    agent: int, side: Side, quantity: int, reservation: int, resource: str = "energy"
) -> Position:
    return Position(agent, side, quantity, reservation, "t", resource)


def test_matcher_respects_quantities_partners_and_resources() -> None:
    rng = np.random.default_rng(0)
    sellers = [pos(i, Side.SELL, 700, 80_000 + i) for i in range(10)]
    buyers = [pos(100 + i, Side.BUY, 1000, 280_000) for i in range(20)]
    other = [pos(200, Side.BUY, 500, 1, "heat")]
    pairings = board_matcher(max_partners=2)(0, sellers + buyers + other, None, rng)
    allocated: dict[int, int] = {}
    per_buyer: dict[int, int] = {}
    for p in pairings:
        assert p.side is Side.BUY and p.initiator >= 100 and p.responder < 10
        allocated[p.responder] = allocated.get(p.responder, 0) + p.quantity
        per_buyer[p.initiator] = per_buyer.get(p.initiator, 0) + 1
    assert all(q <= 700 for q in allocated.values()) and sum(allocated.values()) == 7000
    assert max(per_buyer.values()) <= 2 and 200 not in per_buyer
    assert board_matcher()(0, buyers, None, rng) == []
    with pytest.raises(ValueError):
        board_matcher(0)


def test_matcher_admits_by_price_and_pairs_large_with_large() -> None:
    rng = np.random.default_rng(1)
    sellers = [pos(0, Side.SELL, 5000, 80_000), pos(1, Side.SELL, 300, 300_000)]
    sellers += [pos(2 + i, Side.SELL, 100, 80_000) for i in range(10)]
    buyers = [pos(100, Side.BUY, 5000, 280_000), pos(101, Side.BUY, 900, 50_000)]
    buyers += [pos(102 + i, Side.BUY, 120, 280_000) for i in range(8)]
    pairings = board_matcher(max_partners=2)(0, sellers + buyers, None, rng)
    assert all(p.responder != 1 and p.initiator != 101 for p in pairings)  # prices never cross
    big = [p for p in pairings if p.initiator == 100]
    assert [(p.responder, p.quantity) for p in big] == [(0, 5000)]  # one partner, not fifty
    total = sum(p.quantity for p in pairings)
    assert total == 5000 + 8 * 120  # supply 6000 at 80k covers every buyer whose bid covers it
    per_seller: dict[int, int] = {}
    for p in pairings:
        per_seller[p.responder] = per_seller.get(p.responder, 0) + p.quantity
    assert all(q <= (5000 if s == 0 else 100) for s, q in per_seller.items())


def test_a_partner_limit_leaves_nothing_unpaired_that_another_buyer_can_take() -> None:
    rng = np.random.default_rng(0)
    sellers = [pos(i, Side.SELL, 700, 80_000) for i in range(10)]
    buyers = [pos(100 + i, Side.BUY, 1000, 280_000) for i in range(20)]
    pairings = board_matcher(max_partners=2)(0, sellers + buyers, None, rng)
    assert sum(p.quantity for p in pairings) == 7000  # the whole supply, though demand is 20,000
