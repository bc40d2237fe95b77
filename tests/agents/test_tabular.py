"""Tabular mean-field Q-learning against the engine's exact solution of the same games."""

from __future__ import annotations

import numpy as np
import pytest

from agents.tabular import mean_field_q_learning, sampled_q
from market.mfg import beach_bar, mean_field, online_mirror_descent, q_values


def test_sampled_q_values_converge_to_the_exact_ones() -> None:
    game = beach_bar(horizon=4, n=8, bar=3)
    pi = game.uniform()
    L = mean_field(game, pi)
    exact = q_values(game, L, pi)
    rng = np.random.default_rng(1)
    coarse = np.abs(sampled_q(game, L, pi, 100, rng) - exact).max()
    fine = np.abs(sampled_q(game, L, pi, 1_000_000, rng) - exact).max()
    assert fine < 0.01 < coarse  # error shrinks like 1 / sqrt(samples)
    best = np.abs(sampled_q(game, L, pi, 1_000_000, rng, evaluate=False) - q_values(game, L))
    assert best.max() < 0.01


@pytest.mark.parametrize(
    "game", [beach_bar(), beach_bar(horizon=5, n=10, bar=4)], ids=lambda g: g.name
)
def test_the_learned_population_reaches_the_engines_equilibrium(game: object) -> None:
    engine = online_mirror_descent(game, 300)  # type: ignore[arg-type]
    learned = mean_field_q_learning(
        game,  # type: ignore[arg-type]
        300,
        samples=100_000,
        rng=np.random.default_rng(2),
    )
    assert learned.exploitability[-1] < 1e-3
    assert learned.exploitability[-1] < 0.05 * learned.exploitability[0]
    assert np.abs(learned.policy - engine.policy).max() < 0.01


def test_same_seed_same_learning_and_bad_parameters_are_refused() -> None:
    game = beach_bar()
    one = mean_field_q_learning(game, 5, samples=50, rng=np.random.default_rng(3))
    two = mean_field_q_learning(game, 5, samples=50, rng=np.random.default_rng(3))
    assert one.exploitability == two.exploitability
    with pytest.raises(ValueError):
        mean_field_q_learning(game, 0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError):
        sampled_q(
            game, mean_field(game, game.uniform()), game.uniform(), 0, np.random.default_rng(0)
        )
