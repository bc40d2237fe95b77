"""The energy adapter: the members of a local energy community trade watt-hours.

The traded resource is ``energy`` (one unit a watt-hour, its window the slot; prices in msat per
kWh). Each member (:class:`agents.Trader`) buys its net need or sells its surplus in a slot, its
reservation the tariff (import price to buy, export price to sell); the grid is the outside option
of what it does not trade. Its devices (batteries, flexible loads) run before the market, on the
mean-field planner's guidance (:func:`market.dispatch`). The centralised benchmark is the HiGHS
programme over the realised day (:func:`market.optimum`), and ``efficiency`` is (grid only -
realised) / (grid only - optimum) over the community's whole cost.

The energy composition root (:mod:`negotiator.simulation`: Byzantine members, shards, learned
policies, recovery) builds its runs from the pieces here; :class:`EnergyDomain` is the same
market behind the generic :class:`negotiator.domain.Domain` interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from agents import Trader
from agents.population import member_strategies
from market import (
    NAMED,
    Community,
    CommunitySpec,
    Dispatch,
    EnergyCommunity,
    Scenario,
    TimeOfUseTariff,
    demand_shares,
    dispatch,
    efficiency,
    grid_cost,
    jain_index,
    optimum,
)
from negotiator.domain import DomainMarket, Trade


def realise(
    name: str, market: str, rng: np.random.Generator
) -> tuple[EnergyCommunity, Dispatch, Community, TimeOfUseTariff]:
    """Realise the scenario ``name`` and run its devices (``market`` ``naive``: selfishly,
    else on the mean-field planner): the members' positions become the traders'."""
    scenario = Scenario.load(name)
    energy = scenario.realise(rng)
    devices = dispatch(energy, "selfish" if market == "naive" else "meanfield")
    tariff = scenario.tou()
    spec = CommunitySpec(
        agents=scenario.agents, slots=scenario.slots, slots_per_day=scenario.slots_per_day
    )
    load = np.rint(energy.load_wh).astype(np.int64)
    community = Community(spec, energy.agent_types, load, load - devices.net_wh, devices.net_wh)
    return energy, devices, community, tariff


def accounts(
    net_wh: np.ndarray, peak: int, members: Sequence[int]
) -> tuple[dict[int, int], dict[int, int]]:
    """What each member starts with on the rail (its whole need at the peak price, twice, with
    room to spare) and the inbound room it needs to be paid for its whole surplus."""
    need_wh = np.clip(net_wh, 0, None).sum(axis=1)
    funding = need_wh * peak // 1000 * 2 + 1_000_000
    surplus_wh = np.clip(-net_wh, 0, None).sum(axis=1)
    inbound = surplus_wh * peak // 1000 * 2 + 1_000_000
    return {i: int(funding[i]) for i in members}, {i: int(inbound[i]) for i in members}


def quality(
    c: EnergyCommunity,
    d: Dispatch,
    selfish: Dispatch,
    member_msat: np.ndarray,
    member_import_wh: np.ndarray,
    slot_import_wh: np.ndarray,
    slot_prices: np.ndarray,
    market: str,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Market quality of a day, the way the field measures it, and the reference imports per
    slot (grid only, optimum) for the report.

    ``member_msat`` is what each member paid net of what it earned (grid and peers). Costs are
    the community's: energy at the tariff (peer payments are transfers and cancel), battery
    wear, the demand charge on the day's highest import, and what the batteries owe the next day
    if they end below their start (valued at the plan's carry value; credited if above). Grid
    only is the same community trading nothing with ``selfish`` devices (each battery serves its
    owner, flexible loads run at once). ``efficiency`` = (grid only - realised) / (grid only -
    optimum), the optimum being the HiGHS programme on the realised day. ``jain_index`` is over
    members' gains against grid only (members worse off count as 0).
    """
    charge = c.demand_charge_per_wh()
    alone = np.clip(selfish.net_wh, 0, None)
    go_import = alone.sum(axis=0)
    go_member = grid_cost(selfish.net_wh, c.import_price, c.export_price)
    go_member += selfish.degradation_msat
    go_member += demand_shares(alone.sum(axis=1), charge * float(go_import.max()))
    imports = np.asarray(slot_import_wh, np.float64)
    peak = float(imports.max()) if imports.size else 0.0
    member = np.asarray(member_msat, np.float64) + d.degradation_msat
    member += d.carry_msat  # batteries that end the day emptier than they started owe it
    member += demand_shares(np.asarray(member_import_wh, np.float64), charge * peak)
    best = optimum(c)
    reference = {
        "grid import, grid only": go_import.astype(np.float64),
        "grid import, optimum": best.grid_import_wh,
    }
    grid_only, realised = float(go_member.sum()), float(member.sum())
    prices = np.asarray(slot_prices, np.float64)
    load = float(c.load_wh.sum() + d.flexible_wh.sum())
    per_type = {
        name: round(float(member[c.type_code == k].mean()) / 1000, 1)
        for k, name in enumerate(c.type_names)
        if (c.type_code == k).any()
    }
    return {
        "scenario": c.scenario.name,
        "market": market,
        "efficiency": round(efficiency(grid_only, realised, best.cost_msat), 4),
        "cost_msat": round(realised),
        "optimum_cost_msat": round(best.cost_msat),
        "grid_only_cost_msat": round(grid_only),
        "peak_import_wh": round(peak),
        "grid_only_peak_import_wh": int(go_import.max()),
        "optimum_peak_import_wh": round(best.peak_wh),
        "peak_reduction": round(1 - peak / float(go_import.max()), 4) if go_import.max() else 0.0,
        "jain_index": round(jain_index(go_member - member), 4),
        "price_volatility": round(float(prices.std() / prices.mean()), 4) if prices.size else 0.0,
        "self_sufficiency": round(1 - float(imports.sum()) / load, 4) if load else 0.0,
        "cost_per_member_sat": per_type,
    }, reference


def settled_day(
    net_wh: np.ndarray, import_price: np.ndarray, export_price: np.ndarray, trades: Sequence[Trade]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The day as the settled ``trades`` leave it, members trading their positions ``net_wh``
    (members x slots) and the grid taking the rest: what each member paid net of what it earned,
    what it imported, the community's import per slot, and the volume-weighted agreed price of
    each slot with trades."""
    bought = np.zeros(net_wh.shape, np.int64)
    sold = np.zeros(net_wh.shape, np.int64)
    paid = np.zeros(net_wh.shape[0], np.int64)
    volume = np.zeros(net_wh.shape[1], np.int64)
    amount = np.zeros(net_wh.shape[1], np.int64)
    for t in trades:
        bought[t.buyer, t.slot] += t.quantity
        sold[t.seller, t.slot] += t.quantity
        paid[t.buyer] += t.amount_msat
        paid[t.seller] -= t.amount_msat
        volume[t.slot] += t.quantity
        amount[t.slot] += t.amount_msat
    imports = np.clip(np.clip(net_wh, 0, None) - bought, 0, None)
    exports = np.clip(np.clip(-net_wh, 0, None) - sold, 0, None)
    member = paid + (imports * import_price[None, : net_wh.shape[1]] // 1000).sum(axis=1)
    member -= (exports * export_price[None, : net_wh.shape[1]] // 1000).sum(axis=1)
    traded = volume > 0
    prices = amount[traded] * 1000 / volume[traded]
    return member, imports.sum(axis=1), imports.sum(axis=0), prices


class EnergyDomain:
    """The energy adapter (:class:`negotiator.domain.Domain`): a scenario's community on the
    mean-field market, every member an honest trader."""

    name = "energy"
    default = "default"

    def scenarios(self) -> tuple[str, ...]:
        return NAMED

    def market(
        self, scenario: str, rng: np.random.Generator, *, strategy: str, max_rounds: int
    ) -> DomainMarket:
        community_rng, strategy_rng = rng.spawn(2)
        energy, devices, community, tariff = realise(scenario, "meanfield", community_rng)
        n = energy.agents
        strategies = member_strategies(
            strategy,
            n,
            strategy_rng,
            patience=energy.patience,
            risk_aversion=energy.risk_aversion,
        )
        traders = [
            Trader(
                i,
                community.agent_types[i],
                community.net_wh[i].tolist().__getitem__,
                tariff,
                strategies[i],
                max_rounds=max_rounds,
            )
            for i in range(n)
        ]
        funding, inbound = accounts(community.net_wh, tariff.peak, range(n))
        selfish = dispatch(energy, "selfish")

        def measure(trades: Sequence[Trade]) -> dict[str, Any]:
            member, imported, slot_imports, prices = settled_day(
                community.net_wh, energy.import_price, energy.export_price, trades
            )
            out, _ = quality(
                energy, devices, selfish, member, imported, slot_imports, prices, "meanfield"
            )
            return {"domain": self.name, **out}

        return DomainMarket(
            traders,
            community.spec.slots,
            funding,
            inbound,
            measure,
            unit="Wh",
            price_label="sat / kWh",
            price_scale=1000.0,
            span=5000.0,
        )


__all__ = ["EnergyDomain", "accounts", "quality", "realise", "settled_day"]
