"""The energy adapter: the community's market quality measured from the settled trades alone
agrees with what the traders themselves booked, and the community runs through the generic
domain interface."""

from __future__ import annotations

from pathlib import Path

import anyio
import numpy as np

from domains import ADAPTERS, adapter
from domains.energy import EnergyDomain, settled_day
from negotiator.domain import Trade
from negotiator.domain_run import DomainConfig, build_domain
from negotiator.simulation import SimulationConfig, build


def test_the_settled_trades_give_the_day_the_traders_booked(tmp_path: Path) -> None:
    sim = build(SimulationConfig(scenario="small", seed=1, rail="inprocess"))
    anyio.run(sim.run)
    trades = [Trade(*row) for row in sim.ledger.settled()]
    sim.close()
    assert sim.energy is not None and trades
    member, imported, slot_imports, prices = settled_day(
        sim.community.net_wh, sim.energy.import_price, sim.energy.export_price, trades
    )
    booked = np.array([t.cost_msat - t.revenue_msat for t in sim.traders])
    # the traders round each grid booking to whole msat; the day rounds once per slot
    assert np.abs(member - booked).max() <= 24 * 1000
    assert (imported == np.array([t.imported_wh for t in sim.traders])).all()
    assert (slot_imports == np.array(sim.slot_import_wh)).all()
    # volume-weighted over amounts (each rounded down to whole msat) against over quoted prices
    assert np.allclose(prices, sim.slot_prices, rtol=5e-3)
    assert (prices <= np.array(sim.slot_prices)).all()


def test_the_community_runs_through_the_domain_interface(tmp_path: Path) -> None:
    assert set(ADAPTERS) >= {"energy", "logistics"}
    domain = adapter("energy")
    assert isinstance(domain, EnergyDomain) and "small" in domain.scenarios()
    run = build_domain(
        DomainConfig(domain="energy", scenario="small", seed=2, rail="inprocess"),
    )
    summary = anyio.run(run.run)
    run.close()
    data = summary.to_dict()
    assert data["domain"] == "energy" and data["unit"] == "Wh" and data["market"] == "meanfield"
    assert data["agreement_rate"] > 0.95 and data["failed_settlements"] == 0
    assert 0.8 < data["efficiency"] <= 1.0  # the planner and the market, near the optimum
    assert data["cost_msat"] < data["grid_only_cost_msat"]
    assert data["traded_units"] > 0
