"""The training environment: PettingZoo's API, the clearing rules, the shared device models."""

from __future__ import annotations

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

from agents.env import MarketCore, MarketEnv, clear, meeting_price
from agents.observe import OBSERVATION, decode
from market import Scenario, dispatch


@pytest.fixture(scope="module")
def community():  # type: ignore[no-untyped-def]
    return Scenario.load("small").realise(np.random.default_rng(1))


def test_the_environment_passes_pettingzoos_parallel_api_test(community) -> None:  # type: ignore[no-untyped-def]
    env = MarketEnv(community)
    parallel_api_test(env, num_cycles=200)
    obs, _ = env.reset(seed=0)
    assert len(obs) == community.agents and obs["member_0"].shape == (len(OBSERVATION),)
    assert env.state().shape == (community.agents * len(OBSERVATION),)
    np.testing.assert_array_equal(
        env.state(), np.concatenate([obs[a] for a in env.possible_agents])
    )
    reports = env.core.service.recomputations
    env.state()
    assert env.core.service.recomputations == reports  # reading the state reports nothing


def test_a_slot_clears_by_price_priority_at_midpoints() -> None:
    bought, paid, sold, earned = clear(
        np.array([300.0, 250.0]),
        np.array([100.0, 100.0]),
        np.array([100.0, 280.0]),
        np.array([150.0, 100.0]),
    )
    # 100 units at (300 + 100) / 2, then 50 at (250 + 100) / 2; 250 does not cover 280
    assert bought.tolist() == [100, 50] and sold.tolist() == [150, 0]
    assert paid.tolist() == pytest.approx([20.0, 8.75]) and earned.sum() == pytest.approx(28.75)
    none = clear(np.array([90.0]), np.array([10.0]), np.array([100.0]), np.array([10.0]))
    assert none[0].sum() == 0 and none[2].sum() == 0


def test_trading_saves_exactly_what_the_matched_units_save_against_the_grid(community) -> None:  # type: ignore[no-untyped-def]
    core = MarketCore(community)
    np.testing.assert_array_equal(core.positions, dispatch(community, "meanfield").net_wh)
    core.reset()
    silent = np.tile([0.5, 0.0], (core.members, 1))  # offers nothing: the grid alone
    _, rewards, _ = core.step(silent)
    assert np.abs(rewards).max() == 0
    rng = np.random.default_rng(2)
    for t in range(1, core.slots):
        net = core.positions[:, t]
        actions = rng.random((core.members, 2))
        _, rewards, done = core.step(actions)
        # transfers cancel: the community saves (import - export) on every matched unit
        a = decode(actions)
        limit = core.export_price[t] + a[:, 0] * (core.import_price[t] - core.export_price[t])
        offered = np.floor(a[:, 1] * np.abs(net))
        b, s = net > 0, net < 0
        traded = clear(limit[b], offered[b], limit[s], offered[s])[0].sum()
        spread = core.import_price[t] - core.export_price[t]
        assert rewards.sum() == pytest.approx(traded * spread / 1e6, rel=1e-4, abs=1e-6)
        assert done == (t == core.slots - 1)
    with pytest.raises(RuntimeError, match="reset"):
        core.step(silent)


def test_traders_conceding_along_one_curve_meet_where_their_aspirations_and_limits_say() -> None:
    # a classic pair around a guidance of 200: opens 190 / 210, limits 300 / 100
    price = meeting_price(
        np.array([190.0]), np.array([300.0]), np.array([210.0]), np.array([100.0])
    )
    alpha = 20 / (110 + 110)
    assert price[0] == pytest.approx(190 + alpha * 110) == pytest.approx(200)
    # the same curve for both, whatever it is: the buyer and the seller offer the same at alpha*
    b_open, b_lim, s_open, s_lim = 150.0, 240.0, 260.0, 120.0
    p = meeting_price(*(np.array([v]) for v in (b_open, b_lim, s_open, s_lim)))[0]
    a = (s_open - b_open) / ((b_lim - b_open) + (s_open - s_lim))
    assert p == pytest.approx(s_open - a * (s_open - s_lim))
    # a tougher buyer (lower limit) pays less against the same seller
    tougher = meeting_price(*(np.array([v]) for v in (b_open, 200.0, s_open, s_lim)))[0]
    assert tougher < p
    crossed = meeting_price(
        np.array([220.0]), np.array([300.0]), np.array([200.0]), np.array([100.0])
    )
    assert crossed[0] == 210  # aspirations that already cross: their midpoint
    bought, paid, sold, earned = clear(
        np.array([300.0]),
        np.array([10.0]),
        np.array([100.0]),
        np.array([10.0]),
        np.array([190.0]),
        np.array([210.0]),
    )
    assert bought[0] == sold[0] == 10 and paid[0] == pytest.approx(10 * 200 / 1000) == earned[0]
