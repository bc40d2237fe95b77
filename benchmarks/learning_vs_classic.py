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
``seconds``. Nash-Q (``agents/nashq.py``) on the two-coalition game ``coalition_chase``, a grid of
tenths and 10 sweeps, against the engine's coalition fictitious play (2,000 iterations): the
engine's exploitability of the learned equilibrium, the engine's own, and the largest gap in a
coalition's value.

Learners (``agents/mfac.py``, ``agents/maddpg.py``): half the members of ``small`` learn among
classic traders (the other half; ``--ac-days`` / ``--maddpg-days`` training days from random
weights, the actor kept where it did best on two validation days), with three seeds. Scored:

- in the environment on five held-out days: the learners' reward (sat per member per day saved
  against the grid alone) beside the same members' when everyone trades classically;
- ``cost_reduction_vs_boulware``: in the live runtime (``negotiator simulate --scenario small``,
  held-out days 1-3, the in-process rail), the learned half's energy bill (grid and peers) against
  the same members' bill in the same day's run where everyone trades Boulware; 1 - learned /
  Boulware, averaged over days per seed, then mean and spread over the seeds;
- ``exploitability``: everyone on the last seed's policy, a tenth of the members deviate: the
  learner trained on for 15 more days as that tenth (a best response found by learning, from the
  population's policy) and the truthful deviation; the larger gain in sat per deviating member
  per day on the held-out days (0 if neither gains), and relative to the population's reward.

``classic_market``: what the classic market leaves to exploit: half the members shading their
limit only on the short side of the last view (the side with less volume, whose limits set
the price), against the same members trading classically (a hand-made rule), and the same
rule at 0.95 in the live runtime against Boulware on held-out days 1-3 (as
``cost_reduction_vs_boulware``).

Environment (``agents/env.py``): ``env_steps_per_s`` and ``env_member_steps_per_s`` of the
vectorised market on ``default`` (1,000 members) over one day of random actions.

    python benchmarks/learning_vs_classic.py --json
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import numpy as np
import torch

from agents.env import Deviation, MarketCore, evaluate, learners, truthful
from agents.forecast import Forecaster, history, scores, split
from agents.learned import LearnedPolicy
from agents.maddpg import MeanFieldMADDPG
from agents.mfac import MeanFieldActorCritic
from agents.nashq import nash_q
from agents.observe import features
from agents.tabular import mean_field_q_learning
from agents.trader import Limit
from market import Scenario
from market.mfg import (
    average_reward,
    beach_bar,
    coalition_chase,
    multi_exploitability,
    multi_fictitious_play,
    online_mirror_descent,
)
from negotiator.simulation import SimulationConfig, build


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
    chase = coalition_chase()
    start = time.perf_counter()
    nq = nash_q(chase, 10, 10, rng=np.random.default_rng(seed))
    took = time.perf_counter() - start
    engine, history = multi_fictitious_play(chase, 2000, coalitions=True)
    value_gaps = [
        abs(average_reward(chase, nq.policies, k) - average_reward(chase, engine, k))
        for k in (0, 1)
    ]
    out["coalition chase, Nash-Q on a grid of tenths"] = {
        "exploitability": float(
            f"{max(multi_exploitability(chase, nq.policies, coalitions=True)):.3g}"
        ),
        "engine_exploitability": float(f"{history[-1]:.3g}"),
        "value_gap": float(f"{max(value_gaps):.3g}"),
        "mixed_stage_games": nq.mixed,
        "seconds": round(took, 2),
    }
    return out


def live_costs(
    seed: int, strategy: str, rule: Limit | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One live run of ``small`` (simulation seed = held-out day): every member's energy bill
    in sat (grid and peers, paid minus earned) and which members followed a policy. With
    ``rule``, a random half of the members (drawn from the day) price by it."""
    sim = build(SimulationConfig(scenario="small", seed=seed, strategy=strategy, rail="inprocess"))
    if rule is not None:
        chosen = np.random.default_rng([seed, 2]).permutation(len(sim.traders))
        for i in chosen[: len(sim.traders) // 2]:
            sim.traders[i].policy = rule
    try:
        anyio.run(sim.run)
        bill = np.array([t.cost_msat - t.revenue_msat for t in sim.traders], np.float64) / 1000
        return bill, np.array([t.learned for t in sim.traders])
    finally:
        sim.close()


def exploitability(
    learner: MeanFieldActorCritic | MeanFieldMADDPG,
    policy: LearnedPolicy,
    days: int,
    held_out: list[int],
) -> dict[str, float]:
    """The learned population (everyone on ``policy``) against a best-response deviation of a
    tenth of the members: the learner trained on for ``days`` more days as that tenth (it
    starts from the population's policy, so it can only find gains), and the truthful
    deviation; gains in sat per deviating member per day on the held-out days."""
    scenario = Scenario.load("small")
    rng = np.random.default_rng(99)
    br = copy.deepcopy(learner)
    for k in range(days):
        core = MarketCore(scenario.realise(np.random.default_rng(7000 + k)))
        br.train_day(Deviation(core, policy, rng.random(core.members) < 0.1))

    def group_reward(deviant: Callable[[np.ndarray], np.ndarray]) -> float:
        total = 0.0
        for seed in held_out:
            core = MarketCore(scenario.realise(np.random.default_rng(seed)))
            day = Deviation(core, policy, learners(core.members, 0.1, seed))
            obs, done = day.reset(), False
            while not done:
                obs, reward, done = day.step(deviant(obs))
                total += float(reward.mean())
        return total / len(held_out)

    stay = group_reward(policy)
    gains = {
        "best_response": group_reward(br.act) - stay,
        "truthful": group_reward(truthful) - stay,
    }
    return {
        "population_reward": round(stay, 1),
        "gain_best_response": round(gains["best_response"], 1),
        "gain_truthful": round(gains["truthful"], 1),
        "exploitability": round(max(0.0, *gains.values()), 1),
        "exploitability_relative": round(max(0.0, *gains.values()) / abs(stay), 4),
    }


def learned(
    kind: type[MeanFieldActorCritic | MeanFieldMADDPG], algo: str, days: int, folder: Path
) -> dict[str, object]:
    """Train half the members among classic traders with three seeds; score them in the
    environment and in the live runtime against Boulware on held-out days."""
    scenario = Scenario.load("small")
    held_out = [1, 2, 3, 4, 5]
    live_days = [1, 2, 3]
    share = 0.5
    boulware = {day: live_costs(day, "boulware")[0] for day in live_days}
    env_learned, env_classic, reductions, took = [], [], [], 0.0
    policy, learner = None, None
    for seed in (0, 1, 2):
        learner = kind(seed=seed)
        start = time.perf_counter()
        learner.train(scenario, days, first_seed=1000 + 100 * seed, share=share)
        took += time.perf_counter() - start
        policy = LearnedPolicy.of(
            learner.actor, algo, scenario="small", days=days, seed=seed, share=share
        )
        env_learned.append(evaluate(policy, scenario, held_out, share)[0])
        env_classic.append(evaluate(truthful, scenario, held_out, share)[0])
        path = folder / f"{algo}-{seed}.pt"
        policy.save(path)
        for day in live_days:  # the same members' bills, trading Boulware in both runs or not
            mixed, mask = live_costs(day, f"learned:{path}")
            reductions.append(1 - mixed[mask].sum() / boulware[day][mask].sum())
    assert policy is not None and learner is not None
    per_seed = np.array(reductions).reshape(3, len(live_days)).mean(axis=1)
    return {
        "days": days,
        "share": share,
        "cost_reduction_vs_boulware": round(float(per_seed.mean()), 4),
        "cost_reduction_sd_over_seeds": round(float(per_seed.std()), 4),
        "cost_reduction_per_seed": [round(float(v), 4) for v in per_seed],
        "held_out_reward": round(float(np.mean(env_learned)), 1),
        "held_out_reward_sd_over_seeds": round(float(np.std(env_learned)), 1),
        "classic_reward": round(float(np.mean(env_classic)), 1),
        "train_s_per_seed": round(took / 3, 1),
        "updates_per_s": round(3 * days * 96 / took, 1),
        **exploitability(learner, policy, 15, held_out),
    }


def short_side_shading(held_out: list[int]) -> dict[str, object]:
    """How much the classic market leaves to exploit, in the environment: half the members
    shade their limit by ``d`` of the spread, but only on the short side (buyers when the last
    view had more supply than demand, sellers otherwise; a long side that shades loses its
    trades to the truthful), everything offered; their reward against the same members
    trading classically, for d = 0.25, 0.5, 0.75, 0.95."""
    scenario = Scenario.load("small")
    classic, _ = evaluate(truthful, scenario, held_out, 0.5)
    out = {"classic_reward": round(classic, 1)}
    for d in (0.25, 0.5, 0.75, 0.95):

        def shade(obs: np.ndarray, d: float = d) -> np.ndarray:
            buyer, plenty = obs[:, 0] > 0, obs[:, 7] > obs[:, 6]
            limit = np.where(buyer, np.where(plenty, 1 - d, 1.0), np.where(plenty, 0.0, d))
            return np.stack([limit, np.ones(len(obs))], axis=1)

        reward, _ = evaluate(shade, scenario, held_out, 0.5)
        out[f"gain_at_{d}"] = round(reward / classic - 1, 4)
    live = []
    for day in (1, 2, 3):  # the same rule at 0.95 in the live runtime, against Boulware
        mixed, mask = live_costs(day, "boulware", short_side_rule(0.95))
        boulware = live_costs(day, "boulware")[0]
        live.append(round(float(1 - mixed[mask].sum() / boulware[mask].sum()), 4))
    out["live_cost_reduction_at_0.95"] = live
    return out


def short_side_rule(d: float) -> Limit:
    """The short-side shading as a live trader's pricing rule (from the runtime's view)."""

    def rule(slot: int, kind: str, net: int, imp: int, exp: int, view: object) -> tuple[int, int]:
        obs = features(view, (kind,), np.zeros(1, np.intp), np.array([net]), imp, exp, slot, 96)
        shade = d if (obs[0, 7] > obs[0, 6]) == (net > 0) else 0.0  # on the short side only
        share = 1 - shade if net > 0 else shade
        return round(exp + share * (imp - exp)), abs(net)

    return rule


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
    parser.add_argument("--ac-days", type=int, default=40)
    parser.add_argument("--maddpg-days", type=int, default=40)
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
    with tempfile.TemporaryDirectory() as folder:
        result["mf_ac"] = learned(MeanFieldActorCritic, "mf-ac", args.ac_days, Path(folder))
        result["mf_maddpg"] = learned(MeanFieldMADDPG, "mf-maddpg", args.maddpg_days, Path(folder))
    result["classic_market"] = short_side_shading([1, 2, 3, 4, 5])
    result["environment"] = environment(args.seed)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in forecast.items():
            print(f"{key:<22}{value}")
        for part in ("tabular", "mf_ac", "mf_maddpg", "classic_market", "environment"):
            for key, value in result[part].items():  # type: ignore[attr-defined]
                print(f"{key:<22}{value}")


if __name__ == "__main__":
    main()
