"""The generic resource model and the adapter a domain implements.

What the kernel trades is a typed resource: ``Terms(resource, quantity, price, start, end)``, a
quantity of units of one resource type (``energy``, ``delivery:3``...) over a time window of
slots, at a price in msat per 1,000 units. The kernel knows nothing else about it: the matcher
pairs buyers and sellers of the same resource type, the protocol referees the moves, the rail pays
``price * quantity / 1000``.

A **domain** (an adapter) gives the resource its meaning:

- its resource types, and the agents that trade them: each an :class:`negotiator.actor.Agent`,
  with its role (buyer or seller, per slot), its valuation and its outside option (what it does
  with what it does not trade: the grid's import and export prices for energy, a spot courier for
  parcels), all inside the agent;
- how utility depends on time: :class:`TimeValue` (a value that decays per slot of delay and ends
  at a deadline) is the kernel's vocabulary for it;
- the centralised benchmark its efficiency is measured against, from the trades the run settled.

:class:`Domain` is that interface; :class:`DomainMarket` is what a domain builds for one run. The
kernel imports no domain: the composition root picks one by name (``simulate --domain``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from negotiator.actor import Agent


@dataclass(frozen=True)
class TimeValue:
    """What one unit is worth when delivered at a slot: ``value`` at ``ready``, losing
    ``decay`` of it per slot of delay; no use before ``ready``; the ``deadline`` is the last slot
    it may be delivered in (what comes after is the outside option's business)."""

    value: int
    """msat per unit, delivered at ``ready``."""
    ready: int
    deadline: int
    decay: float = 0.0

    def __post_init__(self) -> None:
        if self.deadline < self.ready:
            raise ValueError(f"deadline {self.deadline} before ready {self.ready}")
        if not self.decay >= 0 or self.decay * (self.deadline - self.ready) > 1:
            raise ValueError("decay must be >= 0 and leave the value >= 0 by the deadline")

    def at(self, slot: int) -> float:
        """msat per unit delivered at ``slot`` (clamped to the window)."""
        late = min(max(slot, self.ready), self.deadline) - self.ready
        return self.value * (1.0 - self.decay * late)


@dataclass(frozen=True)
class Trade:
    """One settled agreement, as the benchmark reads it."""

    buyer: int
    seller: int
    slot: int
    quantity: int
    amount_msat: int


@dataclass
class DomainMarket:
    """One run's market, built by a domain."""

    agents: Sequence[Agent]
    """Addressed 0..n-1, in order."""
    slots: int
    funding_msat: dict[int, int]
    """What each account starts with on the rail (enough for everything it may buy)."""
    inbound_msat: dict[int, int]
    """Room each account needs to be paid (channel capacity towards it)."""
    quality: Callable[[Sequence[Trade]], dict[str, Any]]
    """Market quality from the settled trades: ``efficiency`` against the domain's benchmark,
    and whatever else the domain measures."""
    unit: str = "unit"
    """One base unit of quantity, for people (``Wh``, ``parcel``)."""
    price_label: str = "sat / 1,000 units"
    price_scale: float = 1000.0
    """Prices (msat per 1,000 units) are shown divided by this, in ``price_label``."""
    span: float = 5000.0
    """The largest net position an agent takes in a slot, in units (the mean-field service's
    histogram spans ``[-span, span]``)."""


class Domain(Protocol):
    """An adapter: a name, its scenarios, and how it builds a run's market."""

    name: str
    default: str
    """The scenario a run takes when none is named."""

    def scenarios(self) -> tuple[str, ...]:
        """The named scenarios it ships."""
        ...

    def market(
        self, scenario: str, rng: np.random.Generator, *, strategy: str, max_rounds: int
    ) -> DomainMarket:
        """Realise ``scenario`` (a name or a TOML path) with ``rng`` and build its agents."""
        ...


__all__ = ["Domain", "DomainMarket", "TimeValue", "Trade"]
