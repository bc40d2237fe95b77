"""The small networks the learners share: a two-hidden-layer perceptron."""

from __future__ import annotations

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
