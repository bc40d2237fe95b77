"""MF-MADDPG: its exploration noise, its replay buffer, and learning on the market."""

from __future__ import annotations

import numpy as np

from agents.env import evaluate, truthful
from agents.maddpg import MeanFieldMADDPG, OrnsteinUhlenbeck, Replay
from market import Scenario


def test_ornstein_uhlenbeck_noise_is_correlated_and_mean_reverting() -> None:
    noise = OrnsteinUhlenbeck((20_000,), np.random.default_rng(0), theta=0.15, sigma=0.2)
    draws = np.array([noise.sample() for _ in range(200)])
    stationary = 0.2**2 / (1 - 0.85**2)  # variance of x' = 0.85 x + 0.2 eps
    assert abs(draws[-1].var() - stationary) < 0.05 * stationary
    lag = np.corrcoef(draws[-2], draws[-1])[0, 1]
    assert abs(lag - 0.85) < 0.02  # one slot apart, the noise remembers
    noise.reset()
    assert not noise.x.any()


def test_the_replay_buffer_wraps_around_and_samples_what_it_holds() -> None:
    replay = Replay(capacity=5, features=2)
    for k in range(3):  # 3 slots of 2 members: 6 rows into 5
        obs = np.full((2, 2), k, np.float32)
        replay.add(obs, np.zeros((2, 2)), np.zeros((2, 2)), np.full(2, k), obs + 1, k == 2)
    assert replay.size == 5
    assert sorted(replay.reward.tolist()) == [0, 1, 1, 2, 2]  # the oldest row was overwritten
    obs, *_, done = replay.sample(64, np.random.default_rng(0))
    assert obs.shape == (64, 2) and set(done.tolist()) <= {0.0, 1.0}


def test_a_short_training_run_learns_to_trade() -> None:
    scenario = Scenario.load("small").model_copy(update={"agents": 60})
    held_out = [1, 2, 3]
    learner = MeanFieldMADDPG(seed=0, batch=512, warm_start=False)
    before, _ = evaluate(learner.act, scenario, held_out)
    learner.train(scenario, 10)
    after, _ = evaluate(learner.act, scenario, held_out)
    best, _ = evaluate(truthful, scenario, held_out)
    assert after > 1.3 * before and after <= best * (1 + 1e-6)  # here it learns the best
