"""Mean-field actor-critic: one policy pi(u | x, mu) shared by the members, trained on the market.

The actor sees a member's own state x and the population's statistics mu (the observation of
:mod:`agents.env`: the mean field's buyers' share, demand and supply, guidance and last price)
and outputs a Gaussian over the logits of the two actions (limit price, share offered); the
critic estimates the value of the rest of the day V(x, mu). Both are small torch networks. Each
slot of each training day gives one transition per member, so one update sees the whole
population at once:

- critic, fast timescale: TD(0) towards r + gamma V(x', mu') (``discount``; 0 by default, see
  there), step ``critic_lr``;
- actor, slow timescale: policy gradient with the TD error as advantage, Adam with the step

      alpha_t = alpha_0 min(1, tau_0 / t) / (1 + beta W1(mu_t, mu_{t-1}))

  (the tutorial's drift-modulated step: smaller while the population moves, so the actor does
  not chase a mean field in motion); W1 is the mean-field service's 1-Wasserstein drift of net
  positions between consecutive slots, averaged over types, in kWh.

Training days are fresh realisations of the scenario (the same community's kind, other weather
and behaviour); :func:`evaluate` scores a policy on held-out days.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from agents.env import Market, evaluate, truthful
from agents.nets import Learner, mlp
from agents.observe import OBSERVATION

Policy = Callable[[np.ndarray], np.ndarray]
"""observations (members x features) -> actions (members x 2) in [0, 1]."""


def actor_step(alpha0: float, tau0: float, beta: float, t: int, drift: float) -> float:
    """alpha_t = alpha_0 min(1, tau_0 / t) / (1 + beta W1): the actor's drift-modulated step."""
    if t < 1:
        raise ValueError("t counts updates from 1")
    return alpha0 * min(1.0, tau0 / t) / (1.0 + beta * drift)


@dataclass
class MeanFieldActorCritic(Learner):
    """The shared policy and its critic (see the module docstring)."""

    hidden: int = 64
    alpha0: float = 3e-3
    tau0: float = 3000.0
    beta: float = 5.0
    critic_lr: float = 1e-2
    seed: int = 0
    warm_start: bool = False
    """Start from the classic strategy (imitated) rather than from random weights. Off: the
    classic strategy sits at the ends of the action range, behind a valley (a little shading
    loses price priority before a lot of it pays), and a local policy gradient from there only
    pushes the actor further to the ends."""
    init_log_std: float = 0.0
    """The exploration noise's starting log standard deviation, on the logits."""
    discount: float = 0.0
    """Weight of the next slot's value in the TD target. A member's actions move neither its
    own next state (positions come from the dispatch) nor, in the mean-field limit, the
    population's, so the rest of the day's value adds only its estimation error: 0 by
    default, the slot's reward against the critic's baseline V(x, mu)."""
    actor: nn.Sequential = field(init=False)
    critic: nn.Sequential = field(init=False)
    log_std: torch.Tensor = field(init=False)
    updates: int = field(init=False, default=0)
    curve: list[float] = field(init=False, default_factory=list)
    """Mean reward per member per day, one entry per training day."""
    validation: list[tuple[int, float]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        torch.manual_seed(self.seed)
        n = len(OBSERVATION)
        self.actor = mlp(n, 2, self.hidden)
        self.critic = mlp(n, 1, self.hidden)
        self.log_std = torch.full((2,), self.init_log_std, requires_grad=True)
        self.generator = torch.Generator().manual_seed(self.seed)
        self._actor_opt = torch.optim.Adam([*self.actor.parameters(), self.log_std], lr=self.alpha0)
        self._critic_opt = torch.optim.Adam(self.critic.parameters(), lr=self.critic_lr)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The policy's mean action (deterministic), for evaluation and deployment."""
        with torch.inference_mode():
            return torch.sigmoid(self.actor(torch.from_numpy(obs))).numpy()

    def train_day(self, core: Market) -> float:
        """One training day on ``core``; returns the mean reward per member over the day."""
        obs = torch.from_numpy(core.reset())
        total = 0.0
        done = False
        while not done:
            mean = self.actor(obs)
            std = self.log_std.exp()
            z = mean + std * torch.randn(mean.shape, generator=self.generator)
            z = z.detach()
            nxt, reward, done = core.step(torch.sigmoid(z).numpy())
            total += float(reward.mean())
            nxt_t = torch.from_numpy(nxt)
            r = torch.from_numpy(reward) / 10.0  # sat per slot, scaled towards unit size
            value = self.critic(obs).squeeze(-1)
            with torch.no_grad():
                target = r + (0.0 if done else self.discount * self.critic(nxt_t).squeeze(-1))
            critic_loss = ((target - value) ** 2).mean()
            self._critic_opt.zero_grad()
            critic_loss.backward()
            self._critic_opt.step()
            # the TD error as advantage, clipped: where the whole population shares one state
            # (a night without trade) a normalisation by its spread would blow it up
            advantage = (target - value).detach().clamp(-5.0, 5.0)
            log_prob = (-((z - mean) ** 2) / (2 * std**2) - self.log_std).sum(-1)
            actor_loss = -(advantage * log_prob).mean()
            self.updates += 1
            step = actor_step(self.alpha0, self.tau0, self.beta, self.updates, _drift(core))
            for group in self._actor_opt.param_groups:
                group["lr"] = step
            self._actor_opt.zero_grad()
            actor_loss.backward()
            self._actor_opt.step()
            obs = nxt_t
        self.curve.append(total)
        return total

    def _logits(self) -> nn.Module:
        return self.actor


def _drift(core: Market) -> float:
    """The population's W1 drift between the last two slots, averaged over types, in kWh."""
    snap = core.service.last
    if snap is None or not snap.types:
        return 0.0
    count = sum(t.count for t in snap.types.values())
    return sum(t.drift * t.count for t in snap.types.values()) / max(count, 1) / 1000


__all__ = ["MeanFieldActorCritic", "actor_step", "evaluate", "truthful"]
