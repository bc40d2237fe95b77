"""Finite-state, finite-action mean-field games: best response, fixed point, fictitious play, OMD.

A game has a horizon T (decisions at t = 0..T), an initial state distribution mu0, and, given the
population's state-action distribution L_t at time t, a reward r(t, L_t)[s, a] and transition
probabilities P(t, L_t)[s, a, s']. A policy pi[t, s, a] is a distribution over actions per state.

- :func:`mean_field`: the state-action distribution the population follows under pi,
  L_0 = mu0 pi_0 and L_{t+1}[s', a'] = pi_{t+1}[s', a'] sum_{s,a} L_t[s, a] P_t[s, a, s'].
- :func:`q_values`: backward induction, Q_T = r_T and Q_t = r_t + P_t V_{t+1} with V the max over
  actions (best response) or the policy's average (evaluation).
- :func:`exploitability`: what a single agent gains by deviating from pi against L(pi):
  sum_s mu0(s) (max_a Q*_0(s, a) - sum_a pi_0(s, a) Q^pi_0(s, a)); zero at a Nash equilibrium.
- Solvers: :func:`fixed_point` (greedy or softmax best response, with damping),
  :func:`fictitious_play` (damped averaging of policies weighted by their state distributions)
  and :func:`online_mirror_descent` (softmax of accumulated Q values).

Conventions (undiscounted finite horizon, uniform tie-breaking of the greedy policy, the damped
fictitious-play update, exploitability from t = 0) follow MFGLib's, so results can be compared
iteration for iteration (``benchmarks/mfg_solvers.py``). Everything is numpy over whole arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

Reward = Callable[[int, np.ndarray], np.ndarray]
"""(t, L_t[s, a]) -> r[s, a]."""
Transition = Callable[[int, np.ndarray], np.ndarray]
"""(t, L_t[s, a]) -> P[s, a, s'] (rows sum to one)."""


@dataclass(frozen=True)
class FiniteGame:
    """A finite mean-field game (see the module docstring)."""

    horizon: int
    mu0: np.ndarray
    n_actions: int
    reward: Reward
    transition: Transition
    name: str = "game"

    def __post_init__(self) -> None:
        if self.horizon < 0 or self.n_actions < 1:
            raise ValueError("horizon >= 0 and at least one action")
        if self.mu0.ndim != 1 or abs(float(self.mu0.sum()) - 1.0) > 1e-9 or (self.mu0 < 0).any():
            raise ValueError("mu0 must be a probability vector")

    @property
    def n_states(self) -> int:
        return int(self.mu0.size)

    def uniform(self) -> np.ndarray:
        """The uniform policy (pi_0 of every solver)."""
        return np.full((self.horizon + 1, self.n_states, self.n_actions), 1.0 / self.n_actions)


def mean_field(game: FiniteGame, pi: np.ndarray) -> np.ndarray:
    """L[t, s, a]: the population's state-action distribution under ``pi``."""
    L = np.empty_like(pi)
    L[0] = game.mu0[:, None] * pi[0]
    flat = game.n_states * game.n_actions
    for t in range(game.horizon):
        mu_next = L[t].reshape(flat) @ game.transition(t, L[t]).reshape(flat, game.n_states)
        L[t + 1] = mu_next[:, None] * pi[t + 1]
    return L


def q_values(game: FiniteGame, L: np.ndarray, pi: np.ndarray | None = None) -> np.ndarray:
    """Q[t, s, a] against the mean field ``L``: optimal (``pi`` None) or of the policy ``pi``."""
    T = game.horizon
    Q = np.empty_like(L)
    Q[T] = game.reward(T, L[T])
    for t in range(T - 1, -1, -1):
        nxt = Q[t + 1].max(axis=1) if pi is None else (pi[t + 1] * Q[t + 1]).sum(axis=1)
        Q[t] = game.reward(t, L[t]) + game.transition(t, L[t]) @ nxt
    return Q


def _both_q(game: FiniteGame, L: np.ndarray, pi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Optimal and policy Q values at t = 0 in one backward pass (rewards computed once)."""
    T = game.horizon
    r = game.reward(T, L[T])
    best, own = r, r
    for t in range(T - 1, -1, -1):
        r, P = game.reward(t, L[t]), game.transition(t, L[t])
        best_next = best.max(axis=1)
        own_next = (pi[t + 1] * own).sum(axis=1)
        best = r + P @ best_next
        own = r + P @ own_next
    return best, own


def greedy(Q: np.ndarray) -> np.ndarray:
    """The best response: uniform over the actions that attain the maximum (exactly)."""
    best = (Q.max(axis=-1, keepdims=True) == Q).astype(np.float64)
    out: np.ndarray = best / best.sum(axis=-1, keepdims=True)
    return out


def softmax(Q: np.ndarray, temperature: float) -> np.ndarray:
    """Boltzmann policy exp(Q / temperature), normalised per state."""
    z = Q / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


def _feasible(pi: np.ndarray) -> np.ndarray:
    """Clip negatives and renormalise; a state with no mass gets the uniform policy."""
    pi = np.maximum(pi, 0.0)
    total = pi.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: np.ndarray = np.where(total > 0, pi / total, 1.0 / pi.shape[-1])
    return out


def exploitability(game: FiniteGame, pi: np.ndarray) -> float:
    """A deviating agent's gain against the mean field ``pi`` induces (0 at equilibrium)."""
    pi = _feasible(pi)
    best, own = _both_q(game, mean_field(game, pi), pi)
    return float(game.mu0 @ best.max(axis=1) - game.mu0 @ (pi[0] * own).sum(axis=1))


@dataclass
class Result:
    """A solver's last policy, its mean field, and the exploitability after every iteration."""

    policy: np.ndarray
    mean_field: np.ndarray
    exploitability: list[float] = field(default_factory=list)


def fixed_point(
    game: FiniteGame,
    iterations: int,
    *,
    temperature: float | None = None,
    damping: float = 1.0,
) -> Result:
    """pi <- (1 - damping) pi + damping BR(L(pi)), BR greedy or softmax(Q / temperature)."""
    if not 0 < damping <= 1:
        raise ValueError("damping must be in (0, 1]")
    pi = game.uniform()
    history = []
    for _ in range(iterations):
        Q = q_values(game, mean_field(game, pi))
        br = greedy(Q) if temperature is None else softmax(Q, temperature)
        pi = (1 - damping) * pi + damping * br
        history.append(exploitability(game, pi))
    return Result(pi, mean_field(game, pi), history)


def fictitious_play(game: FiniteGame, iterations: int, *, alpha: float = 0.0) -> Result:
    """Damped fictitious play: average the best responses, weighted by their state
    distributions, with step 1/(n + 2) (``alpha`` 0) or a fixed ``alpha``."""
    if not 0 <= alpha <= 1:
        raise ValueError("alpha must be in [0, 1]")
    pi = game.uniform()
    history = []
    for i in range(iterations):
        L = mean_field(game, pi)
        br = greedy(q_values(game, L))
        L_br = mean_field(game, br)
        mu = L.sum(axis=-1, keepdims=True)
        mu_br = L_br.sum(axis=-1, keepdims=True)
        step = alpha if alpha else 1.0 / (i + 2)
        numer = (1 - step) * mu * pi + step * mu_br * br
        denom = (1 - step) * mu + step * mu_br
        with np.errstate(invalid="ignore", divide="ignore"):
            pi = np.where(denom > 0, numer / denom, 1.0 / game.n_actions)
        history.append(exploitability(game, pi))
    return Result(pi, mean_field(game, pi), history)


def online_mirror_descent(game: FiniteGame, iterations: int, *, alpha: float = 1.0) -> Result:
    """y <- y + alpha Q^pi(L(pi)); pi = softmax(y)."""
    pi = game.uniform()
    y = np.zeros_like(pi)
    history = []
    for _ in range(iterations):
        L = mean_field(game, pi)
        y = y + alpha * q_values(game, L, pi)
        pi = softmax(y, 1.0)
        history.append(exploitability(game, pi))
    return Result(pi, mean_field(game, pi), history)


def beach_bar(
    horizon: int = 2, n: int = 4, bar: int = 2, p_still: float = 0.5, log_eps: float = 1e-20
) -> FiniteGame:
    """The beach bar game (Perrin et al. 2020, as MFGLib defines it): n positions, moving left,
    staying or right with noise; reward -distance to the bar (on the torus), -1/n for moving,
    and -log of the crowd where one stands."""
    if not 0 <= bar < n or not 0 <= p_still <= 1:
        raise ValueError("bar in [0, n) and p_still in [0, 1]")
    P = np.zeros((n, 3, n))
    noise = [(-1, (1 - p_still) / 2), (0, p_still), (1, (1 - p_still) / 2)]
    for s in range(n):
        for a in range(3):
            for eps, pr in noise:
                P[s, a, min(max(s + a - 1 + eps, 0), n - 1)] += pr
    positions = np.arange(n)
    distance = np.minimum(np.roll(positions, bar), np.roll(positions[::-1], bar + 1))
    base = -distance[:, None] - np.array([1.0, 0.0, 1.0])[None, :] / n

    def reward(t: int, L_t: np.ndarray) -> np.ndarray:
        crowd = L_t.sum(axis=1)
        out: np.ndarray = base - np.log(crowd + log_eps)[:, None]
        return out

    return FiniteGame(
        horizon, np.full(n, 1.0 / n), 3, reward, lambda t, L_t: P, name=f"beach_bar(n={n})"
    )


# -- several populations ---------------------------------------------------------------------

PopReward = Callable[[int, list[np.ndarray]], np.ndarray]
"""(t, [L_t of every population]) -> r[s, a] of one population."""
PopTransition = Callable[[int, list[np.ndarray]], np.ndarray]
"""(t, [L_t of every population]) -> P[s, a, s'] of one population."""


@dataclass(frozen=True)
class Population:
    """One population of a multi-population game: its states, actions, start and payoffs."""

    mu0: np.ndarray
    n_actions: int
    reward: PopReward
    transition: PopTransition
    name: str = "population"
    externality: PopReward | None = None
    """sum_{s',a'} L[s',a'] dr[s',a'] / dL[s,a]: what one more member at (s, a) does to the rest
    of its own population's reward. A coalition (mean-field-type game) adds it to its reward:
    the best response of that modified game is the direction in which the population's
    average reward grows, so fictitious play on it climbs the coalition's objective."""


@dataclass(frozen=True)
class MultiGame:
    """Populations coupled through their distributions (each L_k is a distribution)."""

    horizon: int
    populations: tuple[Population, ...]

    def uniform(self) -> list[np.ndarray]:
        return [
            np.full((self.horizon + 1, p.mu0.size, p.n_actions), 1.0 / p.n_actions)
            for p in self.populations
        ]

    def view(self, k: int, others: list[np.ndarray], *, coalition: bool = False) -> FiniteGame:
        """Population k's game against the other populations' fixed mean fields ``others``
        (its own entry is replaced by its current L_t at each step); as a coalition, its
        reward includes its externality on itself."""
        pop = self.populations[k]
        external = pop.externality if coalition else None

        def joint(t: int, L_t: np.ndarray) -> list[np.ndarray]:
            out = [L[t] for L in others]
            out[k] = L_t
            return out

        def reward(t: int, L_t: np.ndarray) -> np.ndarray:
            Ls = joint(t, L_t)
            r = pop.reward(t, Ls)
            return r if external is None else r + external(t, Ls)

        return FiniteGame(
            self.horizon,
            pop.mu0,
            pop.n_actions,
            reward,
            lambda t, L_t: pop.transition(t, joint(t, L_t)),
            name=pop.name,
        )


def mean_fields(game: MultiGame, pis: list[np.ndarray]) -> list[np.ndarray]:
    """Every population's state-action distribution, advanced together (the transitions may
    depend on all of them)."""
    Ls = [np.empty_like(pi) for pi in pis]
    for k, pop in enumerate(game.populations):
        Ls[k][0] = pop.mu0[:, None] * pis[k][0]
    for t in range(game.horizon):
        now = [L[t] for L in Ls]
        for k, pop in enumerate(game.populations):
            P = pop.transition(t, now)
            mu_next = np.einsum("sa,sak->k", now[k], P)
            Ls[k][t + 1] = mu_next[:, None] * pis[k][t + 1]
    return Ls


def average_reward(game: MultiGame, pis: list[np.ndarray], k: int) -> float:
    """Population k's average total reward: sum_t sum_{s,a} L_k[t, s, a] r_k(t, L_t)[s, a]."""
    Ls = mean_fields(game, pis)
    pop = game.populations[k]
    return float(
        sum((Ls[k][t] * pop.reward(t, [L[t] for L in Ls])).sum() for t in range(game.horizon + 1))
    )


def multi_exploitability(
    game: MultiGame, pis: list[np.ndarray], *, coalitions: bool = False
) -> list[float]:
    """Each population's exploitability against the joint mean field of ``pis`` (for
    coalitions: the gap in the game with externalities, zero at a coalition's critical point)."""
    Ls = mean_fields(game, pis)
    out = []
    for k in range(len(game.populations)):
        view = game.view(k, Ls, coalition=coalitions)
        pi = _feasible(pis[k])
        best, own = _both_q(view, Ls[k], pi)
        out.append(float(view.mu0 @ best.max(axis=1) - view.mu0 @ (pi[0] * own).sum(axis=1)))
    return out


def multi_fictitious_play(
    game: MultiGame, iterations: int, *, coalitions: bool = False
) -> tuple[list[np.ndarray], list[float]]:
    """Fictitious play for every population at once: each best-responds to the joint mean
    field and averages, as in :func:`fictitious_play`. With ``coalitions`` each population
    acts as one decision maker (mean-field-type game): its best response includes its
    externality on itself. Returns the policies and the total exploitability per iteration."""
    pis = game.uniform()
    history = []
    for i in range(iterations):
        Ls = mean_fields(game, pis)
        step = 1.0 / (i + 2)
        new = []
        for k in range(len(game.populations)):
            view = game.view(k, Ls, coalition=coalitions)
            br = greedy(q_values(view, Ls[k]))
            # the best response's own distribution, against the others' current mean fields
            L_br = mean_field(view, br)
            mu = Ls[k].sum(axis=-1, keepdims=True)
            mu_br = L_br.sum(axis=-1, keepdims=True)
            numer = (1 - step) * mu * pis[k] + step * mu_br * br
            denom = (1 - step) * mu + step * mu_br
            with np.errstate(invalid="ignore", divide="ignore"):
                new.append(np.where(denom > 0, numer / denom, 1.0 / view.n_actions))
        pis = new
        history.append(sum(multi_exploitability(game, pis, coalitions=coalitions)))
    return pis, history


def crowded_beach(n: int = 9, horizon: int = 6, congestion: float = 4.0) -> MultiGame:
    """One population on a line heading for a bar in the middle, with a linear congestion
    cost -c mu(s): as a Nash population each member ignores what it does to the others; as a
    coalition the cost it adds, -c mu(s), counts too (the externality)."""
    P = np.zeros((n, 3, n))
    for s in range(n):
        for a in range(3):
            P[s, a, min(max(s + a - 1, 0), n - 1)] = 1.0
    distance = np.abs(np.arange(n) - n // 2).astype(np.float64)
    base = -distance[:, None] / n - 0.05 * np.array([1.0, 0.0, 1.0])[None, :]

    def reward(t: int, Ls: list[np.ndarray]) -> np.ndarray:
        out: np.ndarray = base - congestion * Ls[0].sum(axis=1)[:, None]
        return out

    def externality(t: int, Ls: list[np.ndarray]) -> np.ndarray:
        # d/dL[s,a] of sum_{s',a'} L[s',a'] (-c mu(s')) beyond the own term: -c mu(s)
        out: np.ndarray = np.repeat(-congestion * Ls[0].sum(axis=1)[:, None], 3, axis=1)
        return out

    return MultiGame(
        horizon,
        (Population(np.full(n, 1.0 / n), 3, reward, lambda t, Ls: P, "bathers", externality),),
    )


def matching_grid(n: int = 7, horizon: int = 6, move_cost: float = 0.2) -> MultiGame:
    """Two populations on a line of n cells, moving left, staying or right (deterministic):
    population 1 pays for moving and gains nothing by it, so it stays; population 2 gains
    log(mu_1 / mu_2) where it stands (on average minus the KL divergence of its distribution
    from population 1's: it wants to match it, not to crowd its densest cell) and pays the
    same for moving."""
    P = np.zeros((n, 3, n))
    for s in range(n):
        for a in range(3):
            P[s, a, min(max(s + a - 1, 0), n - 1)] = 1.0
    cost = -move_cost * np.array([1.0, 0.0, 1.0])
    x = np.arange(n)
    first = np.exp(-((x - n // 4) ** 2) / 1.5)
    second = np.exp(-((x - 3 * n // 4) ** 2) / 1.5)

    def stay(t: int, Ls: list[np.ndarray]) -> np.ndarray:
        return np.tile(cost, (n, 1))

    def match(t: int, Ls: list[np.ndarray]) -> np.ndarray:
        other, own = Ls[0].sum(axis=1), Ls[1].sum(axis=1)
        out: np.ndarray = (np.log(other + 1e-6) - np.log(own + 1e-6))[:, None] + cost[None, :]
        return out

    return MultiGame(
        horizon,
        (
            Population(first / first.sum(), 3, stay, lambda t, Ls: P, name="stays"),
            Population(second / second.sum(), 3, match, lambda t, Ls: P, name="matches"),
        ),
    )


SWITCH = np.zeros((2, 2, 2))
"""Two states, two actions: stay (0) or switch to the other state (1), deterministically."""
SWITCH[0, 0, 0] = SWITCH[1, 0, 1] = SWITCH[0, 1, 1] = SWITCH[1, 1, 0] = 1.0


def coalition_chase(
    horizon: int = 4,
    move_cost: float = 0.01,
    split: float = 0.7,
    crowding: float = 1.0,
    aversion: float = 0.2,
    start: tuple[float, float] = (0.2, 0.4),
) -> MultiGame:
    """Two coalitions on two states (a mean-field-type game): the chasers gain mu_2(s), the
    share of the settlers where they stand; the settlers gain a bonus b in state 1, lose
    ``crowding`` mu_2(s) to their own crowd (their externality on themselves) and ``aversion``
    mu_1(s) to the chasers. Switching costs ``move_cost``; ``start`` is each population's
    initial share in state 1.

    With the chasers all in state 1, the settlers' objective per step, x (b - aversion) -
    crowding (x^2 + (1 - x)^2) for x in state 1, has slope b - aversion + 2 crowding - 4
    crowding x; a move at t = 0 pays ``move_cost`` once and earns that slope over the
    ``horizon`` steps after it. b is set so that the move stops exactly at ``split``: b =
    4 crowding split - 2 crowding + aversion + move_cost / horizon. The chasers go where the
    settlers are most: to state 1 when ``split`` > 1/2. So the equilibrium is known: chasers
    1, settlers ``split`` from t = 1."""
    if horizon < 1:
        raise ValueError("the game needs a move and a step after it: horizon >= 1")
    bonus = 4 * crowding * split - 2 * crowding + aversion + move_cost / horizon
    switching = move_cost * np.array([0.0, 1.0])

    def chasers(t: int, Ls: list[np.ndarray]) -> np.ndarray:
        out: np.ndarray = Ls[1].sum(axis=1)[:, None] - switching[None, :]
        return out

    def settlers(t: int, Ls: list[np.ndarray]) -> np.ndarray:
        own, other = Ls[1].sum(axis=1), Ls[0].sum(axis=1)
        value = np.array([0.0, bonus]) - crowding * own - aversion * other
        out: np.ndarray = value[:, None] - switching[None, :]
        return out

    def crowd(t: int, Ls: list[np.ndarray]) -> np.ndarray:
        out: np.ndarray = np.repeat(-crowding * Ls[1].sum(axis=1)[:, None], 2, axis=1)
        return out

    def nothing(t: int, Ls: list[np.ndarray]) -> np.ndarray:
        return np.zeros((2, 2))

    def mu(share: float) -> np.ndarray:
        return np.array([1.0 - share, share])

    return MultiGame(
        horizon,
        (
            Population(mu(start[0]), 2, chasers, lambda t, Ls: SWITCH, "chasers", nothing),
            Population(mu(start[1]), 2, settlers, lambda t, Ls: SWITCH, "settlers", crowd),
        ),
    )
