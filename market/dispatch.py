"""How members run their devices, and the market-quality figures of a day.

Two ways to run the devices of an :class:`~market.scenario.EnergyCommunity`:

- ``selfish``: what a member does without a market: its battery stores its own surplus and covers
  its own need, its flexible load runs as soon as it may. Grid only and the naive market use it.
- ``meanfield``: the mean-field planner. The day-ahead equilibrium of the community is solved on
  the *forecasts* with one aggregate device per class (devices that differ only in size; the
  aggregate is exact, :func:`~market.devices.group_batteries`), as the linear programme of
  :mod:`market.optimum`; each member follows its class's equilibrium trajectory scaled to its own
  device, through the device model, on the *realised* day. Only the forecast error stands between
  it and the optimum on the realised data; the market must then carry the trades.

The optimum (:func:`optimum`) is the same programme on the realised data: the benchmark.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np

from market.devices import BatteryFleet, FlexibleFleet, group_batteries, group_flexible, share
from market.optimum import Optimum, end_settlement, solve_optimum
from market.scenario import EnergyCommunity

Mode = Literal["selfish", "meanfield"]
HOLD_BONUS = 1e-3
"""msat per Wh per slot: the rolling plan stores surplus as it comes (see ``solve_optimum``)."""


@dataclass(frozen=True)
class Dispatch:
    """Members' positions at the meter after their devices, and what the devices did."""

    net_wh: np.ndarray
    """Members x slots, integer Wh: positive means buying."""
    battery_wh: np.ndarray
    flexible_wh: np.ndarray
    degradation_msat: np.ndarray
    """Per member: the battery wear of the day."""
    carry_msat: np.ndarray
    """Per member: what its batteries owe the next day for ending away from their start (see
    :func:`market.optimum.end_settlement`; negative when they end fuller)."""


def dispatch(community: EnergyCommunity, mode: Mode) -> Dispatch:
    """Run the members' devices through the realised day in ``mode``."""
    c = community
    base = c.load_wh - c.pv_wh
    slots = base.shape[1]
    bats = start_of_day(c)
    if mode == "selfish":
        flexible = c.flexible.asap(slots)
        before = base.copy()
        np.add.at(before, c.flexible_owner, flexible)
        battery = bats.self_consumption(before[c.battery_owner])
        end = bats.simulate(battery)[1][:, -1] if slots else bats.soc0_wh
    elif mode == "meanfield":
        battery, flexible, end = _rolling(c, bats)
    else:
        raise ValueError(f"unknown dispatch mode {mode!r}")
    _, _, owed = end_settlement(bats, end, *_settlement_prices(c))
    carry = np.zeros(c.agents)
    np.add.at(carry, c.battery_owner, owed)
    net = base.copy()
    np.add.at(net, c.battery_owner, battery)
    np.add.at(net, c.flexible_owner, flexible)
    wear = np.zeros(c.agents)
    np.add.at(wear, c.battery_owner, c.batteries.throughput_cost(battery))
    return Dispatch(np.rint(net).astype(np.int64), battery, flexible, wear, carry)


def start_of_day(community: EnergyCommunity) -> BatteryFleet:
    """The batteries as the day starts: charged where the day-ahead plan of a day that repeats
    has them (the plan's class levels, shared by capacity). Every variant starts here, and
    settles where it ends (:func:`market.optimum.end_settlement`), so none gets energy for free
    from an arbitrary initial charge."""
    c = community
    _, of_b = group_batteries(c.batteries)
    level = share(plan_day(c).soc_start_wh[:, None], of_b, c.batteries.capacity_wh)[:, 0]
    return dataclasses.replace(c.batteries, soc0_wh=np.clip(level, 0.0, c.batteries.capacity_wh))


def _settlement_prices(c: EnergyCommunity) -> tuple[float, float]:
    """Buy back at the day's cheapest import price, sell off at its best export price."""
    return float(c.import_price.min()), float(c.export_price.max())


def _rolling(c: EnergyCommunity, bats: BatteryFleet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Follow the equilibrium slot by slot, re-solving it at each slot open on what is known by
    then: the slot's realised positions (the members' reports), forecasts for the rest of the
    day, the devices' states, the peak so far (model-predictive control).

    The end of the day is a soft condition: a Wh short of the start costs what buying it back
    costs, a Wh over earns what selling it earns (:func:`market.optimum.end_settlement`), the
    same amounts the run's cost counts. A hard "end at least as full" made a day that turned
    out cloudier than forecast refill its batteries from the grid before midnight, in one peak.
    Returns the battery and flexible flows and the batteries' end charge."""
    classes_b, of_b = group_batteries(c.batteries)
    classes_f, of_f = group_flexible(c.flexible)
    classes_b = dataclasses.replace(classes_b, soc0_wh=np.bincount(of_b, weights=bats.soc0_wh))
    short, over, _ = end_settlement(classes_b, classes_b.soc0_wh, *_settlement_prices(c))
    flex = c.flexible
    k_b, k_f = len(classes_b), len(classes_f)
    realised = (c.load_wh - c.pv_wh).sum(axis=0)
    forecast = (c.load_forecast_wh - c.pv_forecast_wh).sum(axis=0)
    slots = realised.size
    battery = np.zeros((len(bats), slots))
    flexible = np.zeros((len(flex), slots))
    level = bats.soc0_wh.astype(np.float64).copy()
    left = flex.energy_wh.astype(np.float64).copy()
    peak = 0.0
    charge = c.demand_charge_per_wh()
    window = flex.window(slots)
    for t in range(slots):
        base = forecast[t:].copy()
        base[0] = realised[t]
        now_b = dataclasses.replace(
            classes_b, soc0_wh=np.bincount(of_b, weights=level, minlength=k_b)
        )
        arrival = np.maximum(classes_f.arrival - t, 0)
        now_f = FlexibleFleet(
            np.bincount(of_f, weights=left, minlength=k_f),
            classes_f.power_wh,
            arrival,
            np.maximum(classes_f.deadline - t, arrival),
        )
        step = solve_optimum(
            base,
            c.import_price[t:],
            c.export_price[t:],
            now_b,
            now_f,
            demand_charge=charge,
            soc_end_wh=classes_b.soc0_wh,
            soft_end=(short, over),
            peak_floor=peak,
            hold_bonus=HOLD_BONUS,
        )
        members_b = dataclasses.replace(bats, soc0_wh=level)
        flow, soc = members_b.simulate(share(step.battery_wh[:, :1], of_b, bats.capacity_wh))
        battery[:, t] = flow[:, 0]
        level = soc[:, 0]
        want = share(step.flexible_wh[:, :1], of_f, flex.energy_wh)[:, 0]
        draw = np.where(window[:, t], np.clip(want, 0.0, np.minimum(flex.power_wh, left)), 0.0)
        flexible[:, t] = draw
        left -= draw
        peak = max(peak, float(realised[t] + battery[:, t].sum() + draw.sum()))
    return battery, flexible, level


def plan_day(community: EnergyCommunity) -> Optimum:
    """The community's day-ahead equilibrium over device classes, on the forecasts, for a day
    that repeats (batteries end where they start)."""
    c = community
    base = c.load_forecast_wh - c.pv_forecast_wh
    batteries, _ = group_batteries(c.batteries)
    flexible, _ = group_flexible(c.flexible)
    return solve_optimum(
        base.sum(axis=0),
        c.import_price,
        c.export_price,
        batteries,
        flexible,
        demand_charge=c.demand_charge_per_wh(),
        cyclic=True,
    )


def optimum(community: EnergyCommunity) -> Optimum:
    """The centralised optimum on the realised day (exact over classes of devices): from the
    same start of day as every run, with the same settlement of where the batteries end."""
    c = community
    bats = start_of_day(c)
    classes_b, of_b = group_batteries(c.batteries)
    classes_b = dataclasses.replace(classes_b, soc0_wh=np.bincount(of_b, weights=bats.soc0_wh))
    flexible, _ = group_flexible(c.flexible)
    short, over, _ = end_settlement(classes_b, classes_b.soc0_wh, *_settlement_prices(c))
    return solve_optimum(
        (c.load_wh - c.pv_wh).sum(axis=0),
        c.import_price,
        c.export_price,
        classes_b,
        flexible,
        demand_charge=c.demand_charge_per_wh(),
        soft_end=(short, over),
    )


# -- market quality ----------------------------------------------------------------------------


def jain_index(x: np.ndarray) -> float:
    """Jain's fairness index (sum x)^2 / (n sum x^2) of non-negative ``x``: 1 when all are equal,
    1/n when one takes everything. Negative entries (members worse off) count as 0."""
    v = np.clip(np.asarray(x, np.float64), 0.0, None)
    square = float((v * v).sum())
    return float(v.sum() ** 2 / (v.size * square)) if square > 0 else 1.0


def grid_cost(net_wh: np.ndarray, import_price: np.ndarray, export_price: np.ndarray) -> np.ndarray:
    """Per member: what trading nothing costs (imports at the tariff less export revenue), msat."""
    buy = np.clip(net_wh, 0, None) * import_price[None, :]
    sell = np.clip(-net_wh, 0, None) * export_price[None, :]
    return (buy - sell).sum(axis=1) / 1000  # type: ignore[no-any-return]


def demand_shares(imported_wh: np.ndarray, charge_msat: float) -> np.ndarray:
    """The community's demand charge split over members by their share of imported energy."""
    total = float(imported_wh.sum())
    if total <= 0:
        return np.zeros(imported_wh.shape)
    return imported_wh / total * charge_msat


def efficiency(grid_only: float, realised: float, best: float) -> float:
    """Share of the attainable gain over grid only that was realised (costs in msat)."""
    attainable = grid_only - best
    return float((grid_only - realised) / attainable) if attainable > 0 else 1.0
