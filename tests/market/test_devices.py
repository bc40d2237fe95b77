"""Device models: batteries never leave their limits, flexible loads always meet their deadline."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from market.devices import BatteryFleet, FlexibleFleet, group_batteries, group_flexible, share

PLANS = arrays(np.float64, (3, 12), elements=st.floats(-5000, 5000))


def _fleet() -> BatteryFleet:
    cap = np.array([1000.0, 5000.0, 13_500.0])
    return BatteryFleet(
        cap, cap * 0.25, np.full(3, 0.95), np.full(3, 0.9), cap / 2, np.full(3, 0.02)
    )


@settings(max_examples=200, deadline=None)
@given(PLANS)
def test_a_battery_never_leaves_its_limits_whatever_it_is_told(plan: np.ndarray) -> None:
    fleet = _fleet()
    flows, soc = fleet.simulate(plan)
    assert (np.abs(flows) <= fleet.power_wh[:, None] + 1e-9).all()
    assert (soc >= -1e-9).all() and (soc <= fleet.capacity_wh[:, None] + 1e-9).all()
    level = fleet.soc0_wh.copy()  # the state follows the flows through the efficiencies
    for t in range(plan.shape[1]):
        f = flows[:, t]
        level = level + np.where(f > 0, f * fleet.eta_charge, f / fleet.eta_discharge)
        np.testing.assert_allclose(soc[:, t], level, atol=1e-6)
    feasible = np.abs(plan) <= fleet.power_wh[:, None]
    np.testing.assert_allclose(flows[:, 0][feasible[:, 0]], plan[:, 0][feasible[:, 0]])


@settings(max_examples=100, deadline=None)
@given(PLANS)
def test_self_consumption_stores_own_surplus_and_covers_own_need(net: np.ndarray) -> None:
    fleet = _fleet()
    flows = fleet.self_consumption(net)
    assert ((flows > 0) <= (net < 0)).all() and ((flows < 0) <= (net > 0)).all()
    assert (np.abs(flows) <= np.abs(net) + 1e-9).all()  # never beyond the owner's own position
    np.testing.assert_allclose(fleet.simulate(flows)[0], flows, atol=1e-6)  # within limits


def test_a_bad_battery_is_refused() -> None:
    z = np.ones(1)
    with pytest.raises(ValueError, match="efficienc"):
        BatteryFleet(z, z, z * 1.2, z, z * 0, z)
    with pytest.raises(ValueError, match="state of charge"):
        BatteryFleet(z, z, z, z, z * 2, z)


def _loads() -> FlexibleFleet:
    return FlexibleFleet(
        np.array([3000.0, 1000.0, 0.0]),
        np.array([1000.0, 500.0, 100.0]),
        np.array([2, 0, 5]),
        np.array([8, 4, 6]),
    )


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, (3, 10), elements=st.floats(-2000, 2000)))
def test_a_flexible_load_meets_its_deadline_whatever_the_plan(plan: np.ndarray) -> None:
    loads = _loads()
    draw = loads.follow(plan)
    np.testing.assert_allclose(draw.sum(axis=1), loads.energy_wh, atol=1e-6)
    assert (draw[~loads.window(10)] == 0).all()
    assert (draw >= 0).all() and (draw <= loads.power_wh[:, None] + 1e-9).all()


def test_without_a_market_a_flexible_load_runs_at_once() -> None:
    draw = _loads().asap(10)
    assert draw[0].tolist() == [0, 0, 1000, 1000, 1000, 0, 0, 0, 0, 0]
    assert draw[1].tolist() == [500, 500, 0, 0, 0, 0, 0, 0, 0, 0]
    assert draw[2].sum() == 0


def test_a_window_too_short_for_the_energy_is_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        FlexibleFleet(np.array([3000.0]), np.array([1000.0]), np.array([0]), np.array([2]))


def test_classes_aggregate_devices_that_differ_only_in_size() -> None:
    cap = np.array([1000.0, 3000.0, 2000.0])
    fleet = BatteryFleet(
        cap, cap / 4, np.array([0.9, 0.9, 0.8]), np.full(3, 0.9), cap / 2, np.zeros(3)
    )
    classes, of = group_batteries(fleet)
    assert len(classes) == 2 and of[0] == of[1] != of[2]
    assert sorted(classes.capacity_wh.tolist()) == [2000.0, 4000.0]
    plan = np.zeros((2, 1))
    plan[of[0], 0] = 400.0
    np.testing.assert_allclose(share(plan, of, cap)[:, 0], [100.0, 300.0, 0.0])
    loads, of_f = group_flexible(_loads())
    assert len(loads) == 3 and sorted(of_f.tolist()) == [0, 1, 2]
