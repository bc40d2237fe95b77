"""Composition root: assembles a simulated community run from its configuration.

This is the one kernel module (with the CLI) that knows every package: it draws the community
(market), builds the traders (agents), the rail (payments), the ledger, the mean-field service and
the runtime, and turns the run into a summary.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
from pydantic import ConfigDict, Field

from agents import Trader, strategy
from agents.adversaries import adversary
from agents.population import member_policies, member_strategies, policy_path
from domains.energy import accounts, realise
from domains.energy import quality as energy_quality
from market import (
    Community,
    CommunitySpec,
    Dispatch,
    EnergyCommunity,
    MeanFieldService,
    TimeOfUseTariff,
    board_matcher,
    dispatch,
)
from negotiator.assembly import MEANFIELD, RunSettings, byzantine, members, row
from negotiator.assembly import rail as make_rail
from negotiator.bus import LocalBus
from negotiator.ledger import Ledger
from negotiator.metrics import Exporter, RunMetrics, serving
from negotiator.report import RunTrace, histograms, slot_figures
from negotiator.runtime import RunReport, Runtime, SlotReport
from negotiator.settlement import Rail


class SimulationConfig(RunSettings):
    """Everything that defines a simulated community run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agents: int = Field(1000, ge=2, description="number of prosumers and consumers")
    slots: int = Field(24, ge=1, description="trading slots to run")
    slots_per_day: int = Field(24, ge=1, description="slots in one day (24: hourly)")
    pv_share: float = Field(0.4, ge=0.0, le=1.0, description="share of agents with rooftop PV")
    strategy: str = Field(
        "mixed",
        description="boulware, linear, conceder, mixed, or learned:POLICY.pt (a trained policy"
        " sets limits and quantities; its traders concede along Boulware)",
    )
    learned_share: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="learned runs: share of the members using the policy (None: as trained)",
    )
    scenario: str | None = Field(
        None,
        description="an energy scenario (named or a TOML path): its members, days and tariff"
        " replace agents, slots, slots_per_day and pv_share",
    )
    market: Literal["meanfield", "naive"] = Field(
        "meanfield",
        description="scenario runs: meanfield (devices follow the mean-field planner, traders"
        " read guidance) or naive (devices run selfishly, fixed linear strategy, no guidance)",
    )
    byzantine: str | None = Field(
        None,
        description="Byzantine members: malformed, replay, spam, renege, misreport,"
        " counterfeit, all (each in turn), absent (they sit out: the baseline), honest (the"
        " same members, trading honestly: the control) or ideal-BEHAVIOUR (what an ideal"
        " defence against it would leave)",
    )
    byzantine_share: float = Field(
        0.2, ge=0.0, le=1.0, description="share of the members that are Byzantine"
    )
    location: Literal["mean", "median", "trimmed"] = Field(
        "mean",
        description="the mean-field service's location statistic: median and trimmed are"
        " robust to false state reports",
    )

    @property
    def learned(self) -> str | None:
        """The policy file of a learned run."""
        return policy_path(self.strategy)

    def naive(self) -> SimulationConfig:
        """The naive baseline of a scenario run (its own temporary ledger)."""
        return self.model_copy(update={"market": "naive", "ledger": None})

    def model_post_init(self, context: Any) -> None:
        """Reject unknown strategy names early, with the choices; cln needs its nodes."""
        super().model_post_init(context)
        if self.learned is not None:
            if not Path(self.learned).is_file():
                raise ValueError(f"no policy file at {self.learned}")
        elif self.strategy != "mixed":
            strategy(self.strategy)
        if self.byzantine is not None:
            adversary(self.byzantine, 0)


class Summary(msgspec.Struct, frozen=True):
    """The run's report plus what the community gained from trading."""

    run: RunReport
    seed: int
    strategy: str
    traded_wh: int
    """Energy settled between members (the run's ``traded_units``)."""
    grid_import_wh: int
    grid_export_wh: int
    bought_wh: int
    community_cost_msat: int
    """What the community paid for energy net of what it earned (grid and peers)."""
    grid_only_cost_msat: int
    """The same with no trading: every need imported, every surplus exported."""
    savings: float
    """Relative saving of trading over grid-only."""
    quality: dict[str, Any] | None = None
    """Scenario runs: market quality against the optimum and the baselines (see
    :meth:`Simulation.quality`)."""

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-ready summary (the run's fields at the top level)."""
        out: dict[str, Any] = msgspec.to_builtins(self.run)
        extra = msgspec.to_builtins(self)
        del extra["run"]
        quality = extra.pop("quality")
        out.update(extra)
        out.update(quality or {})
        return out


@dataclass
class Simulation:
    """An assembled run: call :meth:`run` once."""

    config: SimulationConfig
    community: Community
    tariff: TimeOfUseTariff
    traders: list[Trader]
    rail: Rail
    ledger: Ledger
    service: MeanFieldService
    runtime: Runtime
    energy: EnergyCommunity | None = None
    devices: Dispatch | None = None
    slot_import_wh: list[int] = field(default_factory=list)
    slot_export_wh: list[int] = field(default_factory=list)
    slot_prices: list[float] = field(default_factory=list)
    """The volume-weighted agreed price of each slot that had agreements."""
    slot_price_levels: list[tuple[float, ...]] = field(default_factory=list)
    population: list[dict[str, list[int]]] = field(default_factory=list)
    """Per slot: the mean-field service's histogram of net positions per type."""
    adversaries: dict[int, str] = field(default_factory=dict)
    """Byzantine members and their behaviour (``config.byzantine``)."""
    members: range = range(0)
    """The members trading in this run (a shard's neighbourhood, or everyone)."""
    reference: dict[str, np.ndarray] = field(default_factory=dict)
    """Scenario runs, after the summary: the grid-only and the optimal imports per slot."""

    @property
    def slots(self) -> int:
        """Slots in the run."""
        return self.community.spec.slots

    async def run(
        self,
        on_slot: Callable[[SlotReport], None] | None = None,
        *,
        handle_signals: bool = False,
        metrics_port: int | None = None,
        on_exporter: Callable[[Exporter], None] | None = None,
        checkpoint: Callable[[int], Awaitable[None]] | None = None,
    ) -> Summary:
        """Run every slot not yet run, settle, and summarise (``checkpoint``: see
        :meth:`Runtime.run` and :mod:`negotiator.recovery`)."""
        imported = [sum(t.imported_wh for t in self.traders)]  # not 0 in a resumed run
        exported = [sum(t.exported_wh for t in self.traders)]

        def slot_done(report: SlotReport) -> None:
            total = sum(t.imported_wh for t in self.traders)
            self.slot_import_wh.append(total - imported[0])
            imported[0] = total
            total = sum(t.exported_wh for t in self.traders)
            self.slot_export_wh.append(total - exported[0])
            exported[0] = total
            price = self.runtime.metrics.slot_price
            if report.agreements and price is not None:
                self.slot_prices.append(price)
            self.slot_price_levels.append(report.prices)
            seen = self.service.last if self.runtime.population is not None else None
            self.population.append(histograms(seen, report.slot))
            if on_slot is not None:
                on_slot(report)

        with serving(self.runtime.metrics, metrics_port, on_exporter):
            report = await self.runtime.run(
                self.slots, on_slot=slot_done, handle_signals=handle_signals, checkpoint=checkpoint
            )
        return self._summary(report)

    def _summary(self, report: RunReport) -> Summary:
        traders = self.traders
        cost = sum(t.cost_msat - t.revenue_msat for t in traders)
        net = self.community.net_wh[self.members.start : self.members.stop, : report.slots]
        grid_only = 0
        for slot in range(report.slots):
            imp, exp = self.tariff(slot)
            column = net[:, slot]
            grid_only += int(column[column > 0].sum()) * imp // 1000
            grid_only -= int(-column[column < 0].sum()) * exp // 1000
        quality = self.quality(report) if self.energy is not None else None
        savings = round(1 - cost / grid_only, 6) if grid_only > 0 else 0.0
        if quality is not None:  # the community's whole cost against grid only with its devices
            savings = round(1 - quality["cost_msat"] / quality["grid_only_cost_msat"], 6)
        return Summary(
            run=report,
            seed=self.config.seed,
            strategy=self.config.strategy,
            traded_wh=report.traded_units,
            grid_import_wh=sum(t.imported_wh for t in traders),
            grid_export_wh=sum(t.exported_wh for t in traders),
            bought_wh=sum(t.bought_wh for t in traders),
            community_cost_msat=cost,
            grid_only_cost_msat=grid_only,
            savings=savings,
            quality=quality,
        )

    def quality(self, report: RunReport) -> dict[str, Any]:
        """Market quality of a scenario run (:func:`domains.energy.quality`): efficiency
        against the HiGHS optimum, peak, fairness, volatility, self-sufficiency."""
        c, d = self.energy, self.devices
        assert c is not None and d is not None
        selfish = d if self.config.market == "naive" else dispatch(c, "selfish")
        result, self.reference = energy_quality(
            c,
            d,
            selfish,
            np.array([t.cost_msat - t.revenue_msat for t in self.traders], np.float64),
            np.array([t.imported_wh for t in self.traders], np.float64),
            np.asarray(self.slot_import_wh, np.float64),
            np.asarray(self.slot_prices),
            self.config.market,
        )
        return result

    def trace(self) -> RunTrace:
        """What the run did slot by slot, for the report (after :meth:`run`)."""
        slots = len(self.slot_import_wh)
        spec = self.community.spec
        c, d = self.energy, self.devices
        if c is not None and d is not None:
            load = c.load_wh.sum(axis=0) + d.flexible_wh.sum(axis=0)
            generation = c.pv_wh.sum(axis=0)
            imp, exp = c.import_price, c.export_price
        else:
            load = self.community.load_wh.sum(axis=0)
            generation = self.community.pv_wh.sum(axis=0)
            pairs = [self.tariff(t) for t in range(slots)]
            imp = np.array([p[0] for p in pairs], np.float64)
            exp = np.array([p[1] for p in pairs], np.float64)
        series: dict[str, np.ndarray] = {
            "load": np.asarray(load[:slots], np.float64),
            "generation": np.asarray(generation[:slots], np.float64),
        }
        if d is not None and d.battery_wh.size:
            series["battery"] = d.battery_wh.sum(axis=0)[:slots]
        series["grid import"] = np.asarray(self.slot_import_wh, np.float64)
        series["grid export"] = np.asarray(self.slot_export_wh, np.float64)
        for name, values in self.reference.items():
            series[name] = np.asarray(values[:slots], np.float64)
        samples = self.runtime.metrics.negotiation_latency.samples
        return RunTrace(
            slot_hours=24 / spec.slots_per_day,
            series=series,
            import_price=np.asarray(imp[:slots], np.float64),
            export_price=np.asarray(exp[:slots], np.float64),
            **slot_figures(
                self.slot_price_levels, self.population, self.service.bin_edges, samples
            ),
        )

    def close(self) -> None:
        """Close the ledger and let the collector have the population again."""
        self.ledger.close()
        self.runtime.close()


def build(
    config: SimulationConfig,
    *,
    metrics: RunMetrics | None = None,
    shard: tuple[int, int] | None = None,
    bus: LocalBus | None = None,
) -> Simulation:
    """Assemble a run: community, traders, rail, ledger, mean-field service, runtime.

    With ``shard`` (i, n) only that neighbourhood's members trade here, among themselves
    (:mod:`negotiator.cluster`); the community is drawn whole, the same in every shard. A given
    ``bus`` must route :data:`MEANFIELD` itself (to the coordinator's service); otherwise the
    service runs on a LocalBus of the run's own.
    """
    if shard is not None and config.scenario is not None:
        raise ValueError("sharded runs take the synthetic community, not a --scenario")
    root = np.random.default_rng(config.seed)
    community_rng, strategy_rng, match_rng, byzantine_rng = root.spawn(4)
    if shard is not None:
        match_rng = match_rng.spawn(shard[1])[shard[0]]
    energy: EnergyCommunity | None = None
    devices: Dispatch | None = None
    if config.scenario is not None:
        energy, devices, community, tariff = realise(config.scenario, config.market, community_rng)
        if config.market == "naive":  # one fixed linear strategy, no policy
            strategies = [strategy("linear")] * energy.agents
        else:
            strategies = member_strategies(
                config.strategy,
                energy.agents,
                strategy_rng,
                patience=energy.patience,
                risk_aversion=energy.risk_aversion,
            )
    else:
        spec = CommunitySpec(
            agents=config.agents,
            slots=config.slots,
            slots_per_day=config.slots_per_day,
            pv_share=config.pv_share,
        )
        community = Community.generate(spec, community_rng)
        tariff = TimeOfUseTariff(slots_per_day=config.slots_per_day)
        strategies = member_strategies(config.strategy, config.agents, strategy_rng)
    policies = member_policies(
        "" if config.market == "naive" else config.strategy,
        community.spec.agents,
        config.learned_share,
        community.spec.slots_per_day,
        strategy_rng,
    )
    deadline_s = config.runtime.deadline_ms / 1000.0
    attackers = byzantine(config, community.spec.agents, byzantine_rng)
    here = members(community.spec.agents, shard)
    traders = [
        attackers.get(i, Trader)(
            i,
            community.agent_types[i],
            row(community.net_wh[i]),
            tariff,
            strategies[i],
            max_rounds=config.max_rounds,
            deadline_s=deadline_s,
            policy=policies[i],
        )
        for i in here
    ]
    rail = make_rail(config, *accounts(community.net_wh, tariff.peak, here))
    path = config.ledger or str(Path(tempfile.mkdtemp(prefix="negotiator-")) / "ledger.sqlite")
    ledger = Ledger(path)
    service = MeanFieldService(location=config.location)
    if bus is None:
        bus = LocalBus(config.runtime.inbox_size)
        bus.serve(MEANFIELD, service.handle)
    metrics = metrics or RunMetrics()
    metrics.population = service.gauges
    runtime = Runtime(
        traders,
        rail=rail,
        ledger=ledger,
        matcher=board_matcher(config.max_partners),
        rng=match_rng,
        config=config.runtime,
        bus=bus,
        metrics=metrics,
        population=None if config.market == "naive" else MEANFIELD,
    )
    return Simulation(
        config,
        community,
        tariff,
        traders,
        rail,
        ledger,
        service,
        runtime,
        energy,
        devices,
        adversaries={i: cls.__name__.lower() for i, cls in attackers.items() if i in here},
        members=here,
    )
