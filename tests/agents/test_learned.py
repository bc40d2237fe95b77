"""Learned policies: the shared observation, the policy file, deviations, the live trader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.env import Deviation, MarketCore, classic_days, evaluate, learners, truthful
from agents.learned import LearnedPolicy
from agents.maddpg import MeanFieldMADDPG
from agents.mfac import MeanFieldActorCritic
from agents.nets import imitate
from agents.observe import OBSERVATION, anchors, decode, features
from market import MeanFieldService, Scenario
from negotiator.messages import PopulationReport, TradeReport


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return Scenario.load("small").model_copy(update={"agents": 40})


def test_features_read_the_mean_field_the_way_a_trader_sees_it() -> None:
    service = MeanFieldService()
    # three reporters: two buyers of 1 and 3 kWh, one seller of 2 kWh
    service.handle(
        PopulationReport.of(5, ["a", "b"], [0, 0, 1], [1000, 3000, -2000], [300_000] * 3)
    )
    view = service.snapshot()
    service.handle(TradeReport(5, [200_000], [1000]))
    view = service.snapshot()
    obs = features(
        view, ["a", "b"], np.array([1, 0]), np.array([-500, 2500]), 300_000, 100_000, 12, 48
    )
    assert obs.shape == (2, len(OBSERVATION)) and obs.dtype == np.float32
    np.testing.assert_allclose(obs[:, 0], [-0.5, 2.5])
    np.testing.assert_allclose(obs[0, 1:5], [0.3, 0.1, 1.0, 0.0], atol=1e-6)  # noon of 48 slots
    np.testing.assert_allclose(obs[0, 5:8], [2 / 3, 4 / 3, 2 / 3], rtol=1e-6)
    assert obs[0, 9] == pytest.approx(0.5)  # the trade at 200,000: halfway from 100k to 300k
    advice = view.guidance
    assert obs[1, 8] == pytest.approx((advice["a"].price - 100_000) / 200_000, rel=1e-5)
    np.testing.assert_allclose(obs[:, 10], [-1, 1])  # selling, buying
    np.testing.assert_allclose(obs[:, 11], (2 - 4) / 6, rtol=1e-6)  # supply short of demand
    empty = features(None, ["a"], np.zeros(1, int), np.array([10]), 300_000, 100_000, 0, 24)
    np.testing.assert_allclose(empty[0, 5:], [0, 0, 0, 0.5, 0.5, 1, 0])


def test_the_environment_shows_the_previous_slots_offers_as_a_live_view_would(scenario) -> None:  # type: ignore[no-untyped-def]
    core = MarketCore(scenario.realise(np.random.default_rng(3)))
    first = core.reset()
    assert (first[:, 5:8] == 0).all()  # nothing reported yet, as a live run's first view
    actions = np.tile([1.0, 1.0], (core.members, 1))
    actions[::2, 1] = 0.0  # half the members offer nothing: they are not in the next view
    obs, _, _ = core.step(actions)
    net = core.positions[:, 0]
    offering = (np.arange(core.members) % 2 == 1) & (net != 0)
    assert obs[0, 5] == pytest.approx((net[offering] > 0).mean())
    assert obs[0, 6] == pytest.approx(np.clip(net[offering], 0, None).sum() / 1000 / offering.sum())


def test_decoded_actions_reach_both_ends_exactly() -> None:
    np.testing.assert_allclose(decode(np.array([0.0, 0.03, 0.5, 0.97, 1.0])), [0, 0, 0.5, 1, 1])


def test_a_deviating_group_sees_its_own_members_while_the_rest_follow_the_policy(scenario) -> None:  # type: ignore[no-untyped-def]
    community = scenario.realise(np.random.default_rng(4))
    group = learners(community.agents, 0.25, 4)
    assert group.sum() == 10 and (group == learners(community.agents, 0.25, 4)).all()
    alone, deviation = MarketCore(community), Deviation(MarketCore(community), truthful, group)
    full, mine = alone.reset(), deviation.reset()
    np.testing.assert_array_equal(mine, full[group])
    done = False
    while not done:  # the group also plays truthful: the same market as everyone truthful
        full, rewards, done = alone.step(truthful(full))
        mine, mine_rewards, _ = deviation.step(truthful(mine))
        np.testing.assert_allclose(mine_rewards, rewards[group])
    with pytest.raises(ValueError, match="non-empty"):
        Deviation(alone, truthful, np.zeros(community.agents, bool))


@pytest.mark.parametrize("kind", [MeanFieldActorCritic, MeanFieldMADDPG])
def test_a_saved_policy_acts_as_its_learner_did(kind, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    learner = kind(seed=3)
    obs = np.random.default_rng(0).normal(size=(50, len(OBSERVATION))).astype(np.float32)
    policy = LearnedPolicy.of(
        learner.actor, "x", scenario="small", days=2, share=0.5, curve=(1.0, 2.0)
    )
    np.testing.assert_allclose(policy(obs), learner.act(obs), atol=1e-5)
    policy.save(tmp_path / "p.pt")
    loaded = LearnedPolicy.load(tmp_path / "p.pt")
    np.testing.assert_allclose(loaded(obs), learner.act(obs), atol=1e-5)
    assert (loaded.scenario, loaded.days, loaded.share, loaded.curve) == (
        "small",
        2,
        0.5,
        (1.0, 2.0),
    )


def test_a_policy_file_that_is_not_one_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no policy file"):
        LearnedPolicy.load(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a policy file"):
        LearnedPolicy.load(garbage)
    import torch

    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="negotiator-policy"):
        LearnedPolicy.load(tmp_path / "other.pt")


def test_the_trader_rule_maps_actions_as_the_environment_does() -> None:
    learner = MeanFieldActorCritic(seed=1)
    policy = LearnedPolicy.of(learner.actor, "mf-ac")
    rule = policy.rule(96)
    for net in (-3000, 250, 4000):
        limit, quantity = rule(40, "consumer", net, 300_000, 80_000, None)
        obs = features(
            None, ["consumer"], np.zeros(1, int), np.array([net]), 300_000, 80_000, 40, 96
        )
        a = decode(policy(obs))[0]
        assert limit == round(80_000 + a[0] * 220_000) and 80_000 <= limit <= 300_000
        assert quantity == int(a[1] * abs(net)) and 0 <= quantity <= abs(net)
    # a new view (the next slot's snapshot) is read afresh, not from the last one's features
    service = MeanFieldService()
    service.handle(PopulationReport.of(40, ["consumer"], [0, 0], [900, -4000], [300_000, 80_000]))
    view = service.snapshot()
    limit, quantity = rule(40, "consumer", 250, 300_000, 80_000, view)
    obs = features(view, ["consumer"], np.zeros(1, int), np.array([250]), 300_000, 80_000, 40, 96)
    assert obs[0, 5] == pytest.approx(0.5) and obs[0, 7] > 0  # the view's mean field is in it
    a = decode(policy(obs))[0]
    assert (limit, quantity) == (round(80_000 + a[0] * 220_000), int(a[1] * 250))


def test_anchors_are_the_types_guidance_else_the_recent_price_else_none() -> None:
    assert np.isnan(anchors(None, ["a"], np.zeros(2, int))).all()
    service = MeanFieldService()
    service.handle(TradeReport(0, [150_000], [500]))
    only_trades = service.snapshot()  # no positions yet: no guidance, a recent price
    np.testing.assert_allclose(anchors(only_trades, ["a"], np.zeros(2, int)), [150_000] * 2)
    service.handle(PopulationReport.of(1, ["a", "b"], [0, 1], [2000, -3000], [300_000, 80_000]))
    view = service.snapshot()
    out = anchors(view, ["a", "b", "c"], np.array([0, 1, 2]))
    assert out[0] == pytest.approx(view.guidance["a"].price)
    assert out[1] == pytest.approx(view.guidance["b"].price)
    assert out[2] == 150_000  # a type the service has not seen: the recent price


def test_a_warm_start_begins_where_the_classic_traders_are(scenario) -> None:  # type: ignore[no-untyped-def]
    learner = MeanFieldMADDPG(seed=0)
    obs = classic_days(scenario, [998])
    imitate(learner.actor[0], obs, truthful(obs), steps=300)
    held_out = [1, 2]
    classic, _ = evaluate(truthful, scenario, held_out, 0.5)
    warm, _ = evaluate(learner.act, scenario, held_out, 0.5)
    assert warm == pytest.approx(classic, rel=0.02)
