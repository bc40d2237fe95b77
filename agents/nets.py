"""What the learners share: a two-hidden-layer perceptron, its warm start, the training loop."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from agents.env import Market, classic_days, evaluate, train_days, truthful
from market.scenario import Scenario


def mlp(
    inputs: int, outputs: int, hidden: int, activation: type[nn.Module] = nn.Tanh
) -> nn.Sequential:
    """inputs -> hidden -> hidden -> outputs, with ``activation`` after each hidden layer."""
    return nn.Sequential(
        nn.Linear(inputs, hidden),
        activation(),
        nn.Linear(hidden, hidden),
        activation(),
        nn.Linear(hidden, outputs),
    )


def imitate(
    net: nn.Module,
    obs: np.ndarray,
    actions: np.ndarray,
    *,
    steps: int = 400,
    lr: float = 1e-2,
    batch: int = 4096,
    seed: int = 0,
    edge: float = 0.04,
) -> float:
    """Warm start: fit ``net``'s outputs to the logits of ``actions`` (in [0, 1], clipped to
    [``edge``, 1 - ``edge``]) by least squares, so a learner starts from a classic strategy instead of from
    noise. The default edge still decodes to the ends (:func:`agents.observe.decode`) while
    keeping the sigmoid off its flat tails, where a gradient would barely move it. Returns the
    last minibatch's loss."""
    x = torch.from_numpy(np.asarray(obs, np.float32))
    p = np.clip(np.asarray(actions, np.float64), edge, 1 - edge)
    y = torch.from_numpy(np.log(p / (1 - p)).astype(np.float32))
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss = torch.zeros(())
    for _ in range(steps):
        rows = torch.randint(0, len(x), (min(batch, len(x)),), generator=generator)
        loss = ((net(x[rows]) - y[rows]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


VALIDATION = (500, 501)
"""Seeds of the days a learner is validated on while it trains (never a training day, which
are seeds 1000 onwards, nor a held-out day of the benchmarks and ``negotiator train``)."""


class Learner:
    """The training loop of a shared-policy learner: warm start, then training days, keeping
    the actor that did best on the validation days. A learner provides ``seed``,
    ``warm_start``, ``curve``, ``actor``, ``act``, ``train_day`` and the network whose outputs
    are the action logits (``_logits``)."""

    seed: int
    warm_start: bool
    curve: list[float]
    actor: nn.Module
    validation: list[tuple[int, float]]
    """(training days so far, mean validation reward per member per day) at each check."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def train_day(self, core: Market) -> float:
        raise NotImplementedError

    def _logits(self) -> nn.Module:
        raise NotImplementedError

    def _warmed(self) -> None:
        """After the warm start (targets to follow the imitated actor, say)."""

    def train(
        self,
        scenario: Scenario,
        days: int,
        *,
        first_seed: int = 1000,
        on_day: Callable[[int, float], None] | None = None,
        share: float = 1.0,
        validate_every: int = 5,
    ) -> list[float]:
        """Train on ``days`` fresh days of ``scenario`` (seeds ``first_seed`` onwards), a
        ``share`` of the members learning among classic traders. With ``warm_start`` a fresh
        learner first imitates the classic strategy on the two days before those. Every
        ``validate_every`` days (and at the end) the actor is scored on the :data:`VALIDATION`
        days; the best one is kept. The market the members learn in is not stationary (a
        shared policy moves its own mean field) and its landscape has valleys, so the last
        actor is not always the best one it passed through."""
        if self.warm_start and not self.curve:
            obs = classic_days(scenario, [first_seed - 2, first_seed - 1])
            imitate(self._logits(), obs, truthful(obs), seed=self.seed)
            self._warmed()
        best = (-math.inf, copy.deepcopy(self.actor.state_dict()))

        def check(day: int) -> None:
            nonlocal best
            score, _ = evaluate(self.act, scenario, list(VALIDATION), share)
            self.validation.append((day, score))
            if score > best[0]:
                best = (score, copy.deepcopy(self.actor.state_dict()))

        def after(k: int, reward: float) -> None:
            if on_day is not None:
                on_day(k, reward)
            if validate_every and (k + 1) % validate_every == 0 and k + 1 < days:
                check(k + 1)

        train_days(self.train_day, scenario, days, first_seed=first_seed, on_day=after, share=share)
        check(days)
        self.actor.load_state_dict(best[1])
        return self.curve
