"""Tabular learning in finite mean-field games, checked against the engine's exact solvers.

The learner never reads the game's transition probabilities: it queries a simulator (a
generative model) for next states, ``samples`` per state, action and time, and it observes the
rewards and the population's state-action distribution L (what the mean-field service reports).
From those it learns Q values by sampled backward induction (synchronous Q-learning with fresh
samples each sweep):

    Q_T = r_T(L_T),   Q_t(s, a) = r_t(s, a, L_t) + (1 / m) sum_{j <= m} V_{t+1}(s'_j),
    s'_j ~ P_t(. | s, a, L_t),

with V_{t+1} the value of the current policy (``evaluate``, on-policy) or its maximum (best
response). The policy is stabilised by softmax smoothing of the accumulated Q values,

    y <- y + alpha Q,   pi = softmax(y),

the sampled counterpart of the engine's online mirror descent: sampling noise enters the sum and
averages out (signal grows like k, noise like sqrt(k)), so the learned population converges where
a softmax of each sweep's noisy Q alone would keep jittering. Exploitability is computed exactly
by the engine (:func:`market.mfg.exploitability`), which is the check.

Next-state draws are multinomial counts per (t, s, a): ``m`` draws cost O(states), not O(m).
"""

from __future__ import annotations

import numpy as np

from market.mfg import FiniteGame, Result, exploitability, mean_field, softmax


def sampled_q(
    game: FiniteGame,
    L: np.ndarray,
    pi: np.ndarray,
    samples: int,
    rng: np.random.Generator,
    *,
    evaluate: bool = True,
) -> np.ndarray:
    """Q[t, s, a] against the mean field ``L`` from ``samples`` simulated next states per
    (t, s, a): of the policy ``pi`` (``evaluate``) or of the best response."""
    if samples < 1:
        raise ValueError("samples must be at least 1")
    T = game.horizon
    Q = np.empty_like(L)
    Q[T] = game.reward(T, L[T])
    for t in range(T - 1, -1, -1):
        nxt = (pi[t + 1] * Q[t + 1]).sum(axis=1) if evaluate else Q[t + 1].max(axis=1)
        P = game.transition(t, L[t])  # the simulator: only sampled from, never read as Q's model
        counts = rng.multinomial(samples, P.reshape(-1, game.n_states))
        Q[t] = game.reward(t, L[t]) + (counts @ nxt).reshape(P.shape[:2]) / samples
    return Q


def mean_field_q_learning(
    game: FiniteGame,
    iterations: int,
    *,
    samples: int = 10_000,
    alpha: float = 1.0,
    evaluate: bool = True,
    rng: np.random.Generator,
) -> Result:
    """Learn the population's policy by sampled Q values and softmax smoothing of their sum
    (see the module docstring); the exploitability after every iteration, exactly."""
    if iterations < 1 or alpha <= 0:
        raise ValueError("iterations >= 1 and alpha > 0")
    pi = game.uniform()
    y = np.zeros_like(pi)
    history = []
    for _ in range(iterations):
        L = mean_field(game, pi)
        y += alpha * sampled_q(game, L, pi, samples, rng, evaluate=evaluate)
        pi = softmax(y, 1.0)
        history.append(exploitability(game, pi))
    return Result(pi, mean_field(game, pi), history)
