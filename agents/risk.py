"""Risk: CVaR by the Rockafellar-Uryasev formula, the mean-CVaR objective, and the reservation
prices it implies for a trader whose need is uncertain.

Costs are losses (higher is worse). For a confidence ``alpha`` (the tail's probability, e.g. 0.05)

    CVaR_alpha(c) = min_z  z + E[(c - z)+] / alpha                      (Rockafellar-Uryasev)

whose minimiser is the value at risk, the (1 - alpha) quantile of c. From samples, the objective
is convex and piecewise linear in z with its kinks at the samples, so the minimum is exact at the
empirical quantile (:func:`cvar` evaluates it there; a test checks no other z does better). An
agent with risk aversion ``gamma`` in [0, 1] scores a random cost by

    rho(c) = (1 - gamma) E[c] + gamma CVaR_alpha(c).

rho is translation equivariant (rho(c + k) = rho(c) + k), which makes the reservation price of a
forward trade exact: a buyer of ``q`` units at price p pays p q for certain, and its grid bill on
the rest, g(N) = import (N - q)+ - export (q - N)+, is random through its need N. It gains from
the trade as long as p q + rho(g) <= rho(grid bill without the trade), so its reservation is
p* = (rho(bill) - rho(g)) / q; a seller's likewise. With a certain need this is the tariff: the
import price for a buyer, the export price for a seller; uncertainty moves it, and risk aversion
moves it further (:func:`reservation_price`).
"""

from __future__ import annotations

import numpy as np

from negotiator.messages import Side


def _check(alpha: float, gamma: float = 0.0) -> None:
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    if not 0 <= gamma <= 1:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")


def value_at_risk(costs: np.ndarray, alpha: float) -> np.ndarray:
    """The (1 - alpha) quantile of ``costs`` along the last axis (the RU minimiser)."""
    _check(alpha)
    c = np.asarray(costs, np.float64)
    return np.quantile(c, 1.0 - alpha, axis=-1, method="inverted_cdf")


def ru_objective(costs: np.ndarray, z: np.ndarray | float, alpha: float) -> np.ndarray:
    """Rockafellar-Uryasev: z + E[(c - z)+] / alpha, along the last axis."""
    _check(alpha)
    c = np.asarray(costs, np.float64)
    zz = np.asarray(z, np.float64)
    return zz + np.clip(c - zz[..., None], 0.0, None).mean(axis=-1) / alpha  # type: ignore[no-any-return]


def cvar(costs: np.ndarray, alpha: float) -> np.ndarray:
    """CVaR_alpha of ``costs`` (samples along the last axis): the RU objective at its minimiser."""
    return ru_objective(costs, value_at_risk(costs, alpha), alpha)


def risk(costs: np.ndarray, gamma: float, alpha: float) -> np.ndarray:
    """The mean-CVaR objective (1 - gamma) E[c] + gamma CVaR_alpha(c), along the last axis."""
    _check(alpha, gamma)
    c = np.asarray(costs, np.float64)
    mean = c.mean(axis=-1)
    if gamma == 0:
        return mean  # type: ignore[no-any-return]
    return (1 - gamma) * mean + gamma * cvar(c, alpha)  # type: ignore[no-any-return]


def grid_bill(need: np.ndarray, import_price: float, export_price: float) -> np.ndarray:
    """What a net need (base units; negative: surplus) costs at the tariff (msat per 1,000)."""
    n = np.asarray(need, np.float64)
    return (np.clip(n, 0, None) * import_price - np.clip(-n, 0, None) * export_price) / 1000


def reservation_price(
    side: Side,
    need: np.ndarray,
    quantity: float,
    import_price: float,
    export_price: float,
    *,
    gamma: float,
    alpha: float = 0.05,
) -> np.ndarray:
    """The worst price (msat per 1,000 units) at which trading ``quantity`` now still pays, for
    an agent whose need in the slot is the samples ``need`` (last axis; positive: buying).

    A buyer pays p * quantity for certain and settles need - quantity with the grid; a seller
    receives it and settles need + quantity. Exact by translation equivariance (module doc)."""
    if quantity <= 0:
        raise ValueError("quantity must be positive")
    n = np.asarray(need, np.float64)
    without = risk(grid_bill(n, import_price, export_price), gamma, alpha)
    if side is Side.BUY:
        rest = risk(grid_bill(n - quantity, import_price, export_price), gamma, alpha)
        return (without - rest) / quantity * 1000  # type: ignore[no-any-return]
    rest = risk(grid_bill(n + quantity, import_price, export_price), gamma, alpha)
    return (rest - without) / quantity * 1000  # type: ignore[no-any-return]
