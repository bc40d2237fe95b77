"""Time-dependent concession strategies (Faratin, Sierra & Jennings 1998).

The offer at normalised time t in [0, 1] moves from the aspiration a (the price one opens with)
to the reservation r (the worst acceptable price)::

    alpha(t) = k + (1 - k) * t ** (1 / beta)
    offer(t) = a + alpha(t) * (r - a)

beta < 1 is Boulware (holds firm, concedes near the deadline), beta = 1 linear, beta > 1 Conceder
(concedes early). The same formula serves buyers (a < r: prices rise) and sellers (a > r: prices
fall). Time is measured in rounds: t = (round - 1) / (max_rounds - 1), so a run is deterministic.

Acceptance is AC_next: take the counterpart's offer if it is at least as good as the offer one would
make next; at the last round, take anything within the reservation price.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TimeDependent:
    """One member of the Faratin family."""

    beta: float
    k: float = 0.0
    """Initial concession: alpha(0)."""
    name: str = "time-dependent"
    tick: int = 1
    """Price granularity: offers are multiples of ``tick`` away from the aspiration."""

    def __post_init__(self) -> None:
        if self.tick < 1:
            raise ValueError(f"tick must be at least 1, got {self.tick}")
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, got {self.beta}")
        if not 0.0 <= self.k <= 1.0:
            raise ValueError(f"k must be within [0, 1], got {self.k}")

    def alpha(self, t: float) -> float:
        """Concession fraction at normalised time ``t`` (clamped to [0, 1])."""
        t = min(max(t, 0.0), 1.0)
        return self.k + (1.0 - self.k) * float(t ** (1.0 / self.beta))

    def offer(self, t: float, aspiration: int, reservation: int) -> int:
        """The price to offer at time ``t``, rounded toward the aspiration side."""
        steps = int(self.alpha(t) * abs(reservation - aspiration) / self.tick)
        # Whole ticks toward the reservation: never crosses it.
        return (
            aspiration + steps * self.tick
            if reservation >= aspiration
            else aspiration - steps * self.tick
        )

    def schedule(self, max_rounds: int, aspiration: int, reservation: int) -> tuple[int, ...]:
        """Offers by round index: ``schedule[i]`` is the offer at t = i / (max_rounds - 1).

        The last entry (index ``max_rounds``) repeats the reservation side's clamp at t = 1, so a
        trader indexes it by the round it is answering without a bounds check. Computed once per
        slot: the hot path reads prices from this table instead of raising to a power per message.
        """
        tick = self.tick
        span = abs(reservation - aspiration)
        sign = tick if reservation >= aspiration else -tick
        return tuple(
            aspiration + int(a * span / tick) * sign  # as offer(): same float operations
            for a in _alphas(self.beta, self.k, max_rounds)
        )

    def accepts(
        self, offered: int, t_next: float, aspiration: int, reservation: int, last: bool
    ) -> bool:
        """AC_next: is ``offered`` at least as good as our next offer (or, at the end, acceptable)?"""
        buying = reservation >= aspiration
        bound = reservation if last else self.offer(t_next, aspiration, reservation)
        return offered <= bound if buying else offered >= bound


@functools.lru_cache(maxsize=256)
def _alphas(beta: float, k: float, max_rounds: int) -> tuple[float, ...]:
    """alpha at t = i / (max_rounds - 1) for i = 0..max_rounds (clamped at 1), shared by agents."""
    span = max(max_rounds - 1, 1)
    return tuple(
        k + (1.0 - k) * float(min(i / span, 1.0) ** (1.0 / beta)) for i in range(max_rounds + 1)
    )


def boulware(k: float = 0.0) -> TimeDependent:
    """Firm until late: beta = 0.25 (NegMAS's 'boulware' exponent 4)."""
    return TimeDependent(0.25, k, "boulware")


def linear(k: float = 0.0) -> TimeDependent:
    """Concedes at a constant rate: beta = 1."""
    return TimeDependent(1.0, k, "linear")


def conceder(k: float = 0.0) -> TimeDependent:
    """Concedes early: beta = 4 (NegMAS's 'conceder' exponent 0.25)."""
    return TimeDependent(4.0, k, "conceder")


STRATEGIES = {"boulware": boulware, "linear": linear, "conceder": conceder}
"""Named strategies, as the CLI accepts them."""


def strategy(name: str) -> TimeDependent:
    """The strategy called ``name``; ValueError lists the choices otherwise."""
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose from {sorted(STRATEGIES)}") from None
