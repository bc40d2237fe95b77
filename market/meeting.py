""" "When does the meeting start?" (Gueant, Lasry and Lions): a mean-field game in closed form.

A meeting is scheduled at time t but starts at T, when a share theta of the participants has
arrived (and not before t). Each participant picks an intended arrival tau and arrives at
tau + sigma eps, eps ~ N(0, 1); being late costs alpha per unit of time after t and beta per
unit after T, waiting costs gamma per unit before T. Given T, the expected cost's first-order
condition in tau is

    alpha N((tau - t) / sigma) + (beta + gamma) N((tau - T) / sigma) = gamma

(N the standard normal CDF). In equilibrium everyone picks the same tau*, arrivals are
N(tau*, sigma^2), and the meeting starts at T* = max(t, tau* + sigma N^-1(theta)): a fixed point
found here both directly (one root) and by best-response iteration on T, as a mean-field solver
would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from scipy.optimize import brentq
from scipy.stats import norm


@dataclass(frozen=True, slots=True)
class Meeting:
    """The game's parameters."""

    scheduled: float = 0.0
    sigma: float = 1.0
    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 1.0
    theta: float = 0.8

    def __post_init__(self) -> None:
        if self.sigma <= 0 or min(self.alpha, self.beta, self.gamma) < 0:
            raise ValueError("sigma > 0 and non-negative costs")
        if not 0 < self.theta < 1:
            raise ValueError("theta must be in (0, 1)")
        if self.gamma <= 0 or self.alpha + self.beta <= 0:
            raise ValueError("waiting and lateness must both cost something")

    def condition(self, tau: float, start: float) -> float:
        """The first-order condition's left side minus gamma (zero at the best response)."""
        s = self.sigma
        return float(
            self.alpha * norm.cdf((tau - self.scheduled) / s)
            + (self.beta + self.gamma) * norm.cdf((tau - start) / s)
            - self.gamma
        )

    def best_response(self, start: float) -> float:
        """The intended arrival that minimises the expected cost when the meeting starts at T."""
        span = 50 * self.sigma + abs(start) + abs(self.scheduled)
        return _root(lambda tau: self.condition(tau, start), span)

    def start(self, tau: float) -> float:
        """When a share theta of arrivals N(tau, sigma^2) is in, but not before the schedule."""
        return max(self.scheduled, tau + self.sigma * float(norm.ppf(self.theta)))

    def expected_cost(self, tau: float, start: float) -> float:
        """E[alpha (X - t)+ + beta (X - T)+ + gamma (T - X)+] for X ~ N(tau, sigma^2)."""

        def above(c: float) -> float:  # E[(X - c)+]
            z = (tau - c) / self.sigma
            return float((tau - c) * norm.cdf(z) + self.sigma * norm.pdf(z))

        below = above(start) - (tau - start)  # E[(c - X)+] = E[(X - c)+] - (E X - c)
        return self.alpha * above(self.scheduled) + self.beta * above(start) + self.gamma * below


@dataclass(frozen=True, slots=True)
class MeetingEquilibrium:
    tau: float
    start: float
    iterations: int


def equilibrium(game: Meeting) -> MeetingEquilibrium:
    """tau* and T* directly: one root of the first-order condition with T = T(tau)."""
    span = 50 * game.sigma + abs(game.scheduled)
    tau = _root(lambda x: game.condition(x, game.start(x)), span)
    return MeetingEquilibrium(tau, game.start(tau), 1)


def _root(f: Callable[[float], float], span: float) -> float:
    """The root of an increasing function on [-span, span], or ValueError if there is none."""
    if f(-span) > 0 or f(span) < 0:
        raise ValueError(
            "no equilibrium: with these costs participants always prefer to come later"
            " (it takes alpha + (beta + gamma)(1 - theta) > gamma)"
        )
    return float(brentq(f, -span, span, xtol=1e-14, rtol=1e-15))


def iterate(game: Meeting, *, tol: float = 1e-12, max_iter: int = 10_000) -> MeetingEquilibrium:
    """The same fixed point by best response: T <- start(best_response(T))."""
    start = game.scheduled
    for k in range(1, max_iter + 1):
        tau = game.best_response(start)
        new = game.start(tau)
        if abs(new - start) < tol:
            return MeetingEquilibrium(tau, new, k)
        start = new
    raise RuntimeError(f"no fixed point within {max_iter} iterations")
