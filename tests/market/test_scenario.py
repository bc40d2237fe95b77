"""Scenarios: validated TOML, reproducible communities, the planner, the quality figures."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from market.dispatch import dispatch, efficiency, grid_cost, jain_index, optimum
from market.profiles import load_shape, pv_shape
from market.scenario import NAMED, Scenario


def test_the_named_scenarios_load_and_their_counts_add_up() -> None:
    assert set(NAMED) >= {"small", "default", "storage-rich", "10k"}
    for name in NAMED:
        scenario = Scenario.load(name)
        assert sum(scenario.counts().values()) == scenario.agents
    assert Scenario.load("10k").agents == 10_000


def test_bad_scenarios_are_refused_with_the_reason(tmp_path) -> None:  # type: ignore[no-untyped-def]
    base = Scenario.load("small").model_dump()
    with pytest.raises(ValidationError, match="sum to 1"):
        Scenario.model_validate(
            base | {"types": {"consumer": {"share": 0.5, "annual_kwh": [1, 2]}}}
        )
    with pytest.raises(ValidationError, match="low <= high"):
        Scenario.model_validate(
            base | {"types": {"consumer": {"share": 1.0, "annual_kwh": [5, 2]}}}
        )
    with pytest.raises(ValidationError, match="export"):
        Scenario.model_validate(base | {"tariff": {"export": 400_000}})
    with pytest.raises(ValidationError):
        Scenario.model_validate(base | {"unknown": 1})
    with pytest.raises(ValueError, match="named ones are"):
        Scenario.load("nowhere")


def test_profiles_come_from_demandlib_and_pvlib() -> None:
    year = load_shape("h0", 2025, 0, 365, 96)
    assert year.sum() == pytest.approx(1.0, rel=1e-6)  # a year of the profile is the annual kWh
    midsummer = pv_shape(2, 171, 1, 96)  # south-facing, Wh per kWp
    assert 2000 < midsummer.sum() < 8000
    assert midsummer[:16].sum() == 0 and midsummer[44:56].min() > 0  # dark at night, sunny at noon
    np.testing.assert_allclose(pv_shape(2, 171, 1, 24), midsummer.reshape(24, 4).sum(axis=1))


def test_the_same_seed_realises_the_same_community() -> None:
    scenario = Scenario.load("small")
    one = scenario.realise(np.random.default_rng(5))
    two = scenario.realise(np.random.default_rng(5))
    np.testing.assert_array_equal(one.load_wh, two.load_wh)
    np.testing.assert_array_equal(one.pv_wh, two.pv_wh)
    assert one.agent_types == two.agent_types and len(one.batteries) == 10


def test_the_planner_with_a_perfect_market_comes_close_to_the_optimum() -> None:
    community = Scenario.load("small").realise(np.random.default_rng(1))
    best = optimum(community)
    selfish, planned = dispatch(community, "selfish"), dispatch(community, "meanfield")
    charge = community.demand_charge_per_wh()

    def pooled(net: np.ndarray, wear: float) -> float:  # every surplus meets a need in the slot
        total = net.sum(axis=0)
        return float(
            grid_cost(total[None, :], community.import_price, community.export_price)[0]
            + wear
            + charge * np.clip(total, 0, None).max()
        )

    grid_only = float(
        grid_cost(selfish.net_wh, community.import_price, community.export_price).sum()
    )
    grid_only += (
        selfish.degradation_msat.sum() + charge * np.clip(selfish.net_wh, 0, None).sum(0).max()
    )
    assert best.cost_msat <= pooled(planned.net_wh, planned.degradation_msat.sum()) + 1
    planned_eff = efficiency(
        grid_only, pooled(planned.net_wh, planned.degradation_msat.sum()), best.cost_msat
    )
    selfish_eff = efficiency(
        grid_only, pooled(selfish.net_wh, selfish.degradation_msat.sum()), best.cost_msat
    )
    assert planned_eff > 0.9 > selfish_eff


def test_quality_figures_on_known_inputs() -> None:
    assert jain_index(np.array([1.0, 1.0, 1.0, 1.0])) == 1.0
    assert jain_index(np.array([1.0, 0.0, 0.0, 0.0])) == 0.25
    assert jain_index(np.array([2.0, -5.0])) == 0.5  # the loser counts as 0
    assert efficiency(100.0, 40.0, 20.0) == 0.75
    cost = grid_cost(
        np.array([[1000, -1000]]), np.array([300_000, 300_000]), np.array([80_000, 80_000])
    )
    assert cost.tolist() == [300_000 - 80_000]
