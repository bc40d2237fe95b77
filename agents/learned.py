"""A trained policy as a file, and as a trader's pricing rule in the live runtime.

``negotiator train`` writes the shared actor of a learner (:mod:`agents.mfac`,
:mod:`agents.maddpg`) to a ``.pt`` file: its linear layers, its activation, the observation it
was trained on and how (algorithm, scenario, days, seed, learning curve). Loading it needs no
learner and no gradient: the forward pass runs in numpy (for one member 16 us against 52 us
through torch; the whole pricing rule, observation included, 27 us).

In the live runtime a learned trader (:class:`agents.Trader` with ``policy``) asks the policy,
when a slot opens, for its limit price and the share of its position it offers, from the same
observation the training environment builds (:mod:`agents.observe`): its own position, the
tariff, the time of day and the runtime's view of the mean field. It then negotiates as any
trader does, conceding along its strategy from its aspiration to that limit; what it does not
offer, or does not agree, goes to the grid at gate closure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from agents.observe import OBSERVATION, decode, features
from agents.trader import Limit

FORMAT = "negotiator-policy/1"
"""The file format's name and version, checked on load."""

Algo = Literal["mf-ac", "mf-maddpg"]


@dataclass(frozen=True)
class LearnedPolicy:
    """A shared actor: observations (members x OBSERVATION) -> actions in [0, 1]^2 (where the
    limit sits between the export and import prices, the share of the position offered)."""

    algo: str
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]
    activation: Literal["tanh", "relu"]
    scenario: str = ""
    days: int = 0
    seed: int = 0
    share: float = 1.0
    """The share of the members that learned (the rest traded classically)."""
    curve: tuple[float, ...] = field(default=(), repr=False)
    """Mean reward per member per training day (sat saved against the grid alone)."""

    def __post_init__(self) -> None:
        if not self.layers or self.layers[0][0].shape[1] != len(OBSERVATION):
            raise ValueError(f"the policy's input is not the {len(OBSERVATION)} observed features")
        if self.layers[-1][0].shape[0] != 2:
            raise ValueError("the policy's output is not the two actions")

    @classmethod
    def of(cls, actor: nn.Module, algo: str, **meta: Any) -> LearnedPolicy:
        """From a learner's actor (its linear layers, in order, with tanh or ReLU between)."""
        linear = [m for m in actor.modules() if isinstance(m, nn.Linear)]
        relu = any(isinstance(m, nn.ReLU) for m in actor.modules())
        layers = tuple(
            (
                m.weight.detach().numpy().astype(np.float64),
                m.bias.detach().numpy().astype(np.float64),
            )
            for m in linear
        )
        return cls(algo, layers, "relu" if relu else "tanh", **meta)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Actions for a batch of observations (the mean action: no exploration)."""
        x = np.asarray(obs, np.float64)
        last = len(self.layers) - 1
        for i, (w, b) in enumerate(self.layers):
            x = x @ w.T + b
            if i < last:
                x = np.tanh(x) if self.activation == "tanh" else np.maximum(x, 0.0)
        out: np.ndarray = 0.5 * (1.0 + np.tanh(x / 2))  # the logistic, without overflow
        return out

    def save(self, path: str | Path) -> None:
        """Write the policy (torch's format, tensors and plain values only)."""
        torch.save(
            {
                "format": FORMAT,
                "algo": self.algo,
                "observation": list(OBSERVATION),
                "activation": self.activation,
                "layers": [[torch.from_numpy(w), torch.from_numpy(b)] for w, b in self.layers],
                "scenario": self.scenario,
                "days": self.days,
                "seed": self.seed,
                "share": self.share,
                "curve": list(self.curve),
            },
            Path(path),
        )

    @classmethod
    def load(cls, path: str | Path) -> LearnedPolicy:
        """Read a policy written by :meth:`save`; ValueError if the file is not one, or was
        trained on other features."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no policy file at {path}")
        try:
            data = torch.load(path, weights_only=True)
        except Exception as exc:  # pickle, zip and torch's own errors alike
            raise ValueError(f"{path} is not a policy file: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} file")
        if tuple(data["observation"]) != OBSERVATION:
            raise ValueError(
                f"{path} was trained on the features {data['observation']}, not {OBSERVATION}"
            )
        layers = tuple((w.numpy(), b.numpy()) for w, b in data["layers"])
        return cls(
            str(data["algo"]),
            layers,
            data["activation"],
            scenario=str(data["scenario"]),
            days=int(data["days"]),
            seed=int(data["seed"]),
            share=float(data["share"]),
            curve=tuple(float(v) for v in data["curve"]),
        )

    def rule(self, slots_per_day: int) -> Limit:
        """The trader's pricing rule in a run of ``slots_per_day`` slots a day: with ``a`` the
        decoded actions, the limit ``export + a0 (import - export)`` and the quantity
        ``floor(a1 |net|)``, as in the training environment."""

        # Every trader of a type sees the same view, tariff and slot: their features differ
        # only in the position (and the side it is on), so the rest is built once per
        # (view, slot, type).
        cache: dict[tuple[int, str], np.ndarray] = {}
        seen: list[object] = [None]

        def limit(
            slot: int, agent_type: str, net: int, imp: int, exp: int, view: object
        ) -> tuple[int, int]:
            if seen[0] is not view:
                cache.clear()
                seen[0] = view
            key = (slot, agent_type)
            common = cache.get(key)
            if common is None:
                common = features(view, (agent_type,), _ZERO, _ZERO, imp, exp, slot, slots_per_day)
                cache[key] = common
            obs = common.copy()
            obs[0, 0] = net / 1000
            obs[0, _SIDE] = np.sign(net)
            a = decode(self(obs))[0]
            return round(exp + float(a[0]) * (imp - exp)), int(float(a[1]) * abs(net))

        return limit


_ZERO = np.zeros(1, np.intp)
_SIDE = OBSERVATION.index("side")
