"""Probabilistic forecasts of a member's net position: a heteroscedastic Student-t model and its
Gaussian baseline, trained by negative log-likelihood, scored on held-out days.

Each sample is one member at one slot t, forecasting its net position (load - PV, kWh) at
t + ``horizon``. The features are what the member knows at t: its day-ahead load and PV forecasts
for the target slot, its realised and forecast net at t, the ratio of its realised to forecast PV
at t (today's clouds), and the target's time of day. A small network maps them to the
distribution's parameters, each a function of the input: the location, the scale (softplus) and,
for the Student-t, the degrees of freedom (2 + softplus, so the variance exists).

The history comes from the scenario generator (:meth:`market.scenario.Scenario.realise` over many
days: the same members, fresh weather and noise each day); :func:`history` turns it into samples
and :func:`split` keeps whole days apart for testing. Scores, in numpy / scipy:

- CRPS in closed form for both (Gneiting and Raftery 2007; the Student-t form as in
  scoringRules): lower is better, in the target's unit;
- pinball loss at quantiles, and the coverage of the central 90% interval.

Training is seeded through a ``torch.Generator`` and runs on the CPU in seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy import special, stats
from torch import nn

from agents.nets import mlp
from market.scenario import EnergyCommunity

Family = Literal["student", "gaussian"]
FEATURES = (
    "load_forecast",
    "pv_forecast",
    "net_now",
    "net_forecast_now",
    "pv_ratio_now",
    "hour_sin",
    "hour_cos",
)


@dataclass(frozen=True)
class Samples:
    """Forecasting samples: features, the realised target, and the day each belongs to."""

    features: np.ndarray
    """n x len(FEATURES), float32."""
    target: np.ndarray
    """n, float32: the realised net position at the target slot, kWh."""
    day: np.ndarray
    """n, int: the target's day (to hold whole days out)."""

    def __len__(self) -> int:
        return int(self.target.size)

    def take(self, mask: np.ndarray) -> Samples:
        """The samples where ``mask`` holds."""
        return Samples(self.features[mask], self.target[mask], self.day[mask])


def history(community: EnergyCommunity, horizon: int = 4) -> Samples:
    """Every member at every slot t with t + ``horizon`` inside the history: its features at t
    and its realised net at t + horizon (kWh)."""
    if horizon < 1:
        raise ValueError("horizon must be at least 1 slot")
    c = community
    per_day = c.scenario.slots_per_day
    load_f, pv_f = c.load_forecast_wh / 1000, c.pv_forecast_wh / 1000
    net_r = (c.load_wh - c.pv_wh) / 1000
    net_f = load_f - pv_f
    ratio = np.where(
        pv_f > 0.01, np.log(np.maximum(c.pv_wh / 1000, 1e-6) / np.maximum(pv_f, 1e-6)), 0.0
    )
    ratio = np.clip(ratio, -3.0, 3.0)
    slots = net_r.shape[1]
    now = np.arange(slots - horizon)
    target = now + horizon
    angle = 2 * np.pi * (target % per_day) / per_day
    members = net_r.shape[0]
    columns = [
        load_f[:, target],
        pv_f[:, target],
        net_r[:, now],
        net_f[:, now],
        ratio[:, now],
        np.broadcast_to(np.sin(angle), (members, now.size)),
        np.broadcast_to(np.cos(angle), (members, now.size)),
    ]
    features = np.stack([col.ravel() for col in columns], axis=1).astype(np.float32)
    day = np.broadcast_to(target // per_day, (members, now.size)).ravel()
    return Samples(features, net_r[:, target].ravel().astype(np.float32), day.copy())


def split(samples: Samples, test_days: int) -> tuple[Samples, Samples]:
    """The last ``test_days`` days held out; the rest for training."""
    last = int(samples.day.max())
    held = samples.day > last - test_days
    if held.all() or not held.any():
        raise ValueError("need days both to train on and to hold out")
    return samples.take(~held), samples.take(held)


@dataclass
class Prediction:
    """Predicted distributions, one per sample (numpy)."""

    family: Family
    loc: np.ndarray
    scale: np.ndarray
    df: np.ndarray | None = None

    def quantile(self, q: float) -> np.ndarray:
        """The ``q`` quantile of each predicted distribution."""
        if self.family == "student":
            assert self.df is not None
            return self.loc + self.scale * stats.t.ppf(q, self.df)  # type: ignore[no-any-return]
        return self.loc + self.scale * stats.norm.ppf(q)  # type: ignore[no-any-return]

    def crps(self, y: np.ndarray) -> np.ndarray:
        """Closed-form CRPS of each prediction against its outcome ``y``."""
        if self.family == "student":
            assert self.df is not None
            return crps_student(y, self.loc, self.scale, self.df)
        return crps_gaussian(y, self.loc, self.scale)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` draws from each prediction: shape (samples, n)."""
        shape = (self.loc.size, n)
        if self.family == "student":
            assert self.df is not None
            z = rng.standard_t(self.df[:, None], shape)
        else:
            z = rng.standard_normal(shape)
        return self.loc[:, None] + self.scale[:, None] * z


class Forecaster:
    """A heteroscedastic Student-t (or Gaussian) forecaster of net positions."""

    def __init__(self, family: Family = "student", hidden: int = 64, seed: int = 0) -> None:
        if family not in ("student", "gaussian"):
            raise ValueError(f"family must be student or gaussian, not {family!r}")
        self.family: Family = family
        self.generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # nn.Linear draws its initial weights from the default generator
        outputs = 3 if family == "student" else 2
        self.head = mlp(len(FEATURES), outputs, hidden, nn.SiLU)
        self.mean = torch.zeros(len(FEATURES))
        self.std = torch.ones(len(FEATURES))
        self.losses: list[float] = []
        """Mean training NLL per epoch."""

    def _params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        out = self.head((x - self.mean) / self.std)
        loc = out[:, 0]
        scale = nn.functional.softplus(out[:, 1]) + 1e-4
        df = 2.0 + nn.functional.softplus(out[:, 2]) if self.family == "student" else None
        return loc, scale, df

    def _nll(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loc, scale, df = self._params(x)
        if df is not None:
            dist: torch.distributions.Distribution = torch.distributions.StudentT(df, loc, scale)
        else:
            dist = torch.distributions.Normal(loc, scale)
        return -dist.log_prob(y).mean()

    def fit(
        self, samples: Samples, *, epochs: int = 20, batch: int = 4096, lr: float = 3e-3
    ) -> Forecaster:
        """Train by negative log-likelihood (Adam, minibatches drawn by the seeded generator)."""
        x = torch.from_numpy(samples.features)
        y = torch.from_numpy(samples.target)
        self.mean = x.mean(dim=0)
        self.std = x.std(dim=0).clamp_min(1e-6)
        optimiser = torch.optim.Adam(self.head.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, epochs)
        n = len(samples)
        for _ in range(epochs):
            order = torch.randperm(n, generator=self.generator)
            total = 0.0
            for start in range(0, n, batch):
                idx = order[start : start + batch]
                loss = self._nll(x[idx], y[idx])
                optimiser.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                optimiser.step()
                total += loss.item() * idx.numel()
            schedule.step()
            self.losses.append(total / n)
        return self

    @torch.inference_mode()
    def predict(self, features: np.ndarray) -> Prediction:
        """The predicted distribution for each row of ``features``."""
        loc, scale, df = self._params(torch.from_numpy(np.asarray(features, np.float32)))
        return Prediction(
            self.family,
            loc.double().numpy(),
            scale.double().numpy(),
            None if df is None else df.double().numpy(),
        )


def crps_gaussian(y: np.ndarray, loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """CRPS of N(loc, scale^2) at y: scale [z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi)]."""
    z = (np.asarray(y) - loc) / scale
    return scale * (  # type: ignore[no-any-return]
        z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / math.sqrt(math.pi)
    )


def crps_student(y: np.ndarray, loc: np.ndarray, scale: np.ndarray, df: np.ndarray) -> np.ndarray:
    """CRPS of a location-scale Student-t (df > 1) at y:

    scale [z (2 F(z) - 1) + 2 f(z) (df + z^2) / (df - 1)
           - 2 sqrt(df) B(1/2, df - 1/2) / ((df - 1) B(1/2, df/2)^2)]."""
    nu = np.asarray(df, np.float64)
    if (nu <= 1).any():
        raise ValueError("the CRPS of a Student-t needs df > 1")
    z = (np.asarray(y) - loc) / scale
    tail = (
        2 * np.sqrt(nu) * special.beta(0.5, nu - 0.5) / ((nu - 1) * special.beta(0.5, nu / 2) ** 2)
    )
    return scale * (  # type: ignore[no-any-return]
        z * (2 * stats.t.cdf(z, nu) - 1) + 2 * stats.t.pdf(z, nu) * (nu + z**2) / (nu - 1) - tail
    )


def pinball(y: np.ndarray, quantile: np.ndarray, q: float) -> float:
    """Mean pinball (quantile) loss of the ``q`` quantile forecasts."""
    diff = np.asarray(y) - quantile
    return float(np.mean(np.maximum(q * diff, (q - 1) * diff)))


def scores(prediction: Prediction, y: np.ndarray) -> dict[str, float]:
    """CRPS, pinball at 5/25/50/75/95% and the central 90% interval's coverage."""
    out = {"crps": float(prediction.crps(y).mean())}
    for q in (0.05, 0.25, 0.5, 0.75, 0.95):
        out[f"pinball_{round(q * 100):02d}"] = pinball(y, prediction.quantile(q), q)
    low, high = prediction.quantile(0.05), prediction.quantile(0.95)
    out["coverage90"] = float(np.mean((y >= low) & (y <= high)))
    return out
