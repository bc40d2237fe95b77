"""Finite mean-field games: the solvers reproduce MFGLib's numbers and obey the definitions."""

from __future__ import annotations

import numpy as np
import pytest

from market.mfg import (
    FiniteGame,
    beach_bar,
    exploitability,
    fictitious_play,
    fixed_point,
    greedy,
    mean_field,
    online_mirror_descent,
    q_values,
    softmax,
)

# Exploitability after the first and the last iteration, from MFGLib 0.3.0 (torch float64) run on
# this machine: Environment.beach_bar(T, n), Algorithm.solve(max_iter=it, atol=None, rtol=None).
MFGLIB = {
    ("fp", 2, 4, 10): (0.40143711297554163, 0.05801913474363052),
    ("fp_damped", 2, 4, 10): (0.6529434812236876, 0.04114221139518959),
    ("omd", 2, 4, 10): (0.5316852096715952, 0.07609383801372371),
    ("fixed_point", 2, 4, 10): (1.0259032538182544, 3.735235803558815),
    ("fp", 10, 20, 50): (9.987087119762723, 0.1975262707976615),
    ("fp_damped", 10, 20, 50): (14.968838284111929, 0.6382481869438328),
    ("omd", 10, 20, 50): (5.47019344618441, 0.022353596822993538),
    ("fixed_point", 10, 20, 50): (40.25405089691532, 52.47847278267968),
}


@pytest.mark.parametrize(("algorithm", "horizon", "n", "iterations"), sorted(MFGLIB))
def test_the_solvers_match_mfglib_iteration_for_iteration(
    algorithm: str, horizon: int, n: int, iterations: int
) -> None:
    game = beach_bar(horizon=horizon, n=n)
    run = {
        "fp": lambda: fictitious_play(game, iterations),
        "fp_damped": lambda: fictitious_play(game, iterations, alpha=0.3),
        "omd": lambda: online_mirror_descent(game, iterations, alpha=1.0),
        "fixed_point": lambda: fixed_point(game, iterations),  # = MFGLib's FP with alpha 1
    }[algorithm]()
    first, last = MFGLIB[(algorithm, horizon, n, iterations)]
    assert run.exploitability[0] == pytest.approx(first, abs=1e-9)
    assert run.exploitability[-1] == pytest.approx(last, abs=1e-9)


def test_the_mean_field_is_a_distribution_and_the_best_response_is_exact() -> None:
    game = beach_bar(horizon=5, n=7)
    pi = softmax(np.random.default_rng(1).normal(size=(6, 7, 3)), 1.0)
    L = mean_field(game, pi)
    assert np.allclose(L.sum(axis=(1, 2)), 1.0) and (L >= 0).all()
    Q = q_values(game, L)
    br = greedy(Q)
    # the best response's value against L is Q*'s max; no policy does better
    own = q_values(game, L, br)
    assert np.allclose((br * own).sum(axis=-1), Q.max(axis=-1))
    assert exploitability(game, pi) > 0


def test_a_dominant_action_is_an_equilibrium_with_zero_exploitability() -> None:
    # rewards independent of the crowd: action 1 pays 1, action 0 pays 0, states never change
    stay = np.zeros((3, 2, 3))
    for s in range(3):
        stay[s, :, s] = 1.0
    game = FiniteGame(
        4, np.full(3, 1 / 3), 2, lambda t, L: np.tile([0.0, 1.0], (3, 1)), lambda t, L: stay
    )
    best = greedy(q_values(game, mean_field(game, game.uniform())))
    assert np.all(best[..., 1] == 1.0)
    assert exploitability(game, best) == pytest.approx(0.0, abs=1e-12)
    assert exploitability(game, game.uniform()) == pytest.approx(5 * 0.5)  # half lost, 5 steps
    assert fictitious_play(game, 30).exploitability[-1] < 0.1


def test_softmax_fixed_point_with_damping_settles_where_pure_iteration_cycles() -> None:
    game = beach_bar(horizon=4, n=8)
    pure = fixed_point(game, 200)  # greedy best responses oscillate
    warm = fixed_point(game, 200, temperature=0.5, damping=0.1)
    cool = fixed_point(game, 200, temperature=0.2, damping=0.05)
    assert warm.exploitability[-1] < 0.25 * warm.exploitability[0]
    assert warm.exploitability[-1] < min(pure.exploitability[-20:])
    # the regularised equilibrium approaches the Nash one as the temperature falls
    assert cool.exploitability[-1] < warm.exploitability[-1]


def test_bad_games_and_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        FiniteGame(2, np.array([0.5, 0.6]), 2, lambda t, L: L, lambda t, L: L)
    with pytest.raises(ValueError):
        beach_bar(n=4, bar=9)
    with pytest.raises(ValueError):
        fixed_point(beach_bar(), 3, damping=0.0)
    with pytest.raises(ValueError):
        fictitious_play(beach_bar(), 3, alpha=2.0)


def test_two_populations_population_two_matches_population_one() -> None:
    from market.mfg import matching_grid, mean_fields, multi_exploitability, multi_fictitious_play

    game = matching_grid(n=7, horizon=6)
    pis, history = multi_fictitious_play(game, 200)
    assert history[-1] < 0.01 * history[0]
    first, second = (L.sum(axis=-1) for L in mean_fields(game, pis))
    # population 1 stays where it started (what moves is fictitious play's fading average
    # with the uniform first policy: under 1% of the mass after 200 iterations)
    assert np.abs(first - first[0]).sum(axis=1).max() < 0.01
    start_gap = np.abs(second[0] - first[0]).sum()
    end_gap = np.abs(second[-1] - first[-1]).sum()
    assert end_gap < 0.05 * start_gap  # population 2 has spread itself over population 1
    assert max(multi_exploitability(game, pis)) < 0.1


def test_a_coalition_earns_more_than_a_nash_population_by_counting_its_congestion() -> None:
    from market.mfg import average_reward, crowded_beach, mean_fields, multi_fictitious_play

    game = crowded_beach(n=9, horizon=6, congestion=4.0)
    nash, nash_gap = multi_fictitious_play(game, 300)
    team, team_gap = multi_fictitious_play(game, 300, coalitions=True)
    assert nash_gap[-1] < 0.05 and team_gap[-1] < 0.05  # both converged to their own notion
    assert average_reward(game, team, 0) > average_reward(game, nash, 0) + 1e-3
    crowd = {
        name: mean_fields(game, pis)[0].sum(axis=-1)[-1].max()
        for name, pis in (("nash", nash), ("team", team))
    }
    assert crowd["team"] < crowd["nash"]  # the coalition crowds the bar less
