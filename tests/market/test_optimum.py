"""The community optimum on hand-solvable days, and the exactness of device classes."""

from __future__ import annotations

import numpy as np
import pytest

from market.devices import BatteryFleet, FlexibleFleet, group_batteries, group_flexible
from market.optimum import solve_optimum

IMP = np.array([300_000.0, 300_000.0])
EXP = np.array([80_000.0, 80_000.0])


def _battery(cap: float, eta: float = 1.0, deg: float = 0.0) -> BatteryFleet:
    one = np.ones(1)
    return BatteryFleet(one * cap, one * cap, one * eta, one * eta, one * 0, one * deg)


def test_without_devices_the_community_nets_its_members() -> None:
    best = solve_optimum(
        np.array([1000.0, -500.0]), IMP, EXP, BatteryFleet.empty(), FlexibleFleet.empty()
    )
    assert best.cost_msat == pytest.approx(1000 * 300 - 500 * 80)
    assert best.grid_import_wh.tolist() == pytest.approx([1000, 0])


def test_a_battery_carries_the_surplus_to_the_need() -> None:
    best = solve_optimum(
        np.array([-1000.0, 1000.0]), IMP, EXP, _battery(2000), FlexibleFleet.empty()
    )
    assert best.cost_msat == pytest.approx(0.0, abs=1e-6)
    assert best.battery_wh[0].tolist() == pytest.approx([1000, -1000])


def test_a_cyclic_day_starts_with_what_its_end_leaves() -> None:
    need_first = np.array([1000.0, -1000.0])
    once = solve_optimum(need_first, IMP, EXP, _battery(2000), FlexibleFleet.empty())
    assert once.cost_msat == pytest.approx(1000 * 300 - 1000 * 80)  # empty at dawn: no help
    again = solve_optimum(need_first, IMP, EXP, _battery(2000), FlexibleFleet.empty(), cyclic=True)
    assert again.cost_msat == pytest.approx(0.0, abs=1e-6)  # yesterday's surplus covers it
    assert again.soc_start_wh.tolist() == pytest.approx([1000])
    assert again.battery_wh[0].tolist() == pytest.approx([-1000, 1000])
    with pytest.raises(ValueError, match="cyclic"):
        solve_optimum(
            need_first,
            IMP,
            EXP,
            _battery(2000),
            FlexibleFleet.empty(),
            cyclic=True,
            soc_end_wh=np.zeros(1),
        )


def test_losses_and_wear_are_paid_for() -> None:
    # 90% each way: 1000 Wh stored gives 810 Wh back; wear 0.01 msat per Wh each way
    best = solve_optimum(
        np.array([-1000.0, 1000.0]), IMP, EXP, _battery(2000, 0.9, 0.01), FlexibleFleet.empty()
    )
    stored_value = 810 * 300 - 1000 * 80 - 0.01 * 1810  # worth it: store everything
    assert best.cost_msat == pytest.approx(1000 * 300 - 1000 * 80 - stored_value)


def test_a_flexible_load_moves_to_the_cheap_slot_and_a_demand_charge_flattens_it() -> None:
    loads = FlexibleFleet(np.array([2000.0]), np.array([2000.0]), np.array([0]), np.array([2]))
    cheap_second = np.array([300_000.0, 200_000.0])
    best = solve_optimum(np.zeros(2), cheap_second, EXP, BatteryFleet.empty(), loads)
    assert best.flexible_wh[0].tolist() == pytest.approx([0, 2000])
    # a demand charge of 150 msat per Wh of peak: splitting 1000 / 1000 saves 150k of charge
    # and costs 100k more energy
    flat = solve_optimum(
        np.zeros(2), cheap_second, EXP, BatteryFleet.empty(), loads, demand_charge=150
    )
    assert flat.flexible_wh[0].tolist() == pytest.approx([1000, 1000])
    assert flat.peak_wh == pytest.approx(1000)


def test_classes_solve_to_the_same_optimum_as_every_device() -> None:
    rng = np.random.default_rng(0)
    T = 24
    cap = rng.uniform(2000, 9000, 12)
    eta = np.where(np.arange(12) < 6, 0.95, 0.9)
    batteries = BatteryFleet(cap, cap / 4, eta, eta, cap / 2, np.full(12, 0.01))
    energy = rng.uniform(1000, 4000, 8)
    arrival = rng.integers(0, 3, 8) * 4
    loads = FlexibleFleet(energy, energy / 3, arrival, arrival + 8)
    net = 20_000 * np.sin(np.arange(T) / T * 2 * np.pi) + 3000
    imp = np.where((np.arange(T) >= 17) & (np.arange(T) < 22), 350_000.0, 250_000.0)
    exp = np.full(T, 80_000.0)
    each = solve_optimum(net, imp, exp, batteries, loads, demand_charge=40)
    classes = solve_optimum(
        net, imp, exp, group_batteries(batteries)[0], group_flexible(loads)[0], demand_charge=40
    )
    assert classes.cost_msat == pytest.approx(each.cost_msat, rel=1e-9)
    assert classes.peak_wh == pytest.approx(each.peak_wh, rel=1e-6)


def test_an_export_price_above_the_import_price_is_refused() -> None:
    with pytest.raises(ValueError, match="unbounded"):
        solve_optimum(np.zeros(2), EXP, IMP, BatteryFleet.empty(), FlexibleFleet.empty())
