"""The logistics adapter: shippers and carriers trade delivery slots.

The day has ``slots`` delivery slots and the city ``zones`` delivery zones. A delivery slot in a
zone is the traded resource (``delivery:<zone>``, one unit a parcel, its window the slot):

- a **carrier** runs one route (a zone) over a shift of consecutive slots with a vehicle that
  takes ``capacity`` parcels a slot, at a marginal cost per parcel; it sells capacity and takes
  at least its cost (idle capacity earns nothing and costs nothing);
- a **shipper** has a batch of parcels in one zone, ready at slot ``ready`` and due by slot
  ``deadline``. A parcel delivered at slot ``t`` is worth ``value * (1 - decay * (t - ready))``
  (late delivery loses value: :class:`negotiator.domain.TimeValue`). What is not booked with a
  carrier by the deadline goes to a spot courier at ``spot`` per parcel, delivered at the deadline.
  Booking at ``t`` rather than waiting for the spot courier is worth ``spot + V(t) - V(deadline)``
  per parcel, the shipper's reservation at ``t``: it falls towards the spot price as the
  deadline comes near. Parcels not booked in a slot before the deadline wait for the next.

The centralised benchmark (:func:`optimum`) assigns parcels to carriers' slots with HiGHS to
maximise the gains over "every parcel by spot courier": a transportation programme whose
optimum is integral. ``efficiency`` is the market's gains over the benchmark's.

Units: quantities are parcels; prices are msat per 1,000 parcels (the kernel's price unit is per
1,000 units), so a parcel at ``p`` msat is priced ``p * 1000``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import sparse
from scipy.optimize import linprog

from agents import Trader
from agents.population import member_strategies
from agents.strategies import TimeDependent
from negotiator.domain import DomainMarket, TimeValue, Trade

SCENARIOS = Path(__file__).parent / "scenarios"
UNIT: int = 1000
"""Prices are per 1,000 units: a parcel priced ``p`` msat is ``p * UNIT`` in terms."""

Span = Annotated[tuple[float, float], Field(description="[low, high], drawn uniformly")]


class LogisticsScenario(BaseModel):
    """A day of delivery slots: the carriers' and shippers' ranges (a TOML file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "logistics"
    slots: int = Field(12, ge=1, description="delivery slots in the day")
    zones: int = Field(4, ge=1, description="delivery zones (one resource type each)")
    carriers: int = Field(40, ge=1)
    shippers: int = Field(400, ge=1)
    capacity: tuple[int, int] = Field((4, 12), description="parcels a carrier takes a slot")
    shift: tuple[int, int] = Field((6, 12), description="a carrier's shift, in slots")
    cost_sat: Span = (300.0, 700.0)
    """A carrier's marginal cost per parcel."""
    parcels: tuple[int, int] = Field((1, 8), description="parcels in a shipper's batch")
    value_sat: Span = (2000.0, 5000.0)
    """What a parcel is worth to its shipper delivered the slot it is ready."""
    decay: Span = (0.02, 0.08)
    """Share of that value lost per slot of delay."""
    window: tuple[int, int] = Field((1, 5), description="slots from ready to deadline")
    spot_sat: float = Field(1500.0, gt=0, description="the spot courier's price per parcel")

    @model_validator(mode="after")
    def _ranges(self) -> LogisticsScenario:
        for name in ("capacity", "shift", "cost_sat", "parcels", "value_sat", "decay", "window"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} needs 0 <= low <= high, got [{low}, {high}]")
        if self.decay[1] * self.window[1] >= 1:
            raise ValueError("decay * window must stay below 1 (a parcel keeps some value)")
        if self.cost_sat[1] >= self.spot_sat:
            raise ValueError("carriers must cost less than the spot courier, or no one trades")
        return self

    @classmethod
    def load(cls, name_or_path: str) -> LogisticsScenario:
        """A named scenario (``logistics``) or a TOML file."""
        path = SCENARIOS / f"{name_or_path}.toml"
        if not path.is_file():
            path = Path(name_or_path)
        if not path.is_file():
            named = ", ".join(sorted(p.stem for p in SCENARIOS.glob("*.toml")))
            raise ValueError(f"no logistics scenario {name_or_path!r}; named ones: {named}")
        with path.open("rb") as f:
            return cls.model_validate(tomllib.load(f))


@dataclass(frozen=True)
class LogisticsDay:
    """One realised day: every carrier and shipper (arrays indexed by carrier / shipper)."""

    scenario: LogisticsScenario
    carrier_zone: np.ndarray
    carrier_start: np.ndarray
    carrier_end: np.ndarray
    """Shift: slots [start, end)."""
    carrier_capacity: np.ndarray
    carrier_cost_msat: np.ndarray
    shipper_zone: np.ndarray
    shipper_parcels: np.ndarray
    shipper_ready: np.ndarray
    shipper_deadline: np.ndarray
    """Last slot a carrier may deliver (the spot courier delivers then if none did)."""
    shipper_value_msat: np.ndarray
    shipper_decay: np.ndarray

    @classmethod
    def generate(cls, scenario: LogisticsScenario, rng: np.random.Generator) -> LogisticsDay:
        s, k, m = scenario.slots, scenario.carriers, scenario.shippers

        def ints(span: tuple[int, int], n: int) -> np.ndarray:
            return rng.integers(span[0], span[1] + 1, size=n)

        def floats(span: tuple[float, float], n: int) -> np.ndarray:
            return rng.uniform(span[0], span[1], size=n)

        shift = np.minimum(ints(scenario.shift, k), s)
        start = rng.integers(0, s - shift + 1)
        ready = rng.integers(0, s, size=m)
        deadline = np.minimum(ready + ints(scenario.window, m), s - 1)
        return cls(
            scenario,
            carrier_zone=np.arange(k) % scenario.zones,  # every zone served
            carrier_start=start,
            carrier_end=start + shift,
            carrier_capacity=ints(scenario.capacity, k),
            carrier_cost_msat=np.rint(floats(scenario.cost_sat, k) * 1000).astype(np.int64),
            shipper_zone=rng.integers(0, scenario.zones, size=m),
            shipper_parcels=ints(scenario.parcels, m),
            shipper_ready=ready,
            shipper_deadline=deadline,
            shipper_value_msat=np.rint(floats(scenario.value_sat, m) * 1000).astype(np.int64),
            shipper_decay=floats(scenario.decay, m),
        )

    @property
    def spot_msat(self) -> int:
        return round(self.scenario.spot_sat * 1000)

    def value(self, shipper: int) -> TimeValue:
        """What one of the shipper's parcels is worth, by delivery slot."""
        return TimeValue(
            int(self.shipper_value_msat[shipper]),
            int(self.shipper_ready[shipper]),
            int(self.shipper_deadline[shipper]),
            float(self.shipper_decay[shipper]),
        )

    def gain_msat(self, shipper: int, carrier: int, slot: int) -> float:
        """The gain of one parcel delivered by ``carrier`` at ``slot`` over the spot courier at
        the deadline: spot - cost + V(slot) - V(deadline)."""
        v = self.value(shipper)
        return (
            self.spot_msat - float(self.carrier_cost_msat[carrier]) + v.at(slot) - v.at(v.deadline)
        )


@dataclass(frozen=True)
class Assignment:
    """The centralised benchmark: the best assignment of parcels to carriers' slots."""

    gain_msat: float
    """Gains over every parcel by spot courier."""
    delivered: int
    """Parcels carriers deliver (the rest go by spot courier)."""


def optimum(day: LogisticsDay) -> Assignment:
    """The assignment that maximises the gains over the spot courier (HiGHS)."""
    arcs: list[tuple[int, int, int]] = []  # (shipper, carrier, slot)
    by_zone: dict[int, list[int]] = {}
    for c, z in enumerate(day.carrier_zone):
        by_zone.setdefault(int(z), []).append(c)
    gains: list[float] = []
    for j in range(len(day.shipper_zone)):
        ready, deadline = int(day.shipper_ready[j]), int(day.shipper_deadline[j])
        for c in by_zone.get(int(day.shipper_zone[j]), []):
            lo = max(ready, int(day.carrier_start[c]))
            hi = min(deadline, int(day.carrier_end[c]) - 1)
            for t in range(lo, hi + 1):
                g = day.gain_msat(j, c, t)
                if g > 0:
                    arcs.append((j, c, t))
                    gains.append(g)
    if not arcs:
        return Assignment(0.0, 0)
    n = len(arcs)
    shippers, slots = len(day.shipper_zone), day.scenario.slots
    rows_j = [j for j, _, _ in arcs]
    rows_ct = [shippers + c * slots + t for _, c, t in arcs]
    a = sparse.csr_matrix(
        (np.ones(2 * n), (rows_j + rows_ct, list(range(n)) * 2)),
        shape=(shippers + len(day.carrier_zone) * slots, n),
    )
    b = np.concatenate([day.shipper_parcels, np.repeat(day.carrier_capacity, slots)]).astype(
        np.float64
    )
    result = linprog(-np.asarray(gains), A_ub=a, b_ub=b, bounds=(0, None), method="highs")
    if result.status != 0:
        raise RuntimeError(f"the assignment programme failed: {result.message}")
    return Assignment(float(-result.fun), round(float(result.x.sum())))


class Shipper(Trader):
    """A shipper's batch: it buys delivery in its zone from the slot the parcels are ready,
    carries what it did not book to the next slot, and sends what is left at the deadline by
    spot courier."""

    __slots__ = ("_pending", "_spot", "parcels", "spot_parcels", "value")

    def __init__(
        self,
        address: int,
        zone: int,
        parcels: int,
        value: TimeValue,
        spot_msat: int,
        floor_msat: int,
        strategy: TimeDependent,
        **kwargs: Any,
    ) -> None:
        self.value = value
        self._spot = spot_msat
        self._pending = parcels
        self.parcels = parcels
        self.spot_parcels = 0
        """Parcels that went by spot courier."""

        def tariff(slot: int) -> tuple[int, int]:
            # the most it pays to book now rather than wait for the spot courier, and the least
            # a carrier could take (its opening anchor)
            limit = spot_msat + value.at(slot) - value.at(value.deadline)
            return round(limit) * UNIT, floor_msat * UNIT

        super().__init__(
            address,
            "shipper",
            self._need,
            tariff,
            strategy,
            resource=f"delivery:{zone}",
            **kwargs,
        )

    def _need(self, slot: int) -> int:
        return self._pending if self.value.ready <= slot <= self.value.deadline else 0

    def close_slot(self, slot: int) -> None:
        if self.value.ready <= slot < self.value.deadline:  # carry what is unbooked
            booked = self._traded
            self._traded = self._need(slot)  # nothing left to the outside option this slot
            super().close_slot(slot)
            self._pending -= booked
            return
        super().close_slot(slot)  # the deadline: the rest goes by spot courier
        if slot == self.value.deadline:
            self._pending = 0

    def outside_option(self, slot: int, position: int, sign: int) -> None:
        """The outside option: the spot courier, at its price (whenever a booking is lost)."""
        if position > 0:
            self.spot_parcels += sign * position
            self.imported_wh += sign * position
            self.cost_msat += sign * position * self._spot


class Carrier(Trader):
    """A carrier's route: it sells its capacity in its zone over its shift and takes at least
    its marginal cost. Idle capacity earns and costs nothing (its outside option)."""

    __slots__ = ()

    def __init__(
        self, address: int, day: LogisticsDay, index: int, strategy: TimeDependent, **kwargs: Any
    ) -> None:
        start, end = int(day.carrier_start[index]), int(day.carrier_end[index])
        capacity = int(day.carrier_capacity[index])
        prices = (day.spot_msat * UNIT, int(day.carrier_cost_msat[index]) * UNIT)
        super().__init__(
            address,
            "carrier",
            lambda slot: -capacity if start <= slot < end else 0,
            lambda slot: prices,
            strategy,
            resource=f"delivery:{int(day.carrier_zone[index])}",
            **kwargs,
        )

    def outside_option(self, slot: int, position: int, sign: int) -> None:
        return None  # idle capacity: nothing earned, nothing spent


class LogisticsDomain:
    """The logistics adapter (:class:`negotiator.domain.Domain`)."""

    name = "logistics"
    default = "logistics"

    def scenarios(self) -> tuple[str, ...]:
        return tuple(sorted(p.stem for p in SCENARIOS.glob("*.toml")))

    def market(
        self, scenario: str, rng: np.random.Generator, *, strategy: str, max_rounds: int
    ) -> DomainMarket:
        spec = LogisticsScenario.load(scenario)
        day_rng, strategy_rng = rng.spawn(2)
        day = LogisticsDay.generate(spec, day_rng)
        shippers, carriers = len(day.shipper_zone), len(day.carrier_zone)
        strategies = member_strategies(strategy, shippers + carriers, strategy_rng)
        floor = int(day.carrier_cost_msat.min())
        agents: list[Trader] = [
            Shipper(
                j,
                int(day.shipper_zone[j]),
                int(day.shipper_parcels[j]),
                day.value(j),
                day.spot_msat,
                floor,
                strategies[j],
                max_rounds=max_rounds,
            )
            for j in range(shippers)
        ]
        agents += [
            Carrier(shippers + c, day, c, strategies[shippers + c], max_rounds=max_rounds)
            for c in range(carriers)
        ]
        most = int(day.shipper_value_msat.max()) + day.spot_msat  # a parcel's dearest booking
        funding = {j: int(day.shipper_parcels[j]) * most * 2 + 1_000_000 for j in range(shippers)}
        funding.update({shippers + c: 1_000_000 for c in range(carriers)})
        inbound = {j: 1_000_000 for j in range(shippers)}
        span = day.carrier_end - day.carrier_start
        inbound.update(
            {
                shippers + c: int(day.carrier_capacity[c] * span[c]) * most * 2 + 1_000_000
                for c in range(carriers)
            }
        )
        best = optimum(day)

        def quality(trades: Sequence[Trade]) -> dict[str, Any]:
            gain = sum(
                t.quantity * day.gain_msat(t.buyer, t.seller - shippers, t.slot) for t in trades
            )
            delivered = sum(t.quantity for t in trades)
            parcels = int(day.shipper_parcels.sum())
            return {
                "scenario": spec.name,
                "domain": self.name,
                "efficiency": round(gain / best.gain_msat, 4) if best.gain_msat > 0 else 0.0,
                "gain_msat": round(gain),
                "optimum_gain_msat": round(best.gain_msat),
                "parcels": parcels,
                "delivered_by_carriers": delivered,
                "optimum_delivered_by_carriers": best.delivered,
                "spot_parcels": parcels - delivered,
            }

        return DomainMarket(
            agents,
            spec.slots,
            funding,
            inbound,
            quality,
            unit="parcel",
            price_label="sat / parcel",
            price_scale=1e6,  # msat per 1,000 parcels to sat per parcel
            span=float(max(spec.capacity[1], spec.parcels[1])),
        )


__all__ = [
    "UNIT",
    "Assignment",
    "Carrier",
    "LogisticsDay",
    "LogisticsDomain",
    "LogisticsScenario",
    "Shipper",
    "optimum",
]
