"""Nash-Q for a mean-field-type game of two coalitions, on discretised simplexes.

Each coalition steers its whole population (a mean-field-type game: it values what its members
do to each other). With two states, a population's distribution is its share in state 1; on a
grid of ``m + 1`` shares (the discretised simplex) the joint state is a pair of grid points, and
a coalition's action is the share it moves to, realised by switching just the members needed
(the cheapest transport). Nash-Q (Hu & Wellman, 2003) learns one Q table per coalition over
(time, joint state, both actions):

    Q_k(t, x, a_1, a_2) <- (1 - 1/n) Q_k + 1/n (r_k + Nash_k(t + 1, x'))

where r_k is the coalition's stage payoff measured on a finite population of ``agents`` members
(each switching member drawn at random, so the payoff is a noisy sample), x' = (a_1, a_2) and
Nash_k(t + 1, x') is coalition k's value in an equilibrium of the stage game (Q_1, Q_2)(t + 1, x'):
a pure equilibrium when there is one (the one with the largest total value), else a mixed one
(Lemke-Howson, from nashpy). Updates are synchronous: every entry once per sweep, latest time
first, step 1/n.

The learned equilibrium, followed from the game's start, gives each coalition a policy per time
step; :func:`market.mfg.multi_exploitability` (coalitions) scores it against the engine's exact
best responses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from market.mfg import SWITCH, MultiGame


@dataclass
class NashQ:
    """The learned tables and the equilibrium they give (see the module docstring)."""

    grid: int
    q: np.ndarray
    """q[k, t, i, j, a1, a2]: coalition k's value at time t, shares i/m and j/m, moving to
    a1/m and a2/m."""
    path: list[tuple[int, int]] = field(default_factory=list)
    """The equilibrium path from the start: the joint grid state at each time."""
    policies: list[np.ndarray] = field(default_factory=list)
    """Per coalition, pi[t, s, a] realising the path (as the engine's policies)."""
    mixed: int = 0
    """Stage games (of the last sweep) that needed a mixed equilibrium."""
    gaps: list[float] = field(default_factory=list)
    """After each sweep, the largest change of any Q value."""


def transport(share: float, target: float) -> np.ndarray:
    """pi[s, a] moving a population from ``share`` in state 1 to ``target``: only the members
    needed switch, from the state that loses mass."""
    pi = np.zeros((2, 2))
    pi[:, 0] = 1.0
    if target > share + 1e-12:  # some of state 0 switch to 1
        moved = (target - share) / (1.0 - share)
        pi[0] = [1.0 - moved, moved]
    elif target < share - 1e-12:
        moved = (share - target) / share
        pi[1] = [1.0 - moved, moved]
    return pi


def stage_equilibrium(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """An equilibrium of the bimatrix game (row payoffs ``a``, column payoffs ``b``): the pure
    one with the largest total payoff if any, else Lemke-Howson's. The two mixed strategies and
    whether it is mixed."""
    rows = a >= a.max(axis=0, keepdims=True) - 1e-12
    cols = b >= b.max(axis=1, keepdims=True) - 1e-12
    pure = np.argwhere(rows & cols)
    if pure.size:
        i, j = max(pure.tolist(), key=lambda ij: a[ij[0], ij[1]] + b[ij[0], ij[1]])
        x, y = np.zeros(a.shape[0]), np.zeros(a.shape[1])
        x[i] = y[j] = 1.0
        return x, y, False
    import nashpy  # only for games without a pure equilibrium

    game = nashpy.Game(a, b)
    for label in range(sum(a.shape)):
        try:
            x, y = game.lemke_howson(initial_dropped_label=label)
        except Exception:  # degenerate from this label: try the next
            continue
        if np.isfinite(x).all() and np.isfinite(y).all() and x.sum() > 0 and y.sum() > 0:
            return x / x.sum(), y / y.sum(), True
    x, y = next(game.support_enumeration())
    return x, y, True


def _check(game: MultiGame) -> None:
    if len(game.populations) != 2:
        raise ValueError("Nash-Q here is for two coalitions")
    for pop in game.populations:
        if pop.mu0.size != 2 or pop.n_actions != 2:
            raise ValueError("each population has two states and the actions stay or switch")
        if not np.array_equal(pop.transition(0, [np.zeros((2, 2))] * 2), SWITCH):
            raise ValueError("each population's actions are stay or switch, deterministically")


def nash_q(
    game: MultiGame,
    grid: int,
    sweeps: int,
    *,
    agents: int = 10_000,
    rng: np.random.Generator | None = None,
) -> NashQ:
    """Learn both coalitions' Q tables on a grid of ``grid + 1`` shares (see the module
    docstring); ``agents`` members per coalition sample each stage payoff."""
    _check(game)
    if grid < 1 or sweeps < 1 or agents < 1:
        raise ValueError("grid, sweeps and agents must be positive")
    rng = rng or np.random.default_rng(0)
    m, T = grid, game.horizon
    shares = np.arange(m + 1) / m
    q = np.zeros((2, T + 1, m + 1, m + 1, m + 1, m + 1))
    value = np.zeros((2, T + 2, m + 1, m + 1))  # Nash values; zero after the horizon
    last = np.arange(m + 1)
    result = NashQ(m, q)
    for n in range(1, sweeps + 1):
        step = 1.0 / n
        biggest, mixed = 0.0, 0
        for t in range(T, -1, -1):
            for i in range(m + 1):
                for j in range(m + 1):
                    targets = last if t < T else None  # at the horizon nobody moves
                    sample = _stage(game, t, shares[i], shares[j], shares, targets, agents, rng)
                    if t < T:
                        future = value[:, t + 1]  # [k, a1, a2]: the next joint state is (a1, a2)
                        target = sample + future
                    else:
                        target = sample
                    new = (1 - step) * q[:, t, i, j] + step * target
                    biggest = max(biggest, float(np.abs(new - q[:, t, i, j]).max()))
                    q[:, t, i, j] = new
                    x, y, was_mixed = stage_equilibrium(new[0], new[1])
                    mixed += was_mixed
                    value[0, t, i, j] = x @ new[0] @ y
                    value[1, t, i, j] = x @ new[1] @ y
        result.gaps.append(biggest)
        result.mixed = mixed
    _follow(game, result, shares)
    return result


def _stage(
    game: MultiGame,
    t: int,
    share1: float,
    share2: float,
    shares: np.ndarray,
    targets: np.ndarray | None,
    agents: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Sampled stage payoffs [k, a1, a2]: each coalition's average reward with ``agents``
    members, each switching member drawn (binomially) to realise the target share. At the
    horizon (``targets`` None) everyone stays and the payoff is the same for every action."""
    size = len(shares)
    out = np.empty((2, size, size))
    pops = game.populations
    moves = targets if targets is not None else np.zeros(1, np.intp)
    realised = []
    for share in (share1, share2):
        per = []
        for a in moves:
            pi = transport(share, shares[a]) if targets is not None else transport(share, share)
            mu = np.array([1.0 - share, share])
            counts = np.rint(mu * agents)
            switch = rng.binomial(counts.astype(np.int64), pi[:, 1]) / agents
            stay = counts / agents - switch
            per.append(np.stack([stay, switch], axis=1))
        realised.append(per)
    for a1, L1 in enumerate(realised[0]):
        for a2, L2 in enumerate(realised[1]):
            Ls = [L1, L2]
            out[0, a1, a2] = (L1 * pops[0].reward(t, Ls)).sum()
            out[1, a1, a2] = (L2 * pops[1].reward(t, Ls)).sum()
    if targets is None:
        out[:] = out[:, :1, :1]
    return out


def _follow(game: MultiGame, result: NashQ, shares: np.ndarray) -> None:
    """The equilibrium path from the start and the engine-style policies along it (where a
    stage equilibrium is mixed, its most likely action)."""
    T = game.horizon
    start = [round(float(p.mu0[1]) * result.grid) for p in game.populations]
    for pop, at in zip(game.populations, start, strict=True):
        if abs(float(pop.mu0[1]) - at / result.grid) > 1e-9:
            raise ValueError("the game's start is not on the grid")
    i, j = start
    pis = [np.zeros((T + 1, 2, 2)), np.zeros((T + 1, 2, 2))]
    result.path = []
    for t in range(T + 1):
        result.path.append((i, j))
        if t == T:
            pis[0][t] = transport(shares[i], shares[i])
            pis[1][t] = transport(shares[j], shares[j])
            break
        x, y, _ = stage_equilibrium(result.q[0, t, i, j], result.q[1, t, i, j])
        a1, a2 = int(np.argmax(x)), int(np.argmax(y))
        pis[0][t] = transport(shares[i], shares[a1])
        pis[1][t] = transport(shares[j], shares[a2])
        i, j = a1, a2
    result.policies = pis
