"""CVaR against its closed forms, the RU minimum, and the reservation prices risk implies."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from agents.risk import cvar, reservation_price, risk, ru_objective, value_at_risk
from negotiator.messages import Side

N = 400_000


def _tolerance(samples: np.ndarray, alpha: float) -> float:
    """Four standard errors of the RU estimator: sd of (c - VaR)+ / alpha over sqrt(n)."""
    excess = np.clip(samples - value_at_risk(samples, alpha), 0, None)
    return float(4 * excess.std() / alpha / np.sqrt(samples.size))


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.25])
def test_cvar_of_normal_losses_matches_the_closed_form(alpha: float) -> None:
    mu, sigma = 3.0, 2.0
    samples = np.random.default_rng(1).normal(mu, sigma, N)
    exact = mu + sigma * stats.norm.pdf(stats.norm.ppf(1 - alpha)) / alpha
    assert abs(float(cvar(samples, alpha)) - exact) < _tolerance(samples, alpha)


@pytest.mark.parametrize(("nu", "alpha"), [(3.0, 0.05), (5.0, 0.01), (10.0, 0.1)])
def test_cvar_of_student_t_losses_matches_the_closed_form(nu: float, alpha: float) -> None:
    mu, sigma = -1.0, 0.5
    samples = mu + sigma * np.random.default_rng(2).standard_t(nu, N)
    q = stats.t.ppf(1 - alpha, nu)
    exact = mu + sigma * (nu + q**2) / (nu - 1) * stats.t.pdf(q, nu) / alpha
    assert abs(float(cvar(samples, alpha)) - exact) < _tolerance(samples, alpha)


def test_the_value_at_risk_minimises_the_rockafellar_uryasev_objective() -> None:
    samples = np.random.default_rng(3).lognormal(0, 1, 2_001)
    best = float(cvar(samples, 0.1))
    grid = np.linspace(samples.min(), samples.max(), 5_000)
    assert (
        ru_objective(np.broadcast_to(samples, (grid.size, samples.size)), grid, 0.1) >= best - 1e-9
    ).all()
    # CVaR at alpha = 1 is the mean; the mean-CVaR objective sits between mean and CVaR
    assert float(cvar(samples, 1.0)) == pytest.approx(samples.mean())
    mixed = float(risk(samples, 0.5, 0.1))
    assert samples.mean() < mixed < best


def test_batched_along_the_last_axis() -> None:
    rng = np.random.default_rng(4)
    costs = rng.normal(0, 1, (3, 10_000)) * np.array([[1.0], [2.0], [3.0]])
    each = np.array([float(cvar(row, 0.05)) for row in costs])
    np.testing.assert_allclose(cvar(costs, 0.05), each)


def test_a_certain_need_prices_at_the_tariff() -> None:
    imp, exp = 280_000, 80_000
    need = np.full(100, 3000.0)
    assert float(reservation_price(Side.BUY, need, 1000, imp, exp, gamma=0.7)) == pytest.approx(imp)
    surplus = np.full(100, -3000.0)
    assert float(reservation_price(Side.SELL, surplus, 1000, imp, exp, gamma=0.7)) == pytest.approx(
        exp
    )


def test_uncertainty_lowers_a_buyers_reservation_and_risk_aversion_raises_it_back() -> None:
    imp, exp = 280_000, 80_000
    need = np.random.default_rng(5).normal(1000, 400, 50_000)  # may turn out below the trade
    neutral = float(reservation_price(Side.BUY, need, 1000, imp, exp, gamma=0.0))
    averse = float(reservation_price(Side.BUY, need, 1000, imp, exp, gamma=0.8))
    assert exp < neutral < averse <= imp  # buying ahead hedges the expensive high-need tail
    # a seller unsure of its surplus asks more when averse: short surplus is bought at import
    surplus = -need
    neutral_s = float(reservation_price(Side.SELL, surplus, 1000, imp, exp, gamma=0.0))
    averse_s = float(reservation_price(Side.SELL, surplus, 1000, imp, exp, gamma=0.8))
    assert exp <= neutral_s < averse_s < imp


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        cvar(np.ones(3), 0.0)
    with pytest.raises(ValueError, match="gamma"):
        risk(np.ones(3), 1.5, 0.1)
    with pytest.raises(ValueError, match="quantity"):
        reservation_price(Side.BUY, np.ones(3), 0, 1, 0, gamma=0.0)
