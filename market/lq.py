"""The typed linear-quadratic mean-field-type game (the tutorial's worked example), solved exactly.

Types tau with proportions lambda_tau. An agent of type tau controls

    dx = (a x + b u + kappa x_bar) dt + sigma dW

and pays the running cost 1/2 q x^2 + 1/2 r u^2 + s x x_bar and the terminal cost 1/2 q_T x(T)^2,
where x_bar = sum_tau lambda_tau m_tau is the population mean. With the value function
v = 1/2 P x^2 + xi x + zeta the HJB equation splits into

    -dP/dt  = q + 2 a P - (b^2 / r) P^2                      P(T)  = q_T     (Riccati)
    -dxi/dt = (a - (b^2 / r) P) xi + (s + kappa P) x_bar      xi(T) = 0
    -dzeta/dt = kappa x_bar xi - (b^2 / 2r) xi^2 + sigma^2 P / 2,   zeta(T) = 0

and the optimal control is linear: u* = -(b / r) (P x + xi). The type means then follow

    dm_tau/dt = (a - (b^2 / r) P) m_tau - (b^2 / r) xi + kappa x_bar.

P does not depend on the population; xi (backward) and m (forward) do, through x_bar. The solver
finds the mean trajectory by damped fixed-point iteration on x_bar, every type at once (numpy
arrays over types). The Riccati equation is solved in closed form (RK4 for degenerate types, and
as a cross-check); xi and m with the explicit scheme an Euler-Maruyama simulation of the agents
uses, so the simulated mean converges to the solved one as 1/sqrt(N) with no discretisation bias
(:func:`simulate`). Each sweep is a linear recurrence solved with running products and sums, so
an iteration costs a few numpy calls whatever the number of steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class LQType:
    """One type's share of the population, dynamics, costs and initial mean."""

    weight: float
    a: float = 0.0
    b: float = 1.0
    kappa: float = 0.0
    sigma: float = 0.1
    q: float = 1.0
    r: float = 1.0
    s: float = 0.0
    q_T: float = 0.0
    x0: float = 1.0

    def __post_init__(self) -> None:
        if self.weight < 0 or self.r <= 0 or self.sigma < 0:
            raise ValueError("weight >= 0, r > 0 and sigma >= 0 are required")


@dataclass(frozen=True, slots=True)
class LQSolution:
    """The equilibrium on the time grid ``t`` (``steps + 1`` points; arrays are time x type)."""

    t: np.ndarray
    P: np.ndarray
    xi: np.ndarray
    zeta: np.ndarray
    mean: np.ndarray
    """m_tau(t): each type's mean state."""
    mean_field: np.ndarray
    """x_bar(t) = sum_tau lambda_tau m_tau(t)."""
    iterations: int
    residual: float
    """max |x_bar_new - x_bar| at the last iteration."""
    b_over_r: np.ndarray

    def control(self, k: int, x: np.ndarray, types: np.ndarray) -> np.ndarray:
        """u* = -(b/r)(P x + xi) at step k, for states ``x`` of agents of types ``types``."""
        u: np.ndarray = -self.b_over_r[types] * (self.P[k, types] * x + self.xi[k, types])
        return u

    def value(self, x: float, type_index: int) -> float:
        """v(0, x) = 1/2 P x^2 + xi x + zeta for one type."""
        p, xi, zeta = self.P[0, type_index], self.xi[0, type_index], self.zeta[0, type_index]
        return float(0.5 * p * x * x + xi * x + zeta)


def _params(types: Sequence[LQType]) -> dict[str, np.ndarray]:
    if not types:
        raise ValueError("at least one type")
    fields = ("weight", "a", "b", "kappa", "sigma", "q", "r", "s", "q_T", "x0")
    out = {f: np.array([getattr(t, f) for t in types], dtype=np.float64) for f in fields}
    total = out["weight"].sum()
    if total <= 0:
        raise ValueError("the type weights must not all be zero")
    out["weight"] = out["weight"] / total
    return out


def riccati(types: Sequence[LQType], horizon: float, steps: int) -> np.ndarray:
    """P(t) for every type by RK4, backward from P(T) = q_T (time x type)."""
    p = _params(types)
    h = horizon / steps
    q, a, k2 = p["q"], p["a"], p["b"] ** 2 / p["r"]
    out = np.empty((steps + 1, len(types)))
    out[steps] = P = p["q_T"]

    def f(P: np.ndarray) -> np.ndarray:  # dP/d(-t)
        rate: np.ndarray = q + 2 * a * P - k2 * P * P
        return rate

    for k in range(steps - 1, -1, -1):
        k1 = f(P)
        k2_ = f(P + 0.5 * h * k1)
        k3 = f(P + 0.5 * h * k2_)
        k4 = f(P + h * k3)
        P = P + h / 6 * (k1 + 2 * k2_ + 2 * k3 + k4)
        out[k] = P
    return out


def solve(
    types: Sequence[LQType],
    *,
    horizon: float = 1.0,
    steps: int = 96,
    damping: float = 1.0,
    tol: float = 1e-12,
    max_iter: int = 1000,
) -> LQSolution:
    """The mean-field-type equilibrium by fixed point on the mean trajectory x_bar(t)."""
    if steps < 1 or horizon <= 0:
        raise ValueError("steps >= 1 and horizon > 0")
    if not 0 < damping <= 1:
        raise ValueError("damping must be in (0, 1]")
    p = _params(types)
    n = len(types)
    h = horizon / steps
    t = np.linspace(0.0, horizon, steps + 1)
    P = _riccati_exact(p, t, horizon)
    if P is None:  # a degenerate type (b = 0, or a = q = 0): integrate instead
        P = riccati(types, horizon, steps)
    k2 = p["b"] ** 2 / p["r"]
    A = p["a"] - k2 * P  # closed-loop drift of the mean, time x type
    C = p["s"] + p["kappa"] * P  # how x_bar drives xi
    w, kappa = p["weight"], p["kappa"]
    x_bar = np.full(steps + 1, float(w @ p["x0"]))
    xi = np.zeros((steps + 1, n))
    mean = np.empty((steps + 1, n))
    residual = np.inf
    iterations = 0
    # Both sweeps are first-order linear recurrences, y_next = g * y + f: solved in closed form
    # with running products and sums (numpy, no Python loop over time) when g never vanishes.
    g_back = 1 + h * A[1:]  # xi_k = g_back[k] xi_{k+1} + h C_{k+1} x_bar_{k+1}
    g_fwd = 1 + h * A[:-1]  # m_{k+1} = g_fwd[k] m_k + h (kappa x_bar_k - k2 xi_k)
    closed = bool(np.all(np.abs(g_back) > 1e-6) and np.all(np.abs(g_fwd) > 1e-6))
    for iterations in range(1, max_iter + 1):  # noqa: B007
        if closed:
            xi = _backward(g_back, h * C[1:] * x_bar[1:, None])
            mean = _forward(g_fwd, h * (kappa * x_bar[:-1, None] - k2 * xi[:-1]), p["x0"])
        else:
            xi[steps] = 0.0
            for k in range(steps - 1, -1, -1):
                xi[k] = g_back[k] * xi[k + 1] + h * C[k + 1] * x_bar[k + 1]
            mean[0] = p["x0"]
            for k in range(steps):
                mean[k + 1] = g_fwd[k] * mean[k] + h * (kappa * x_bar[k] - k2 * xi[k])
        new = mean @ w
        residual = float(np.abs(new - x_bar).max())
        x_bar = (1 - damping) * x_bar + damping * new
        if residual < tol:
            break
    zeta = np.zeros((steps + 1, n))
    rate = kappa * x_bar[1:, None] * xi[1:] - 0.5 * k2 * xi[1:] ** 2 + 0.5 * p["sigma"] ** 2 * P[1:]
    zeta[:-1] = h * np.cumsum(rate[::-1], axis=0)[::-1]  # zeta_k = zeta_{k+1} + h rate_{k+1}
    return LQSolution(
        t=t,
        P=P,
        xi=xi,
        zeta=zeta,
        mean=mean,
        mean_field=x_bar,
        iterations=iterations,
        residual=residual,
        b_over_r=p["b"] / p["r"],
    )


def _riccati_exact(p: dict[str, np.ndarray], t: np.ndarray, horizon: float) -> np.ndarray | None:
    """The Riccati solution in closed form for every type (time x type); None if degenerate.

    Three cases per type, tau = T - t: the general one (k = b^2/r > 0, d = sqrt(a^2 + k q) > 0)
    with the roots p+- = (a +- d)/k; d = 0 (a = q = 0): P = q_T / (1 + k q_T tau); k = 0 (no
    control): the linear equation, P = q_T + q tau (a = 0) or (q_T + q/2a) e^{2 a tau} - q/2a.
    """
    k = p["b"] ** 2 / p["r"]
    a, q, qt = p["a"], p["q"], p["q_T"]
    tau = (horizon - t)[:, None]
    d = np.sqrt(a**2 + k * q)
    general = (k > 1e-12) & (d > 1e-12)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        p_plus, p_minus = (a + d) / k, (a - d) / k
        e = np.exp(-2 * d * tau)
        top = p_plus * (qt - p_minus) - p_minus * (qt - p_plus) * e
        bottom = (qt - p_minus) - (qt - p_plus) * e
        out = top / bottom
        out = np.where((k > 1e-12) & ~general, qt / (1 + k * qt * tau), out)
        linear = np.where(
            np.abs(a) > 1e-12, (qt + q / (2 * a)) * np.exp(2 * a * tau) - q / (2 * a), qt + q * tau
        )
        out = np.where(k <= 1e-12, linear, out)
    if not np.all(np.isfinite(out)):
        return None
    result: np.ndarray = out
    return result


def _backward(g: np.ndarray, f: np.ndarray) -> np.ndarray:
    """y_K = 0, y_k = g_k y_{k+1} + f_k (k < K) for every column, by suffix products."""
    steps, n = g.shape
    # phi_k = prod_{i >= k} g_i; y_k = phi_k * sum_{j >= k} f_j / phi_j
    phi = np.ones((steps + 1, n))
    phi[:-1] = np.cumprod(g[::-1], axis=0)[::-1]
    y = np.zeros((steps + 1, n))
    y[:-1] = np.cumsum((f / phi[:-1])[::-1], axis=0)[::-1] * phi[:-1]
    return y


def _forward(g: np.ndarray, f: np.ndarray, y0: np.ndarray) -> np.ndarray:
    """y_0 given, y_{k+1} = g_k y_k + f_k for every column, by prefix products."""
    steps, n = g.shape
    # psi_k = prod_{i < k} g_i; y_k = psi_k (y_0 + sum_{j < k} f_j / psi_{j+1})
    psi = np.ones((steps + 1, n))
    psi[1:] = np.cumprod(g, axis=0)
    y = np.empty((steps + 1, n))
    y[0] = y0
    y[1:] = psi[1:] * (y0 + np.cumsum(f / psi[1:], axis=0))
    return y


def simulate(
    types: Sequence[LQType],
    solution: LQSolution,
    agents_per_type: int,
    rng: np.random.Generator,
    *,
    x0_spread: float = 0.0,
) -> np.ndarray:
    """Euler-Maruyama for ``agents_per_type`` agents of every type under the equilibrium policy,
    coupled through their own empirical mean; returns the empirical x_bar(t)."""
    p = _params(types)
    n = len(types)
    steps = len(solution.t) - 1
    h = solution.t[1] - solution.t[0]
    kinds = np.repeat(np.arange(n), agents_per_type)
    x = p["x0"][kinds] + x0_spread * rng.standard_normal(kinds.size)
    weights = p["weight"][kinds] / agents_per_type  # so that sum(weights * x) = sum lambda m
    a, b, kappa, sigma = p["a"][kinds], p["b"][kinds], p["kappa"][kinds], p["sigma"][kinds]
    out = np.empty(steps + 1)
    for k in range(steps):
        x_bar = float(weights @ x)
        out[k] = x_bar
        u = solution.control(k, x, kinds)
        noise = rng.standard_normal(x.size)
        x = x + h * (a * x + b * u + kappa * x_bar) + sigma * np.sqrt(h) * noise
    out[steps] = float(weights @ x)
    return out


def riccati_closed_form(t: np.ndarray, horizon: float, t_type: LQType) -> np.ndarray:
    """The scalar Riccati solution in closed form, for one type (a check for :func:`riccati`).

    With k = b^2/r and roots p+- = (a +- d)/k, d = sqrt(a^2 + k q), of k P^2 - 2 a P - q = 0,
    P(t) = p+ + (p+ - p-) / (c e^{2 d (T - t)} - 1)... written here in the stable form
    P = (p+ (q_T - p-) - p- (q_T - p+) e^{-2 d (T - t)}) / ((q_T - p-) - (q_T - p+) e^{-2 d (T - t)}).
    """
    k = t_type.b**2 / t_type.r
    d = np.sqrt(t_type.a**2 + k * t_type.q)
    p_plus, p_minus = (t_type.a + d) / k, (t_type.a - d) / k
    e = np.exp(-2 * d * (horizon - t))
    top = p_plus * (t_type.q_T - p_minus) - p_minus * (t_type.q_T - p_plus) * e
    bottom = (t_type.q_T - p_minus) - (t_type.q_T - p_plus) * e
    out: np.ndarray = top / bottom
    return out
