"""The meeting game: the first-order condition, the fixed point, and no profitable deviation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.stats import norm

from market.meeting import Meeting, equilibrium, iterate

GAMES = [
    Meeting(),
    Meeting(scheduled=9.0, sigma=0.25, alpha=2.0, beta=0.5, gamma=1.0, theta=0.6),
    Meeting(scheduled=0.0, sigma=2.0, alpha=1.0, beta=3.0, gamma=1.0, theta=0.9),
]


@pytest.mark.parametrize("game", GAMES)
def test_the_equilibrium_solves_the_first_order_condition_and_the_fixed_point(
    game: Meeting,
) -> None:
    direct = equilibrium(game)
    lhs = game.alpha * norm.cdf((direct.tau - game.scheduled) / game.sigma) + (
        game.beta + game.gamma
    ) * norm.cdf((direct.tau - direct.start) / game.sigma)
    assert lhs == pytest.approx(game.gamma, abs=1e-10)
    assert direct.start == pytest.approx(
        max(game.scheduled, direct.tau + game.sigma * norm.ppf(game.theta)), abs=1e-12
    )
    iterated = iterate(game)
    assert iterated.start == pytest.approx(direct.start, abs=1e-9)
    assert iterated.tau == pytest.approx(direct.tau, abs=1e-9)


@pytest.mark.parametrize("game", GAMES)
def test_no_participant_gains_by_arriving_at_another_time(game: Meeting) -> None:
    eq = equilibrium(game)
    best = minimize_scalar(
        lambda tau: game.expected_cost(tau, eq.start),
        bracket=(eq.tau - 1, eq.tau + 1),
        tol=1e-12,
    )
    assert best.x == pytest.approx(eq.tau, abs=1e-5)
    for shift in (-0.5, -0.05, 0.05, 0.5):
        assert game.expected_cost(eq.tau + shift, eq.start) > game.expected_cost(eq.tau, eq.start)


def test_a_simulated_crowd_starts_the_meeting_when_predicted() -> None:
    game = GAMES[1]
    eq = equilibrium(game)
    arrivals = eq.tau + game.sigma * np.random.default_rng(3).standard_normal(200_000)
    quorum = float(np.quantile(arrivals, game.theta))
    assert max(game.scheduled, quorum) == pytest.approx(eq.start, abs=0.01)


def test_a_game_without_an_equilibrium_says_why() -> None:
    chase = Meeting(alpha=0.0, beta=3.0, gamma=1.0, theta=0.9, sigma=2.0)  # nothing anchors it
    with pytest.raises(ValueError, match="no equilibrium"):
        equilibrium(chase)


def test_bad_parameters_are_refused() -> None:
    for kwargs in ({"sigma": 0.0}, {"theta": 1.0}, {"gamma": 0.0}, {"alpha": -1.0}):
        with pytest.raises(ValueError):
            Meeting(**kwargs)  # type: ignore[arg-type]
