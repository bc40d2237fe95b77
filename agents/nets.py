"""The small networks the learners share: a two-hidden-layer perceptron, and its warm start."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


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
