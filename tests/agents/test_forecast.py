"""Forecasts: closed-form scores against Monte Carlo, the history's layout, a short training run."""

from __future__ import annotations

import numpy as np
import pytest

from agents.forecast import (
    FEATURES,
    Forecaster,
    Prediction,
    crps_gaussian,
    crps_student,
    history,
    pinball,
    scores,
    split,
)
from market import Scenario


def _crps_monte_carlo(draws: np.ndarray, y: float) -> float:
    """E|X - y| - E|X - X'| / 2 from draws (the second term from a shuffled copy)."""
    other = np.random.default_rng(0).permutation(draws)
    return float(np.abs(draws - y).mean() - 0.5 * np.abs(draws - other).mean())


@pytest.mark.parametrize("y", [-2.0, 0.3, 4.0])
def test_gaussian_crps_matches_monte_carlo(y: float) -> None:
    draws = np.random.default_rng(1).normal(0.5, 1.5, 1_000_000)
    exact = float(crps_gaussian(np.array([y]), np.array([0.5]), np.array([1.5]))[0])
    assert exact == pytest.approx(_crps_monte_carlo(draws, y), abs=0.01)


@pytest.mark.parametrize(("y", "nu"), [(-2.0, 3.0), (0.3, 2.5), (4.0, 8.0)])
def test_student_crps_matches_monte_carlo_and_tends_to_the_gaussian(y: float, nu: float) -> None:
    draws = 0.5 + 1.5 * np.random.default_rng(2).standard_t(nu, 1_000_000)
    exact = float(crps_student(np.array([y]), np.array([0.5]), np.array([1.5]), np.array([nu]))[0])
    assert exact == pytest.approx(_crps_monte_carlo(draws, y), abs=0.02)
    far = crps_student(np.array([y]), np.array([0.5]), np.array([1.5]), np.array([1e7]))
    assert float(far[0]) == pytest.approx(
        float(crps_gaussian(np.array([y]), np.array([0.5]), np.array([1.5]))[0]), rel=1e-4
    )
    with pytest.raises(ValueError, match="df > 1"):
        crps_student(np.zeros(1), np.zeros(1), np.ones(1), np.ones(1))


def test_pinball_and_coverage_on_known_inputs() -> None:
    y = np.array([0.0, 1.0, 2.0, 3.0])
    assert pinball(y, np.full(4, 1.0), 0.9) == pytest.approx((0.1 * 1 + 0 + 0.9 * 1 + 0.9 * 2) / 4)
    standard = Prediction("gaussian", np.zeros(100_000), np.ones(100_000))
    draws = np.random.default_rng(3).standard_normal(100_000)
    assert scores(standard, draws)["coverage90"] == pytest.approx(0.9, abs=0.005)


def test_samples_follow_the_predicted_distribution() -> None:
    prediction = Prediction(
        "student", np.array([1.0, -2.0]), np.array([0.5, 2.0]), np.array([4.0, 30.0])
    )
    draws = prediction.sample(np.random.default_rng(6), 200_000)
    assert draws.shape == (2, 200_000)
    for q in (0.05, 0.5, 0.95):
        np.testing.assert_allclose(np.quantile(draws, q, axis=1), prediction.quantile(q), atol=0.03)


def test_the_history_pairs_what_is_known_at_t_with_the_net_at_t_plus_h() -> None:
    scenario = Scenario.load("small").model_copy(update={"days": 3, "agents": 10})
    community = scenario.realise(np.random.default_rng(4))
    samples = history(community, horizon=4)
    slots = 3 * 96
    assert samples.features.shape == (10 * (slots - 4), len(FEATURES))
    net = (community.load_wh - community.pv_wh) / 1000
    member, t = 7, 100  # row of member 7, slot t: features at t, target at t + 4
    row = member * (slots - 4) + t
    assert samples.target[row] == pytest.approx(net[member, t + 4], rel=1e-6)
    assert samples.features[row, FEATURES.index("net_now")] == pytest.approx(
        net[member, t], rel=1e-6
    )
    assert samples.day[row] == (t + 4) // 96
    train, test = split(samples, 1)
    assert set(test.day.tolist()) == {2} and 2 not in set(train.day.tolist())
    with pytest.raises(ValueError):
        split(samples, 3)


def test_a_short_training_run_learns_and_is_reproducible() -> None:
    scenario = Scenario.load("small").model_copy(update={"days": 8, "agents": 40})
    train, test = split(history(scenario.realise(np.random.default_rng(5))), 2)
    one = Forecaster("student", hidden=32, seed=3).fit(train, epochs=4, batch=2048)
    again = Forecaster("student", hidden=32, seed=3).fit(train, epochs=4, batch=2048)
    assert one.losses == again.losses  # same seed, same training
    assert one.losses[-1] < one.losses[0]
    prediction = one.predict(test.features)
    assert prediction.df is not None and (prediction.df > 2).all() and (prediction.scale > 0).all()
    result = scores(prediction, test.target.astype(np.float64))
    assert 0.75 < result["coverage90"] < 0.99
    naive = Prediction("gaussian", np.zeros(len(test)), np.full(len(test), test.target.std()))
    assert result["crps"] < 0.8 * scores(naive, test.target.astype(np.float64))["crps"]
    with pytest.raises(ValueError, match="family"):
        Forecaster("cauchy")  # type: ignore[arg-type]
