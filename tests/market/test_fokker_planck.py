"""Fokker-Planck by finite volumes: mass kept, positivity, the OU stationary law; the 1-D MFG."""

from __future__ import annotations

import numpy as np
import pytest

from market.fokker_planck import Grid, evolve, generator, solve_mfg


def bump(grid: Grid, at: float, width: float) -> np.ndarray:
    m = np.exp(-((grid.centres - at) ** 2) / width)
    return m / m.sum()


def test_mass_is_kept_to_1e12_and_stays_positive_over_a_long_horizon() -> None:
    grid = Grid(-4.0, 4.0, 200)
    masses = evolve(
        grid, bump(grid, 2.0, 0.1), lambda t, x: 3 * np.sin(3 * x + t), 1.0, 0.05, 20_000
    )
    assert np.abs(masses.sum(axis=1) - 1.0).max() < 1e-12
    assert masses.min() >= 0.0


def test_the_generator_moves_mass_without_creating_it() -> None:
    grid = Grid(0.0, 1.0, 6)
    A = generator(grid, np.array([1.0, -2.0, 0.0, 3.0, -1.0]), 0.3)
    dense = np.diag(A[1]) + np.diag(A[0, 1:], 1) + np.diag(A[2, :-1], -1)
    assert np.allclose(dense.sum(axis=0), 0.0)  # every column sums to zero
    off = dense - np.diag(np.diag(dense))
    assert (off >= 0).all()  # rates between neighbours are non-negative


@pytest.mark.parametrize("cells", [200, 400])
def test_an_ornstein_uhlenbeck_drift_reaches_its_gaussian_law(cells: int) -> None:
    # b = -k x, sigma: the stationary law is N(0, sigma^2 / (2k)); upwinding adds |b| dx / 2
    grid = Grid(-4.0, 4.0, cells)
    k, sigma = 1.0, 0.8
    last = evolve(grid, bump(grid, 2.0, 0.1), lambda t, x: -k * x, sigma, 0.01, 2000)[-1]
    x = grid.centres
    mean = last @ x
    variance = last @ (x - mean) ** 2
    assert abs(mean) < 1e-6
    assert variance == pytest.approx(sigma**2 / (2 * k), rel=12 / cells)  # first order in dx


def test_the_mean_field_game_converges_conserves_mass_and_spreads_with_crowd_aversion() -> None:
    grid = Grid(-2.0, 2.0, 100)
    start = bump(grid, 1.0, 0.05)
    runs = {
        crowd: solve_mfg(
            grid,
            start,
            potential=lambda x: x**2,
            crowd=crowd,
            sigma=0.3,
            horizon=1.0,
            steps=50,
            damping=0.2,  # 0.5 oscillates under strong crowd aversion
        )
        for crowd in (0.0, 2.0)
    }
    x = grid.centres
    for run in runs.values():
        assert run.residual < 1e-8
        assert np.abs(run.masses.sum(axis=1) - 1.0).max() < 1e-12 and run.masses.min() >= 0
        assert run.masses[-1] @ x < 0.5 * (run.masses[0] @ x)  # drawn to the potential's bottom
    spread = {c: r.masses[-1] @ (x - r.masses[-1] @ x) ** 2 for c, r in runs.items()}
    assert spread[2.0] > spread[0.0]  # crowd aversion spreads the population


def test_bad_grids_are_refused() -> None:
    with pytest.raises(ValueError):
        Grid(1.0, 0.0, 10)
    with pytest.raises(ValueError):
        generator(Grid(0.0, 1.0, 5), np.zeros(3), 0.1)
