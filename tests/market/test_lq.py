"""The typed LQ mean-field-type game: closed forms, the fixed point, and N agents converging."""

from __future__ import annotations

import numpy as np
import pytest

from market.lq import (
    LQType,
    _backward,
    _forward,
    riccati,
    riccati_closed_form,
    simulate,
    solve,
)

THREE = [
    LQType(0.5, a=0.2, b=1.0, kappa=0.3, sigma=0.5, q=1.0, r=1.0, s=0.2, q_T=0.5, x0=1.0),
    LQType(0.3, a=-0.3, b=0.8, kappa=0.1, sigma=0.8, q=2.0, r=0.5, s=-0.1, q_T=0.0, x0=-0.5),
    LQType(0.2, a=0.0, b=1.2, kappa=-0.2, sigma=0.3, q=0.5, r=2.0, s=0.0, q_T=1.0, x0=2.0),
]


def test_the_riccati_solution_matches_the_scalar_closed_form() -> None:
    one = LQType(1.0, a=0.3, b=1.0, q=2.0, r=0.5, q_T=1.5)
    t = np.linspace(0.0, 2.0, 193)
    exact = riccati_closed_form(t, 2.0, one)
    assert np.abs(riccati([one], 2.0, 192)[:, 0] - exact).max() < 1e-7  # RK4
    assert np.abs(solve([one], horizon=2.0, steps=192).P[:, 0] - exact).max() < 1e-12
    assert exact[-1] == pytest.approx(1.5)


def test_one_uncoupled_type_follows_its_closed_loop_mean() -> None:
    # kappa = s = 0: xi = 0 and m(t) = x0 exp(int_0^t (a - (b^2/r) P))
    one = LQType(1.0, a=0.4, b=1.0, q=1.0, r=1.0, q_T=0.0, x0=2.0)
    steps = 20_000
    sol = solve([one], steps=steps)
    assert np.abs(sol.xi).max() == 0.0
    drift = one.a - one.b**2 / one.r * sol.P[:, 0]
    integral = np.concatenate([[0.0], np.cumsum((drift[1:] + drift[:-1]) / 2) / steps])
    assert sol.mean[:, 0] == pytest.approx(2.0 * np.exp(integral), rel=1e-4)


def test_the_fixed_point_is_consistent_and_the_value_is_finite() -> None:
    sol = solve(THREE)
    weights = np.array([t.weight for t in THREE])
    assert np.abs(sol.mean @ weights - sol.mean_field).max() < 1e-10
    assert sol.residual < 1e-12 and sol.iterations < 50
    for i, kind in enumerate(THREE):
        assert sol.P[-1, i] == pytest.approx(kind.q_T) and sol.xi[-1, i] == 0.0
        assert np.isfinite(sol.value(kind.x0, i))
    damped = solve(THREE, damping=0.5)  # slower, same answer
    assert damped.iterations > sol.iterations
    assert np.abs(damped.mean_field - sol.mean_field).max() < 1e-10


def test_the_recurrences_in_closed_form_equal_the_loops() -> None:
    rng = np.random.default_rng(1)
    g, f, y0 = rng.uniform(0.7, 1.3, (50, 4)), rng.normal(size=(50, 4)), rng.normal(size=4)
    back = np.zeros((51, 4))
    for k in range(49, -1, -1):
        back[k] = g[k] * back[k + 1] + f[k]
    forward = np.empty((51, 4))
    forward[0] = y0
    for k in range(50):
        forward[k + 1] = g[k] * forward[k] + f[k]
    assert np.abs(_backward(g, f) - back).max() < 1e-12
    assert np.abs(_forward(g, f, y0) - forward).max() < 1e-12


def test_n_agents_converge_to_the_mean_field_like_one_over_root_n() -> None:
    sol = solve(THREE)
    sizes = [100, 1_000, 10_000, 100_000]
    errors = []
    for n in sizes:
        seeds = 8 if n < 100_000 else 3
        runs = [simulate(THREE, sol, n, np.random.default_rng(7 * n + s)) for s in range(seeds)]
        errors.append(np.mean([np.sqrt(np.mean((r - sol.mean_field) ** 2)) for r in runs]))
    slope = np.polyfit(np.log(sizes), np.log(errors), 1)[0]
    assert -0.6 <= slope <= -0.4, (slope, errors)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        LQType(1.0, r=0.0)
    with pytest.raises(ValueError):
        solve([])
    with pytest.raises(ValueError):
        solve(THREE, damping=0.0)
    with pytest.raises(ValueError):
        solve([LQType(0.0)])


@pytest.mark.parametrize(
    "kind",
    [
        LQType(1.0, a=0.0, b=1.0, q=0.0, q_T=2.0),  # d = 0: P = q_T / (1 + k q_T (T - t))
        LQType(1.0, a=0.3, b=0.0, q=1.0, q_T=0.5),  # no control: a linear equation
        LQType(1.0, a=0.0, b=0.0, q=2.0, q_T=1.0),  # no control, no drift: P = q_T + q (T - t)
    ],
)
def test_the_degenerate_types_have_closed_forms_too(kind: LQType) -> None:
    sol = solve([kind], steps=400)
    assert np.abs(sol.P[:, 0] - riccati([kind], 1.0, 400)[:, 0]).max() < 1e-9
    if kind.a == 0 and kind.q == 0:
        assert sol.P[:, 0] == pytest.approx(2 / (1 + 2 * (1 - sol.t)), rel=1e-12)
