"""The community optimum on hand-solvable days, and the exactness of device classes."""

from __future__ import annotations

import numpy as np
import pytest

from market.devices import BatteryFleet, FlexibleFleet, group_batteries, group_flexible
from market.optimum import end_settlement, solve_optimum

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


def test_a_soft_end_buys_back_or_sells_off_what_the_day_leaves() -> None:
    # the battery starts full (2000); the day needs 1000 and then has nothing
    full = BatteryFleet(*(np.ones(1) * v for v in (2000, 2000, 1, 1, 2000, 0)))
    need = np.array([1000.0, 0.0])
    # buying back costs 250 per Wh, less than the 300 import: use the battery, owe 1000
    short, over, _ = end_settlement(full, np.array([2000.0]), 250_000, 80_000)
    used = solve_optimum(need, IMP, EXP, full, FlexibleFleet.empty(), soft_end=(short, over))
    assert used.soc_end_wh.tolist() == pytest.approx([1000])
    assert used.cost_msat == pytest.approx(1000 * 250)
    # buying back dearer than importing now: keep the charge, import
    short, over, _ = end_settlement(full, np.array([2000.0]), 350_000, 80_000)
    kept = solve_optimum(need, IMP, EXP, full, FlexibleFleet.empty(), soft_end=(short, over))
    assert kept.soc_end_wh.tolist() == pytest.approx([2000])
    assert kept.cost_msat == pytest.approx(1000 * 300)


def test_the_end_settlement_never_flatters_a_run() -> None:
    fleet = BatteryFleet(*(np.full(2, v) for v in (5000.0, 5000.0, 0.9, 0.8, 2000.0, 0.0)))
    short, over, owed = end_settlement(fleet, np.array([1000.0, 3000.0]), 200_000, 80_000)
    assert short.tolist() == pytest.approx([200 / 0.9] * 2)  # refilled through the charger
    assert over.tolist() == pytest.approx([80 * 0.8] * 2)  # sold through the discharger
    assert owed.tolist() == pytest.approx([1000 * 200 / 0.9, -1000 * 80 * 0.8])


def test_a_hold_bonus_breaks_ties_towards_storing_early() -> None:
    surplus_twice = np.array([-1000.0, -1000.0, 1000.0])
    flat = np.full(3, 300_000.0)
    small = BatteryFleet(*(np.ones(1) * v for v in (1000, 1000, 1, 1, 0, 0)))
    early = solve_optimum(
        surplus_twice, flat, np.full(3, 80_000.0), small, FlexibleFleet.empty(), hold_bonus=1e-3
    )
    assert early.battery_wh[0].tolist() == pytest.approx([1000, 0, -1000])
    assert early.cost_msat == pytest.approx(-1000 * 80 - 1000 * 1e-3 * 2, abs=1e-6)


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
