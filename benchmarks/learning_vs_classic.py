"""Learning against the classics, from a fixed seed: forecasts first.

Forecasts (``agents/forecast.py``): a community of the ``--scenario`` members over ``--days``
days of history from the scenario generator (the same members, fresh weather, activity and
appliance runs each day), the last ``--test-days`` held out. The heteroscedastic Student-t model
and its Gaussian baseline are trained by NLL on the rest with the same network, seed and epochs,
and scored on the held-out days:

- ``crps_improvement``: 1 - CRPS(Student-t) / CRPS(Gaussian), closed-form CRPS;
- ``coverage90`` (Student-t) and ``coverage90_gaussian``: share of outcomes inside the central
  90% interval;
- ``pinball``: mean pinball loss at 5/25/50/75/95% for both;
- ``train_s`` and ``steps_per_s`` (optimiser steps of 4,096 samples, 2-core CPU).

Tabular (``agents/tabular.py``): mean-field Q-learning with softmax smoothing on two beach bar
games, 300 iterations of 100,000 simulated next states per (t, s, a), against the engine's
online mirror descent on the same game: ``exploitability`` (exact, of the learned population),
``engine_exploitability``, ``policy_gap`` (largest difference of action probabilities) and
``seconds``.

Mean-field actor-critic (``agents/mfac.py``): the shared policy trained for ``--ac-days`` days of
``small`` with three seeds, scored on five held-out days (mean reward per member per day, sat
saved against the grid alone) beside the untrained policy and the truthful baseline (limit at
one's reservation, everything offered: the community's best, since payments between members
cancel); ``updates_per_s`` counts slots of the whole population. MF-MADDPG (``agents/maddpg.py``)
likewise, for ``--maddpg-days`` days.

Environment (``agents/env.py``): ``env_steps_per_s`` and ``env_member_steps_per_s`` of the
vectorised market on ``default`` (1,000 members) over one day of random actions.

    python benchmarks/learning_vs_classic.py --json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from agents.env import MarketCore
from agents.forecast import Forecaster, history, scores, split
from agents.maddpg import MeanFieldMADDPG
from agents.mfac import MeanFieldActorCritic, evaluate, truthful
from agents.tabular import mean_field_q_learning
from market import Scenario
from market.mfg import beach_bar, online_mirror_descent


def forecasts(
    scenario: str, days: int, test_days: int, epochs: int, seed: int
) -> dict[str, object]:
    """Train both forecasters on the same history; score them on the held-out days."""
    spec = Scenario.load(scenario).model_copy(update={"days": days, "first_day": "05-01"})
    community = spec.realise(np.random.default_rng(seed))
    train, test = split(history(community, horizon=4), test_days)
    out: dict[str, object] = {
        "scenario": scenario,
        "members": community.agents,
        "train_samples": len(train),
        "test_samples": len(test),
    }
    result = {}
    for family in ("gaussian", "student"):
        start = time.perf_counter()
        model = Forecaster(family, seed=seed).fit(train, epochs=epochs)  # type: ignore[arg-type]
        took = time.perf_counter() - start
        steps = epochs * -(-len(train) // 4096)
        result[family] = scores(model.predict(test.features), test.target.astype(np.float64))
        out[f"train_s_{family}"] = round(took, 2)
        out[f"steps_per_s_{family}"] = round(steps / took, 1)
    student, gaussian = result["student"], result["gaussian"]
    out["crps_student"] = round(student["crps"], 6)
    out["crps_gaussian"] = round(gaussian["crps"], 6)
    out["crps_improvement"] = round(1 - student["crps"] / gaussian["crps"], 4)
    out["coverage90"] = round(student["coverage90"], 4)
    out["coverage90_gaussian"] = round(gaussian["coverage90"], 4)
    out["pinball"] = {
        family: {k[8:]: round(v, 6) for k, v in r.items() if k.startswith("pinball_")}
        for family, r in result.items()
    }
    return out


def tabular(seed: int) -> dict[str, object]:
    """The tabular learner against the engine on two beach bar games."""
    out: dict[str, object] = {}
    for game in (beach_bar(), beach_bar(horizon=5, n=10, bar=4)):
        engine = online_mirror_descent(game, 300)
        start = time.perf_counter()
        learned = mean_field_q_learning(game, 300, samples=100_000, rng=np.random.default_rng(seed))
        out[game.name + f", T={game.horizon}"] = {
            "exploitability": float(f"{learned.exploitability[-1]:.3g}"),
            "engine_exploitability": float(f"{engine.exploitability[-1]:.3g}"),
            "policy_gap": float(f"{np.abs(learned.policy - engine.policy).max():.3g}"),
            "seconds": round(time.perf_counter() - start, 2),
        }
    return out


def learned(kind: type[MeanFieldActorCritic | MeanFieldMADDPG], days: int) -> dict[str, object]:
    """Train the shared policy with three seeds; score on held-out days."""
    scenario = Scenario.load("small")
    held_out = [1, 2, 3, 4, 5]
    trained, initial, took = [], [], 0.0
    for seed in (0, 1, 2):
        learner = kind(seed=seed)
        initial.append(evaluate(learner.act, scenario, held_out)[0])
        start = time.perf_counter()
        learner.train(scenario, days, first_seed=1000 + 100 * seed)
        took += time.perf_counter() - start
        trained.append(evaluate(learner.act, scenario, held_out)[0])
    best, _ = evaluate(truthful, scenario, held_out)
    return {
        "days": days,
        "held_out_reward": round(float(np.mean(trained)), 1),
        "held_out_reward_sd_over_seeds": round(float(np.std(trained)), 1),
        "untrained_reward": round(float(np.mean(initial)), 1),
        "truthful_reward": round(best, 1),
        "train_s_per_seed": round(took / 3, 1),
        "updates_per_s": round(3 * days * 96 / took, 1),
    }


def environment(seed: int) -> dict[str, float]:
    """Slots per second of the vectorised market, 1,000 members, random actions."""
    core = MarketCore(Scenario.load("default").realise(np.random.default_rng(seed)))
    rng = np.random.default_rng(seed)
    core.reset()
    start, steps, done = time.perf_counter(), 0, False
    while not done:
        _, _, done = core.step(rng.random((core.members, 2)))
        steps += 1
    took = time.perf_counter() - start
    return {
        "env_steps_per_s": round(steps / took, 1),
        "env_member_steps_per_s": round(steps * core.members / took),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="small")
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--test-days", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--ac-days", type=int, default=60)
    parser.add_argument("--maddpg-days", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    result = {
        "seed": args.seed,
        "forecast": forecasts(args.scenario, args.days, args.test_days, args.epochs, args.seed),
    }
    forecast = result["forecast"]
    assert isinstance(forecast, dict)
    result["crps_improvement"] = forecast["crps_improvement"]
    result["coverage90"] = forecast["coverage90"]
    result["tabular"] = tabular(args.seed)
    result["mf_ac"] = learned(MeanFieldActorCritic, args.ac_days)
    result["mf_maddpg"] = learned(MeanFieldMADDPG, args.maddpg_days)
    result["environment"] = environment(args.seed)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in forecast.items():
            print(f"{key:<22}{value}")
        for part in ("tabular", "mf_ac", "mf_maddpg", "environment"):
            for key, value in result[part].items():  # type: ignore[attr-defined]
                print(f"{key:<22}{value}")


if __name__ == "__main__":
    main()
