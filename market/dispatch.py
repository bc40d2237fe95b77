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

from market.devices import FlexibleFleet, group_batteries, group_flexible, share
from market.optimum import Optimum, solve_optimum
from market.scenario import EnergyCommunity

Mode = Literal["selfish", "meanfield"]


@dataclass(frozen=True)
class Dispatch:
    """Members' positions at the meter after their devices, and what the devices did."""

    net_wh: np.ndarray
    """Members x slots, integer Wh: positive means buying."""
    battery_wh: np.ndarray
    flexible_wh: np.ndarray
    degradation_msat: np.ndarray
    """Per member: the battery wear of the day."""
    soc_start_wh: np.ndarray
    """Per battery: its charge at the start of the day, where the mode's day that repeats
    leaves it (the day ends at least as full)."""


def dispatch(community: EnergyCommunity, mode: Mode) -> Dispatch:
    """Run the members' devices through the realised day in ``mode``."""
    c = community
    base = c.load_wh - c.pv_wh
    slots = base.shape[1]
    if mode == "selfish":
        flexible = c.flexible.asap(slots)
        before = base.copy()
        np.add.at(before, c.flexible_owner, flexible)
        fleet, battery = c.batteries.steady_self_consumption(before[c.battery_owner])
        start = fleet.soc0_wh
    elif mode == "meanfield":
        start, battery, flexible = _rolling(c)
    else:
        raise ValueError(f"unknown dispatch mode {mode!r}")
    net = base.copy()
    np.add.at(net, c.battery_owner, battery)
    np.add.at(net, c.flexible_owner, flexible)
    wear = np.zeros(c.agents)
    np.add.at(wear, c.battery_owner, c.batteries.throughput_cost(battery))
    return Dispatch(np.rint(net).astype(np.int64), battery, flexible, wear, start)


def _rolling(c: EnergyCommunity) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Follow the equilibrium slot by slot, re-solving it at each slot open on what is known by
    then: the slot's realised positions (the members' reports), forecasts for the rest of the
    day, the devices' states, the peak so far (model-predictive control). The batteries start
    where the day-ahead plan of a repeating day has them, and must end the day at least there.
    Returns the batteries' start and the battery and flexible flows."""
    classes_b, of_b = group_batteries(c.batteries)
    classes_f, of_f = group_flexible(c.flexible)
    start = share(plan_day(c).soc_start_wh[:, None], of_b, c.batteries.capacity_wh)[:, 0]
    bats = dataclasses.replace(c.batteries, soc0_wh=np.minimum(start, c.batteries.capacity_wh))
    classes_b = dataclasses.replace(classes_b, soc0_wh=np.bincount(of_b, weights=bats.soc0_wh))
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
            peak_floor=peak,
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
    return bats.soc0_wh, battery, flexible


def plan_day(community: EnergyCommunity, *, forecast: bool = True) -> Optimum:
    """The community's day-ahead equilibrium over device classes, on forecasts (or realised),
    for a day that repeats (batteries end where they start)."""
    c = community
    base = (c.load_forecast_wh - c.pv_forecast_wh) if forecast else (c.load_wh - c.pv_wh)
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
    """The centralised optimum on the realised day (exact over classes of devices)."""
    return plan_day(community, forecast=False)


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
