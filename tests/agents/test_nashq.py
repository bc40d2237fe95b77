"""Nash-Q on a two-coalition mean-field-type game, checked against the engine."""

from __future__ import annotations

import numpy as np
import pytest

from agents.nashq import nash_q, stage_equilibrium, transport
from market.mfg import (
    average_reward,
    coalition_chase,
    crowded_beach,
    multi_exploitability,
    multi_fictitious_play,
)


def test_a_transport_switches_only_the_members_needed() -> None:
    pi = transport(0.2, 0.7)  # 0.5 of state 0's 0.8 must go
    np.testing.assert_allclose(pi, [[0.375, 0.625], [1.0, 0.0]])
    assert np.array([0.8, 0.2]) @ pi[:, 1] == pytest.approx(0.5)
    assert transport(0.6, 0.3).tolist() == [[1.0, 0.0], [0.5, 0.5]]
    assert transport(0.4, 0.4).tolist() == [[1.0, 0.0], [1.0, 0.0]]


def test_stage_games_get_a_pure_equilibrium_when_there_is_one_else_a_mixed_one() -> None:
    # a coordination game: two pure equilibria, the better one is taken
    a = np.array([[2.0, 0.0], [0.0, 1.0]])
    x, y, mixed = stage_equilibrium(a, a)
    assert not mixed and x.tolist() == [1, 0] and y.tolist() == [1, 0]
    # matching pennies: only the mixed one
    pennies = np.array([[1.0, -1.0], [-1.0, 1.0]])
    x, y, mixed = stage_equilibrium(pennies, -pennies)
    assert mixed
    np.testing.assert_allclose(x, [0.5, 0.5]) and np.testing.assert_allclose(y, [0.5, 0.5])


def test_nash_q_learns_the_coalitions_equilibrium_the_engine_finds() -> None:
    game = coalition_chase()
    learned = nash_q(game, 10, 3, agents=10_000, rng=np.random.default_rng(1))
    # chasers all in state 1, settlers 0.7 there, from the first move on
    assert learned.path == [(2, 4)] + [(10, 7)] * game.horizon
    assert learned.mixed == 0 and learned.gaps[-1] < 1e-3  # the sampled payoffs average out
    gaps = multi_exploitability(game, learned.policies, coalitions=True)
    assert max(gaps) < 1e-3  # the engine's exact best responses gain nothing
    engine, _ = multi_fictitious_play(game, 500, coalitions=True)
    for k in (0, 1):
        assert average_reward(game, learned.policies, k) == pytest.approx(
            average_reward(game, engine, k), abs=5e-3
        )
    coarse = nash_q(game, 5, 2, rng=np.random.default_rng(1))  # 0.7 is not on a grid of fifths
    assert max(multi_exploitability(game, coarse.policies, coalitions=True)) > 0.1


def test_nash_q_refuses_games_it_does_not_cover() -> None:
    with pytest.raises(ValueError, match="two coalitions"):
        nash_q(crowded_beach(), 4, 1)
    with pytest.raises(ValueError, match="not on the grid"):
        nash_q(coalition_chase(start=(0.25, 0.4)), 10, 1)
