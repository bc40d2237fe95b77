"""Energy community scenarios: a TOML file validated by pydantic, realised with a seeded generator.

A scenario names the community's size, its days and slot length, the grid tariff, and for each
agent type its share of the members and the ranges their devices are drawn from: annual load on a
BDEW profile, PV peak power and roof orientation, a home battery, a flexible (deferrable) load.
Members differ in size, risk aversion and patience. Named scenarios ship with the package
(:data:`NAMED`); any other TOML file with the same fields works (``--scenario path.toml``).

Realising a scenario draws every member's forecast profiles (the expected load and PV of the day)
and the realised ones (around the forecast: the member's activity level that day, per-slot noise
and appliance runs for the load, a community-wide cloud factor for PV), and builds the device
fleets. Everything comes from the one generator: same seed, same community.
"""

from __future__ import annotations

import datetime
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from market.devices import BatteryFleet, FlexibleFleet
from market.profiles import AZIMUTHS, load_shape, pv_shape
from market.tariff import TimeOfUseTariff

SCENARIOS = Path(__file__).parent / "scenarios"
NAMED = tuple(sorted(p.stem for p in SCENARIOS.glob("*.toml")))
"""The scenarios shipped with the package."""

Span = Annotated[tuple[float, float], Field(description="[low, high], drawn uniformly")]


def _ordered(value: tuple[float, float]) -> tuple[float, float]:
    low, high = value
    if not 0 <= low <= high:
        raise ValueError(f"a range needs 0 <= low <= high, got [{low}, {high}]")
    return value


class TariffSpec(BaseModel):
    """The grid's prices: time of use for imports, a flat feed-in, a demand charge."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    off_peak: int = Field(220_000, gt=0, description="msat per kWh imported 22:00-07:00")
    day: int = Field(280_000, gt=0, description="msat per kWh imported 07:00-17:00")
    peak: int = Field(350_000, gt=0, description="msat per kWh imported 17:00-22:00")
    export: int = Field(80_000, ge=0, description="msat per kWh exported")
    demand_charge: int = Field(
        0, ge=0, description="msat per kW of the community's highest import, per day"
    )

    @model_validator(mode="after")
    def _export_below_imports(self) -> TariffSpec:
        if self.export >= min(self.off_peak, self.day, self.peak):
            raise ValueError("the export price must be below every import price")
        return self


class TypeSpec(BaseModel):
    """One agent type: its share of the community and the ranges its members are drawn from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    share: float = Field(ge=0, le=1)
    profile: Literal["h0", "g0"] = "h0"
    annual_kwh: Span
    pv_kwp: Span = (0.0, 0.0)
    battery_kwh: Span = (0.0, 0.0)
    battery_c_rate: float = Field(0.5, gt=0, le=4, description="power / capacity, per hour")
    battery_efficiency: float = Field(0.9, gt=0, le=1, description="round trip")
    battery_degradation: int = Field(20_000, ge=0, description="msat per kWh of throughput")
    flexible_kwh: Span = (0.0, 0.0)
    flexible_hours: float = Field(3.0, gt=0, description="hours at full power to draw it all")
    flexible_window_h: Span = (6.0, 12.0)
    risk_aversion: Span = (0.0, 1.0)
    patience: Span = (0.0, 1.0)

    _ranges = field_validator(
        "annual_kwh",
        "pv_kwp",
        "battery_kwh",
        "flexible_kwh",
        "flexible_window_h",
        "risk_aversion",
        "patience",
    )(_ordered)


class Scenario(BaseModel):
    """A community to simulate (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    agents: int = Field(ge=2)
    days: int = Field(1, ge=1, le=366)
    slots_per_day: Literal[24, 48, 96] = 96
    first_day: str = Field("06-21", description="month-day of the first day, MM-DD")
    year: int = Field(2025, ge=1990, le=2100)
    load_noise: float = Field(0.25, ge=0, le=2, description="log-normal sigma per member and slot")
    day_noise: float = Field(
        0.3, ge=0, le=2, description="log-normal sigma of each member's activity level per day"
    )
    appliance_share: float = Field(
        0.3, ge=0, lt=1, description="share of the load drawn in discrete appliance runs"
    )
    appliance_wh: float = Field(
        250.0, gt=0, description="mean energy of one appliance run within a slot, Wh"
    )
    cloud_noise: float = Field(0.2, ge=0, le=2, description="log-normal sigma of the cloud factor")
    tariff: TariffSpec = Field(default_factory=TariffSpec)
    types: dict[str, TypeSpec]

    @field_validator("first_day")
    @classmethod
    def _month_day(cls, value: str) -> str:
        datetime.datetime.strptime(f"2025-{value}", "%Y-%m-%d")  # raises ValueError if not a date
        return value

    @model_validator(mode="after")
    def _shares(self) -> Scenario:
        if not self.types:
            raise ValueError("a scenario needs at least one agent type")
        total = sum(t.share for t in self.types.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"type shares must sum to 1, not {total:g}")
        return self

    @property
    def slots(self) -> int:
        """Slots over the whole horizon."""
        return self.days * self.slots_per_day

    @property
    def slot_hours(self) -> float:
        """Length of one slot in hours."""
        return 24.0 / self.slots_per_day

    @classmethod
    def load(cls, name_or_path: str | Path) -> Scenario:
        """A named scenario (see :data:`NAMED`) or a TOML file."""
        path = Path(name_or_path)
        if not path.suffix:
            path = SCENARIOS / f"{name_or_path}.toml"
            if not path.exists():
                raise ValueError(f"no scenario {name_or_path!r}: named ones are {', '.join(NAMED)}")
        with path.open("rb") as f:
            return cls.model_validate(tomllib.load(f))

    def with_agents(self, agents: int) -> Scenario:
        """The same scenario at another size."""
        return self.model_copy(update={"agents": agents})

    def counts(self) -> dict[str, int]:
        """Members per type, the shares rounded by largest remainder so they sum to ``agents``."""
        names = list(self.types)
        exact = np.array([self.types[n].share for n in names]) * self.agents
        count = np.floor(exact).astype(int)
        for i in np.argsort(-(exact - count), kind="stable")[: self.agents - count.sum()]:
            count[i] += 1
        return dict(zip(names, count.tolist(), strict=True))

    def tou(self) -> TimeOfUseTariff:
        """The scenario's tariff as the traders read it (slot -> import and export price)."""
        t = self.tariff
        return TimeOfUseTariff(self.slots_per_day, t.off_peak, t.day, t.peak, t.export)

    def prices(self) -> tuple[np.ndarray, np.ndarray]:
        """Import and export price per slot over the horizon (msat per kWh)."""
        tariff = self.tou()
        imp = np.array([tariff.import_price(slot) for slot in range(self.slots)], np.int64)
        return imp, np.full(self.slots, tariff.export, np.int64)

    def realise(self, rng: np.random.Generator) -> EnergyCommunity:
        """Draw the community: members, devices, forecast and realised profiles."""
        n, s, per_day = self.agents, self.slots, self.slots_per_day
        day0 = (
            datetime.date(self.year, *map(int, self.first_day.split("-"))).timetuple().tm_yday - 1
        )
        counts = self.counts()
        names = list(self.types)
        code = rng.permutation(np.repeat(np.arange(len(names)), [counts[k] for k in names]))
        spec = [self.types[k] for k in names]

        def draw(field: str) -> np.ndarray:
            low = np.array([getattr(t, field)[0] for t in spec])[code]
            high = np.array([getattr(t, field)[1] for t in spec])[code]
            return low + (high - low) * rng.random(n)  # type: ignore[no-any-return]

        annual = draw("annual_kwh")
        shapes = {p: load_shape(p, self.year, day0, self.days, per_day) for p in ("h0", "g0")}
        profile = np.array([t.profile for t in spec])[code]
        load_f = (
            annual[:, None]
            * 1000
            * np.where((profile == "g0")[:, None], shapes["g0"], shapes["h0"])
        )
        kwp = draw("pv_kwp")
        orientation = rng.integers(len(AZIMUTHS), size=n)
        pv_table = np.stack([pv_shape(o, day0, self.days, per_day) for o in range(len(AZIMUTHS))])
        pv_f = kwp[:, None] * pv_table[orientation]
        load_r = self._realised_load(load_f, rng)
        pv_r = (
            pv_f * _cloud(rng, s, self.cloud_noise)[None, :] * rng.lognormal(-0.00125, 0.05, (n, s))
        )

        batteries, battery_owner = self._batteries(draw, code, spec)
        flexible, flexible_owner = self._flexible(draw, code, spec, rng)
        imp, exp = self.prices()
        return EnergyCommunity(
            scenario=self,
            type_names=tuple(names),
            type_code=code,
            load_forecast_wh=load_f,
            pv_forecast_wh=pv_f,
            load_wh=load_r,
            pv_wh=pv_r,
            batteries=batteries,
            battery_owner=battery_owner,
            flexible=flexible,
            flexible_owner=flexible_owner,
            risk_aversion=draw("risk_aversion"),
            patience=draw("patience"),
            import_price=imp,
            export_price=exp,
        )

    def _realised_load(self, load_f: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The realised load around its forecast, with the forecast as its mean: the member's
        activity level that day (log-normal, ``day_noise``) scales a base part with per-slot
        noise (``load_noise``) and the appliance runs, a compound Poisson process (run count
        Poisson with the expected share of the load, sizes exponential with mean
        ``appliance_wh``; their sum in a slot is gamma). The runs give 15-minute household load
        its spikes: a heavy right tail that the day-ahead profile cannot know."""
        n, s = load_f.shape
        per_day = self.slots_per_day
        sd, sigma, share = self.day_noise, self.load_noise, self.appliance_share
        level = rng.lognormal(-(sd**2) / 2, sd, (n, s // per_day)).repeat(per_day, axis=1)
        expected = load_f * level
        base = (1 - share) * expected * rng.lognormal(-(sigma**2) / 2, sigma, (n, s))
        if share == 0:
            return base
        runs = rng.poisson(share * expected / self.appliance_wh)
        spikes = np.where(runs > 0, rng.gamma(np.maximum(runs, 1), self.appliance_wh), 0.0)
        return base + spikes

    def _batteries(self, draw, code, spec) -> tuple[BatteryFleet, np.ndarray]:  # type: ignore[no-untyped-def]
        capacity = draw("battery_kwh") * 1000
        owner = np.flatnonzero(capacity > 0)
        c = code[owner]
        cap = capacity[owner]
        eta = np.sqrt(np.array([t.battery_efficiency for t in spec]))[c]
        c_rate = np.array([t.battery_c_rate for t in spec])[c]
        degradation = np.array([t.battery_degradation for t in spec])[c] / 1000  # msat per Wh
        fleet = BatteryFleet(cap, cap * c_rate * self.slot_hours, eta, eta, cap * 0.5, degradation)
        return fleet, owner

    def _flexible(self, draw, code, spec, rng) -> tuple[FlexibleFleet, np.ndarray]:  # type: ignore[no-untyped-def]
        energy = draw("flexible_kwh") * 1000
        owner = np.flatnonzero(energy > 0)
        c = code[owner]
        per_day = self.slots_per_day
        hours = np.array([t.flexible_hours for t in spec])[c]
        window_h = draw("flexible_window_h")[owner]
        slots_needed = np.ceil(hours / self.slot_hours).astype(np.int64)
        window = np.maximum(np.round(window_h / self.slot_hours).astype(np.int64), slots_needed)
        window = np.minimum(window, per_day)
        day = rng.integers(self.days, size=owner.size)
        start = rng.integers(0, per_day - window + 1)  # the window lies within its day
        arrival = day * per_day + start
        fleet = FlexibleFleet(
            energy[owner], energy[owner] / (hours / self.slot_hours), arrival, arrival + window
        )
        return fleet, owner


def _cloud(rng: np.random.Generator, slots: int, sigma: float) -> np.ndarray:
    """The community's cloud factor per slot: log-normal AR(1) (clouds pass slowly), mean 1."""
    rho = 0.9
    eps = rng.normal(0.0, sigma * np.sqrt(1 - rho**2), slots)
    x = np.empty(slots)
    x[0] = rng.normal(0.0, sigma)
    for t in range(1, slots):
        x[t] = rho * x[t - 1] + eps[t]
    return np.exp(x - sigma**2 / 2)


@dataclass(frozen=True)
class EnergyCommunity:
    """A realised scenario: members x slots profiles (Wh) and the device fleets."""

    scenario: Scenario
    type_names: tuple[str, ...]
    type_code: np.ndarray
    load_forecast_wh: np.ndarray
    pv_forecast_wh: np.ndarray
    load_wh: np.ndarray
    pv_wh: np.ndarray
    batteries: BatteryFleet
    battery_owner: np.ndarray
    """Member index of each battery."""
    flexible: FlexibleFleet
    flexible_owner: np.ndarray
    risk_aversion: np.ndarray
    patience: np.ndarray
    import_price: np.ndarray
    export_price: np.ndarray

    @property
    def agents(self) -> int:
        """Number of members."""
        return int(self.type_code.size)

    @property
    def agent_types(self) -> tuple[str, ...]:
        """Each member's type name."""
        return tuple(self.type_names[c] for c in self.type_code)

    def demand_charge_per_wh(self) -> float:
        """The demand charge in msat per Wh-per-slot of peak import, over the whole horizon."""
        s = self.scenario
        return s.tariff.demand_charge * s.days / (s.slot_hours * 1000)
