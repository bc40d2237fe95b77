"""Device models of a community's agents: batteries and flexible (deferrable) loads.

Each model is a fleet: parallel arrays, one entry per device, simulated for every device at once
slot by slot. Energies are Wh per slot at the meter: a battery's flow is positive when it charges
(it adds to its owner's need), negative when it discharges; a flexible load's is what it draws.

Controls come from outside (a plan from the mean-field planner, or a simple rule) and the model
makes them feasible: a battery never leaves [0, capacity] nor exceeds its power, whatever it is
told; a flexible load never draws outside its window nor above its power, and always meets its
energy by its deadline (what a plan leaves short is drawn in the latest slots before the
deadline; a load whose window is too short for its energy is refused when the fleet is built).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BatteryFleet:
    """Batteries: capacity, power per slot, charge and discharge efficiencies, degradation."""

    capacity_wh: np.ndarray
    power_wh: np.ndarray
    """Most energy in or out at the meter in one slot (power x slot length)."""
    eta_charge: np.ndarray
    eta_discharge: np.ndarray
    soc0_wh: np.ndarray
    """State of charge at the start; the day must end at least as full (no free energy)."""
    degradation: np.ndarray
    """msat per Wh of throughput (charged plus discharged, at the meter)."""

    def __post_init__(self) -> None:
        n = self.capacity_wh.shape
        fields = (
            self.power_wh,
            self.eta_charge,
            self.eta_discharge,
            self.soc0_wh,
            self.degradation,
        )
        if any(f.shape != n for f in fields):
            raise ValueError("every battery array needs one entry per battery")
        if (
            (self.capacity_wh < 0).any()
            or (self.power_wh < 0).any()
            or (self.degradation < 0).any()
        ):
            raise ValueError("capacity, power and degradation cost must be non-negative")
        for eta in (self.eta_charge, self.eta_discharge):
            if ((eta <= 0) | (eta > 1)).any():
                raise ValueError("efficiencies must be within (0, 1]")
        if ((self.soc0_wh < 0) | (self.soc0_wh > self.capacity_wh)).any():
            raise ValueError("the initial state of charge must be within [0, capacity]")

    def __len__(self) -> int:
        return int(self.capacity_wh.size)

    @classmethod
    def empty(cls) -> BatteryFleet:
        """No batteries."""
        z = np.zeros(0)
        return cls(z, z, z + 1, z + 1, z, z)

    def simulate(self, plan: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run ``plan`` (devices x slots, Wh at the meter, + charge / - discharge) through the
        limits: returns the feasible flows and the state of charge after each slot."""
        flows = np.zeros_like(plan, dtype=np.float64)
        soc = np.zeros(plan.shape, dtype=np.float64)
        level = self.soc0_wh.astype(np.float64).copy()
        for t in range(plan.shape[1]):
            want = np.clip(plan[:, t], -self.power_wh, self.power_wh)
            room = (self.capacity_wh - level) / self.eta_charge  # most it can take at the meter
            stock = level * self.eta_discharge  # most it can give at the meter
            flow = np.where(want > 0, np.minimum(want, room), -np.minimum(-want, stock))
            level = level + np.where(flow > 0, flow * self.eta_charge, flow / self.eta_discharge)
            np.clip(level, 0.0, self.capacity_wh, out=level)  # rounding only
            flows[:, t] = flow
            soc[:, t] = level
        return flows, soc

    def self_consumption(self, net: np.ndarray) -> np.ndarray:
        """The rule of a battery without a market: store one's own surplus, cover one's own need
        (``net``: the owners' need before the battery, devices x slots). Returns the flows."""
        flows = np.zeros(net.shape, dtype=np.float64)
        level = self.soc0_wh.astype(np.float64).copy()
        for t in range(net.shape[1]):
            surplus = np.clip(-net[:, t], 0.0, None)
            need = np.clip(net[:, t], 0.0, None)
            charge = np.minimum.reduce(
                [surplus, self.power_wh, (self.capacity_wh - level) / self.eta_charge]
            )
            give = np.minimum.reduce([need, self.power_wh, level * self.eta_discharge])
            flows[:, t] = charge - give
            level = np.clip(
                level + charge * self.eta_charge - give / self.eta_discharge, 0, self.capacity_wh
            )
        return flows

    def throughput_cost(self, flows: np.ndarray) -> np.ndarray:
        """Degradation cost per battery (msat) of ``flows``."""
        return np.abs(flows).sum(axis=1) * self.degradation  # type: ignore[no-any-return]


@dataclass(frozen=True)
class FlexibleFleet:
    """Deferrable loads: ``energy_wh`` to draw within slots [arrival, deadline), at most
    ``power_wh`` per slot (an EV to charge, a wash to run)."""

    energy_wh: np.ndarray
    power_wh: np.ndarray
    arrival: np.ndarray
    deadline: np.ndarray

    def __post_init__(self) -> None:
        n = self.energy_wh.shape
        if any(f.shape != n for f in (self.power_wh, self.arrival, self.deadline)):
            raise ValueError("every flexible-load array needs one entry per load")
        if (self.energy_wh < 0).any() or (self.power_wh <= 0).any():
            raise ValueError("energy must be non-negative and power positive")
        if (self.power_wh * (self.deadline - self.arrival) < self.energy_wh - 1e-9).any():
            raise ValueError("a flexible load cannot draw its energy within its window")

    def __len__(self) -> int:
        return int(self.energy_wh.size)

    @classmethod
    def empty(cls) -> FlexibleFleet:
        """No flexible loads."""
        z = np.zeros(0)
        return cls(z, z + 1, z.astype(np.int64), z.astype(np.int64))

    def window(self, slots: int) -> np.ndarray:
        """Boolean devices x slots: where each load may draw."""
        t = np.arange(slots)[None, :]
        return (t >= self.arrival[:, None]) & (t < self.deadline[:, None])

    def asap(self, slots: int) -> np.ndarray:
        """The rule without a market: draw at full power from arrival until done."""
        window = self.window(slots)
        before = np.cumsum(np.where(window, self.power_wh[:, None], 0.0), axis=1)
        drawn_before = np.minimum(before - self.power_wh[:, None] * window, self.energy_wh[:, None])
        return np.where(
            window, np.minimum(self.power_wh[:, None], self.energy_wh[:, None] - drawn_before), 0.0
        ).clip(0.0)

    def follow(self, plan: np.ndarray) -> np.ndarray:
        """Make ``plan`` feasible: inside the window, within power, no more than the energy in
        all; whatever is still missing is drawn from the deadline backwards (latest first)."""
        slots = plan.shape[1]
        window = self.window(slots)
        draw = np.where(window, np.clip(plan, 0.0, self.power_wh[:, None]), 0.0)
        excess = np.clip(np.cumsum(draw, axis=1) - self.energy_wh[:, None], 0.0, None)
        draw = np.clip(draw - np.diff(excess, prepend=0.0, axis=1), 0.0, None)
        short = self.energy_wh - draw.sum(axis=1)
        for t in range(slots - 1, -1, -1):  # top up, latest slot first
            if not (short > 1e-9).any():
                break
            room = np.where(window[:, t], self.power_wh - draw[:, t], 0.0)
            add = np.clip(np.minimum(room, short), 0.0, None)
            draw[:, t] += add
            short -= add
        if (short > 1e-6).any():
            raise ValueError("a flexible load cannot meet its deadline")
        return np.asarray(draw)


def group_batteries(fleet: BatteryFleet) -> tuple[BatteryFleet, np.ndarray]:
    """One aggregate battery per class of batteries that differ only in size (same
    efficiencies, power and initial charge per unit of capacity, degradation cost); returns the
    classes and each battery's class. For linear costs the aggregate is exact: members' plans sum
    to a feasible class plan, and a class plan scaled by capacity share is feasible for each."""
    cap = np.maximum(fleet.capacity_wh, 1e-12)
    key = np.stack(
        [
            fleet.eta_charge,
            fleet.eta_discharge,
            np.round(fleet.power_wh / cap, 12),
            np.round(fleet.soc0_wh / cap, 12),
            fleet.degradation,
        ],
        axis=1,
    )
    _, first, cls = np.unique(key, axis=0, return_index=True, return_inverse=True)
    cls = cls.ravel()
    k = first.size

    def total(x: np.ndarray) -> np.ndarray:
        return np.bincount(cls, weights=x, minlength=k)

    classes = BatteryFleet(
        total(fleet.capacity_wh),
        total(fleet.power_wh),
        fleet.eta_charge[first],
        fleet.eta_discharge[first],
        total(fleet.soc0_wh),
        fleet.degradation[first],
    )
    return classes, cls


def group_flexible(fleet: FlexibleFleet) -> tuple[FlexibleFleet, np.ndarray]:
    """One aggregate load per class of flexible loads with the same window and the same power
    per unit of energy (exact, as for batteries); returns the classes and each load's class."""
    energy = np.maximum(fleet.energy_wh, 1e-12)
    key = np.stack([fleet.arrival, fleet.deadline, np.round(fleet.power_wh / energy, 12)], axis=1)
    _, first, cls = np.unique(key, axis=0, return_index=True, return_inverse=True)
    cls = cls.ravel()
    k = first.size
    classes = FlexibleFleet(
        np.bincount(cls, weights=fleet.energy_wh, minlength=k),
        np.bincount(cls, weights=fleet.power_wh, minlength=k),
        fleet.arrival[first],
        fleet.deadline[first],
    )
    return classes, cls


def share(plan: np.ndarray, cls: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Each member's part of its class's ``plan`` (classes x slots), in proportion to ``size``."""
    class_size = np.bincount(cls, weights=size, minlength=plan.shape[0])
    fraction = size / np.maximum(class_size[cls], 1e-12)
    return plan[cls] * fraction[:, None]  # type: ignore[no-any-return]
