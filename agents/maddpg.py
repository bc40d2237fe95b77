"""MF-MADDPG: a deterministic actor pi(s, m) and a centralised mean-field critic Q(s, a, m, a_bar).

As in the MADDPG note, with the population in place of the other agents: each member's actor
maps its own state and the population state m (the mean-field part of the observation of
:mod:`agents.env`) to an action; the critic, used only in training, also sees the member's action
and the population's mean action a_bar, which stands for everyone else's (the mean-field
approximation of a centralised critic over n agents). One actor and one critic are shared by the
members. Training is off-policy:

- a replay buffer of (s, a, a_bar, r, s', done) for every member and slot;
- the critic regresses on r + gamma Q'(s', pi'(s'), a_bar') (``discount``, 0 by default: see
  there) with target networks pi', Q' that follow the learned ones by soft updates (``tau``);
- the actor ascends Q(s, pi(s), a_bar), its logits held off the sigmoid's tails by a small
  penalty (``saturation``);
- exploration adds Ornstein-Uhlenbeck noise to the actions, one process per member (noise that
  persists across slots, as the original DDPG used).

Actions are in [0, 1]^2 (:mod:`agents.env`): the actor ends in a sigmoid, the noise is added and
clipped.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from agents.env import Market
from agents.nets import Learner, mlp
from agents.observe import OBSERVATION

ACTIONS = 2


class OrnsteinUhlenbeck:
    """dx = theta (mu - x) dt + sigma dW per member, dt = 1: temporally correlated exploration."""

    def __init__(
        self,
        shape: tuple[int, ...],
        rng: np.random.Generator,
        theta: float = 0.15,
        sigma: float = 0.2,
    ) -> None:
        self.theta, self.sigma, self.rng = theta, sigma, rng
        self.x = np.zeros(shape)

    def reset(self) -> None:
        """Back to zero (a new day)."""
        self.x[:] = 0.0

    def sample(self) -> np.ndarray:
        """The next noise value."""
        self.x += -self.theta * self.x + self.sigma * self.rng.standard_normal(self.x.shape)
        return self.x.copy()


class Replay:
    """A ring buffer of transitions (arrays, no Python objects per transition)."""

    def __init__(self, capacity: int, features: int) -> None:
        self.capacity = capacity
        self.obs = np.zeros((capacity, features), np.float32)
        self.action = np.zeros((capacity, ACTIONS), np.float32)
        self.mean_action = np.zeros((capacity, ACTIONS), np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.next_obs = np.zeros((capacity, features), np.float32)
        self.done = np.zeros(capacity, np.float32)
        self.size = 0
        self._at = 0

    def add(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        mean_action: np.ndarray,
        reward: np.ndarray,
        next_obs: np.ndarray,
        done: bool,
    ) -> None:
        """Store one slot's transitions, one row per member."""
        n = len(obs)
        rows = (self._at + np.arange(n)) % self.capacity
        self.obs[rows] = obs
        self.action[rows] = action
        self.mean_action[rows] = mean_action
        self.reward[rows] = reward
        self.next_obs[rows] = next_obs
        self.done[rows] = float(done)
        self._at = int((self._at + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        """A uniform minibatch, as tensors."""
        rows = rng.integers(0, self.size, batch)
        return tuple(
            torch.from_numpy(a[rows])
            for a in (
                self.obs,
                self.action,
                self.mean_action,
                self.reward,
                self.next_obs,
                self.done,
            )
        )


@dataclass
class MeanFieldMADDPG(Learner):
    """The shared deterministic actor and its mean-field critic (see the module docstring)."""

    hidden: int = 64
    actor_lr: float = 3e-3
    critic_lr: float = 1e-3
    tau: float = 0.01
    batch: int = 1024
    buffer: int = 200_000
    updates_per_slot: int = 2
    reward_scale: float = 0.1
    seed: int = 0
    warm_start: bool = False
    """Start from the classic strategy (imitated) rather than from random weights. Off: the
    classic actions sit at the ends of the range, where the sigmoid is flat and the critic's
    gradient cannot move the actor."""
    noise: float = 0.3
    """The Ornstein-Uhlenbeck exploration noise's sigma: wide, so that the critic sees the
    whole action range (the market's landscape has valleys between the classic choice and
    better ones)."""
    discount: float = 0.0
    """Weight of the next slot's value in the critic's target. A member's actions move neither
    its own next state (positions come from the dispatch) nor, in the mean-field limit, the
    population's: 0 by default, so the critic regresses the slot's reward without adding the
    bootstrapped estimate's error."""
    saturation: float = 0.01
    """Weight of a penalty on the actor's squared logits: it keeps the sigmoid off its flat
    tails, where an actor that strayed would stay (no gradient comes back)."""
    actor: nn.Sequential = field(init=False)
    curve: list[float] = field(init=False, default_factory=list)
    """Mean reward per member per day, one entry per training day."""
    validation: list[tuple[int, float]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        torch.manual_seed(self.seed)
        n = len(OBSERVATION)
        self.actor = nn.Sequential(mlp(n, ACTIONS, self.hidden, nn.ReLU), nn.Sigmoid())
        self.critic = mlp(n + 2 * ACTIONS, 1, self.hidden, nn.ReLU)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic_target = copy.deepcopy(self.critic)
        self._actor_opt = torch.optim.Adam(self.actor.parameters(), lr=self.actor_lr)
        self._critic_opt = torch.optim.Adam(self.critic.parameters(), lr=self.critic_lr)
        self.rng = np.random.default_rng(self.seed)
        self.replay = Replay(self.buffer, n)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The deterministic policy's action (no noise)."""
        with torch.inference_mode():
            out: np.ndarray = self.actor(torch.from_numpy(obs)).numpy()
        return out

    def _q(
        self, net: nn.Module, obs: torch.Tensor, a: torch.Tensor, a_bar: torch.Tensor
    ) -> torch.Tensor:
        out: torch.Tensor = net(torch.cat([obs, a, a_bar], dim=-1)).squeeze(-1)
        return out

    def _update(self) -> None:
        obs, a, a_bar, r, nxt, done = self.replay.sample(self.batch, self.rng)
        with torch.no_grad():
            a_next = self.actor_target(nxt)
            # the population's next mean action: the target policy's, over the batch's states
            bar_next = a_next.mean(dim=0, keepdim=True).expand_as(a_next)
            target = r * self.reward_scale + (1 - done) * self.discount * self._q(
                self.critic_target, nxt, a_next, bar_next
            )
        critic_loss = ((self._q(self.critic, obs, a, a_bar) - target) ** 2).mean()
        self._critic_opt.zero_grad()
        critic_loss.backward()  # type: ignore[no-untyped-call]
        self._critic_opt.step()
        logits = self.actor[0](obs)
        actor_loss = -self._q(self.critic, obs, torch.sigmoid(logits), a_bar).mean()
        actor_loss = actor_loss + self.saturation * (logits**2).mean()
        self._actor_opt.zero_grad()
        actor_loss.backward()
        self._actor_opt.step()
        with torch.no_grad():  # soft updates of the targets
            for net, tgt in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
                for p, q in zip(net.parameters(), tgt.parameters(), strict=True):
                    q.mul_(1 - self.tau).add_(self.tau * p)

    def train_day(self, core: Market) -> float:
        """One training day; the mean reward per member over the day."""
        noise = OrnsteinUhlenbeck((core.members, ACTIONS), self.rng, sigma=self.noise)
        obs, total, done = core.reset(), 0.0, False
        while not done:
            action = np.clip(self.act(obs) + noise.sample(), 0.0, 1.0).astype(np.float32)
            nxt, reward, done = core.step(action)
            mean_action = np.broadcast_to(action.mean(axis=0), action.shape)
            self.replay.add(obs, action, mean_action, reward, nxt, done)
            total += float(reward.mean())
            if self.replay.size >= self.batch:
                for _ in range(self.updates_per_slot):
                    self._update()
            obs = nxt
        self.curve.append(total)
        return total

    def _logits(self) -> nn.Module:
        return self.actor[0]

    def _warmed(self) -> None:
        self.actor_target.load_state_dict(self.actor.state_dict())
