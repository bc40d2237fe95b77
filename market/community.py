"""A synthetic energy community: consumers and PV prosumers with daily shapes and noise.

A first, honest community so a run means something: household load with morning and evening peaks,
annual consumption spread log-normally around 3,500 kWh, PV on a share of the roofs following the
sun with a day-to-day weather factor shared by the community, multiplicative noise per agent and
slot. Everything comes from one seeded generator. (The realistic scenario, with demandlib and pvlib
profiles, batteries and flexible loads, is a separate module.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class CommunitySpec:
    """The shape of a synthetic community."""

    agents: int = 1000
    slots: int = 24
    slots_per_day: int = 24
    pv_share: float = 0.4
    """Fraction of households with rooftop PV (prosumers)."""
    annual_kwh: float = 3500.0
    """Median annual household consumption."""
    load_sigma: float = 0.35
    """Log-normal spread of annual consumption across households."""
    noise_sigma: float = 0.25
    """Log-normal noise per agent and slot."""
    pv_kwp: tuple[float, float] = (3.0, 8.0)
    """Uniform range of PV peak power per prosumer."""

    def __post_init__(self) -> None:
        if self.agents < 1 or self.slots < 1 or self.slots_per_day < 1:
            raise ValueError("agents, slots and slots_per_day must be positive")
        if not 0.0 <= self.pv_share <= 1.0:
            raise ValueError("pv_share must be within [0, 1]")


def _load_shape(hours: np.ndarray) -> np.ndarray:
    """Relative household load by hour: night base, a morning and a larger evening peak."""
    morning = 0.6 * np.exp(-0.5 * ((hours - 7.5) / 1.2) ** 2)
    evening = 1.0 * np.exp(-0.5 * ((hours - 19.0) / 2.0) ** 2)
    midday = 0.25 * np.exp(-0.5 * ((hours - 13.0) / 2.5) ** 2)
    return 0.35 + morning + evening + midday


def _sun_shape(hours: np.ndarray) -> np.ndarray:
    """Relative clear-sky PV output by hour (sunrise 6:00, sunset 18:00)."""
    return np.clip(np.sin(np.pi * (hours - 6.0) / 12.0), 0.0, None)


@dataclass(frozen=True, slots=True)
class Community:
    """Realised profiles: ``net_wh[i, t]`` > 0 means agent i needs energy in slot t."""

    spec: CommunitySpec
    agent_types: tuple[str, ...]
    load_wh: np.ndarray
    pv_wh: np.ndarray
    net_wh: np.ndarray

    @classmethod
    def generate(cls, spec: CommunitySpec, rng: np.random.Generator) -> Community:
        """Draw a community from ``spec`` with the generator ``rng``."""
        n, s, per_day = spec.agents, spec.slots, spec.slots_per_day
        slot_h = 24.0 / per_day
        hours = (np.arange(s) % per_day) * slot_h + slot_h / 2
        shape = _load_shape((np.arange(per_day) + 0.5) * slot_h)
        daily_wh = rng.lognormal(np.log(spec.annual_kwh * 1000 / 365), spec.load_sigma, n)
        load = (daily_wh[:, None] * _load_shape(hours)[None, :]) / shape.sum()
        load *= rng.lognormal(-(spec.noise_sigma**2) / 2, spec.noise_sigma, (n, s))
        prosumer = rng.random(n) < spec.pv_share
        kwp = np.where(prosumer, rng.uniform(*spec.pv_kwp, n), 0.0)
        days = s // per_day + 1
        weather = rng.beta(5.0, 2.0, days)[np.arange(s) // per_day]  # shared by the community
        local = rng.lognormal(-0.01, 0.15, (n, s))
        pv = kwp[:, None] * 1000 * 0.8 * slot_h * _sun_shape(hours)[None, :] * weather * local
        load_wh = np.rint(load).astype(np.int64)
        pv_wh = np.rint(pv).astype(np.int64)
        types = tuple("prosumer" if p else "consumer" for p in prosumer)
        return cls(spec, types, load_wh, pv_wh, load_wh - pv_wh)

    def net(self, agent: int, slot: int) -> int:
        """Net need of ``agent`` in ``slot`` (Wh; negative: surplus to sell)."""
        return int(self.net_wh[agent, slot])
