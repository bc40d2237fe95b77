"""Faratin time-dependent strategies: the concession curve and AC_next acceptance."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.strategies import TimeDependent, boulware, conceder, linear, strategy


def test_alpha_runs_from_k_to_one() -> None:
    s = TimeDependent(0.5, k=0.1)
    assert s.alpha(0.0) == pytest.approx(0.1)
    assert s.alpha(1.0) == pytest.approx(1.0)
    assert s.alpha(-1.0) == s.alpha(0.0) and s.alpha(2.0) == s.alpha(1.0)


def test_boulware_holds_firm_and_conceder_gives_way_early() -> None:
    for t in (0.2, 0.5, 0.8):
        assert boulware().alpha(t) < linear().alpha(t) < conceder().alpha(t)
    assert linear().alpha(0.5) == pytest.approx(0.5)


@given(
    st.sampled_from([boulware(), linear(), conceder()]),
    st.floats(0, 1),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
)
def test_offers_stay_between_aspiration_and_reservation(
    s: TimeDependent, t: float, a: int, r: int
) -> None:
    price = s.offer(t, a, r)
    assert min(a, r) <= price <= max(a, r)


def test_buyer_offers_rise_and_seller_offers_fall() -> None:
    s = linear()
    buyer = [s.offer(t / 4, 80_000, 280_000) for t in range(5)]
    seller = [s.offer(t / 4, 280_000, 80_000) for t in range(5)]
    assert buyer == sorted(buyer) and buyer[0] == 80_000 and buyer[-1] == 280_000
    assert seller == sorted(seller, reverse=True) and seller[-1] == 80_000


def test_accepts_what_is_as_good_as_its_next_offer() -> None:
    s = linear()
    # A buyer (aspiration 100, reservation 200) would offer 150 at t = 0.5.
    assert s.accepts(150, 0.5, 100, 200, last=False)
    assert not s.accepts(151, 0.5, 100, 200, last=False)
    assert s.accepts(200, 0.5, 100, 200, last=True)  # at the end: anything within reservation
    assert not s.accepts(201, 0.5, 100, 200, last=True)
    # A seller (aspiration 200, reservation 100).
    assert s.accepts(150, 0.5, 200, 100, last=False)
    assert not s.accepts(149, 0.5, 200, 100, last=False)


def test_bad_parameters_and_names_are_refused() -> None:
    with pytest.raises(ValueError):
        TimeDependent(0.0)
    with pytest.raises(ValueError):
        TimeDependent(1.0, k=1.5)
    with pytest.raises(ValueError, match="choose from"):
        strategy("tit-for-tat")


def test_offers_move_in_whole_ticks() -> None:
    s = TimeDependent(1.0, tick=2000)
    prices = [s.offer(t / 10, 80_000, 280_000) for t in range(11)]
    assert all((p - 80_000) % 2000 == 0 for p in prices) and prices[-1] == 280_000
    with pytest.raises(ValueError):
        TimeDependent(1.0, tick=0)


@given(
    st.sampled_from([boulware(), linear(), conceder()]),
    st.integers(1, 30),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
)
def test_schedule_is_the_curve_sampled_per_round(
    s: TimeDependent, max_rounds: int, a: int, r: int
) -> None:
    table = s.schedule(max_rounds, a, r)
    assert len(table) == max_rounds + 1
    span = max(max_rounds - 1, 1)
    assert all(table[i] == s.offer(min(i / span, 1.0), a, r) for i in range(max_rounds + 1))
    assert table[-1] == r  # the schedule ends on the reservation price
