"""``negotiator train``: train a shared policy on a scenario, score it, save it, plot its curve.

Kept beside the learners (the CLI only parses options and draws the progress bar). A run trains
the learner (:class:`agents.mfac.MeanFieldActorCritic` or :class:`agents.maddpg.MeanFieldMADDPG`)
on ``days`` fresh days of the scenario, scores the trained policy in the training environment on
held-out days against the same members trading classically, writes the policy
(:mod:`agents.learned`) and, when
asked, a PNG of the learning curve.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.env import evaluate, truthful
from agents.learned import LearnedPolicy
from agents.maddpg import MeanFieldMADDPG
from agents.mfac import MeanFieldActorCritic
from market.scenario import Scenario

ALGOS = ("mf-ac", "mf-maddpg")
HELD_OUT = (1, 2, 3)
"""Seeds of the held-out days (training days are seeds 1000 + 100 seed + k: never these)."""


def learner(algo: str, seed: int) -> MeanFieldActorCritic | MeanFieldMADDPG:
    """A fresh learner of ``algo``; ValueError lists the choices otherwise."""
    if algo == "mf-ac":
        return MeanFieldActorCritic(seed=seed)
    if algo == "mf-maddpg":
        return MeanFieldMADDPG(seed=seed)
    raise ValueError(f"unknown algorithm {algo!r}; choose from {list(ALGOS)}")


def train_policy(
    algo: str,
    scenario: str,
    days: int,
    seed: int,
    *,
    share: float = 0.5,
    on_day: Callable[[int, float], None] | None = None,
) -> tuple[LearnedPolicy, dict[str, Any]]:
    """Train a ``share`` of the members among classic traders (the rest), then score them on
    the held-out days against the same members trading classically; the policy and a
    summary."""
    if days < 1:
        raise ValueError("train for at least one day")
    if not 0 < share <= 1:
        raise ValueError("the learners' share is in (0, 1]")
    spec = Scenario.load(scenario)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = learner(algo, seed)
    start = time.perf_counter()
    curve = model.train(spec, days, first_seed=1000 + 100 * seed, on_day=on_day, share=share)
    took = time.perf_counter() - start
    policy = LearnedPolicy.of(
        model.actor,
        algo,
        scenario=spec.name,
        days=days,
        seed=seed,
        share=share,
        curve=tuple(curve),
    )
    kept_day, kept_score = max(model.validation, key=lambda check: check[1])
    held, held_sd = evaluate(policy, spec, list(HELD_OUT), share)
    classic, _ = evaluate(truthful, spec, list(HELD_OUT), share)
    summary = {
        "algo": algo,
        "scenario": spec.name,
        "members": spec.agents,
        "days": days,
        "seed": seed,
        "share": share,
        "train_s": round(took, 1),
        "slots_per_s": round(days * spec.slots / took, 1),
        "first_day_reward": round(curve[0], 1),
        "last_day_reward": round(curve[-1], 1),
        "validation": [[day, round(score, 1)] for day, score in model.validation],
        "kept_after_day": kept_day,
        "kept_validation_reward": round(kept_score, 1),
        "held_out_reward": round(held, 1),
        "held_out_reward_sd": round(held_sd, 1),
        "classic_reward": round(classic, 1),
    }
    return policy, summary


def plot_curve(
    policy: LearnedPolicy,
    path: Path,
    classic_reward: float | None = None,
    validation: Sequence[Sequence[float]] = (),
) -> None:
    """The learning curve: the learners' reward per member per training day (exploring), its
    running mean over a week, the deterministic policy's reward on the validation days at
    each check (``(day, reward)`` pairs) and what the same members save on held-out days
    trading classically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = np.asarray(policy.curve, np.float64)
    days = np.arange(1, curve.size + 1)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(days, curve, color="#9ab", lw=1, label="day")
    window = 7
    if curve.size >= 2 * window:
        running = np.convolve(curve, np.ones(window) / window, mode="valid")
        ax.plot(days[window - 1 :], running, color="#147", lw=2, label="running mean (7 days)")
    if validation:
        checks = np.asarray(validation, np.float64)
        ax.plot(checks[:, 0], checks[:, 1], "o-", color="#2a7", lw=1.5, label="validation days")
    if classic_reward is not None:
        ax.axhline(classic_reward, color="#c63", ls="--", label="classic, held-out days")
    ax.set_xlabel("training day")
    ax.set_ylabel("sat saved per member per day")
    ax.set_title(
        f"{policy.algo} on {policy.scenario}, seed {policy.seed},"
        f" {policy.share:.0%} of the members learning"
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
