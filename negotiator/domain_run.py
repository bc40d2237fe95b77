"""Composition root of a domain's run: ``negotiator simulate --domain NAME --scenario S``.

It picks the adapter by name (:func:`domains.adapter`), lets it build the market
(:class:`negotiator.domain.DomainMarket`: agents, accounts, benchmark), and runs it on the same
parts as every energy run: the rail (the simulated Lightning network by default), the SQLite
ledger, the mean-field service on the bus, the runtime with the board matcher, the metrics. The
summary is the kernel's :class:`RunReport` plus the domain's market quality, measured from the
trades the ledger settled.

The energy community's own composition root (:mod:`negotiator.simulation`) adds what only energy
has yet: Byzantine members, shards, learned policies, crash recovery, the naive baseline.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from pydantic import Field

from agents import strategy
from domains import adapter
from market import MeanFieldService, board_matcher
from negotiator.assembly import MEANFIELD, RunSettings
from negotiator.assembly import rail as make_rail
from negotiator.bus import LocalBus
from negotiator.domain import DomainMarket, Trade
from negotiator.ledger import Ledger
from negotiator.metrics import Exporter, RunMetrics, serving
from negotiator.report import RunTrace, histograms, slot_figures
from negotiator.runtime import RunReport, Runtime, SlotReport
from negotiator.settlement import Rail


class DomainConfig(RunSettings):
    """Everything that defines a domain's run: the domain, its scenario, how agents concede
    (and, inherited, how the run trades and settles)."""

    domain: str = Field("logistics", description="the adapter (domains.ADAPTERS)")
    scenario: str | None = Field(
        None, description="the domain's named scenario or a TOML path (None: its default)"
    )
    strategy: str = Field("mixed", description="boulware, linear, conceder or mixed")
    guidance: bool = Field(True, description="agents read the mean-field service each slot")

    def model_post_init(self, context: Any) -> None:
        """Unknown domains and strategies are refused early, with the choices."""
        super().model_post_init(context)
        adapter(self.domain)
        if self.strategy != "mixed":
            strategy(self.strategy)


class DomainSummary(msgspec.Struct, frozen=True):
    """The run's report plus the domain's market quality."""

    run: RunReport
    seed: int
    domain: str
    strategy: str
    unit: str
    """One base unit of the traded resource (``traded_units`` counts them)."""
    quality: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-ready summary (the run's and the quality's fields at the top level)."""
        out: dict[str, Any] = msgspec.to_builtins(self.run)
        out.update(seed=self.seed, domain=self.domain, strategy=self.strategy, unit=self.unit)
        out.update(self.quality)
        return out


@dataclass
class DomainRun:
    """An assembled domain run: call :meth:`run` once."""

    config: DomainConfig
    market: DomainMarket
    rail: Rail
    ledger: Ledger
    service: MeanFieldService
    runtime: Runtime
    slot_traded: list[int] = field(default_factory=list)
    slot_price_levels: list[tuple[float, ...]] = field(default_factory=list)
    population: list[dict[str, list[int]]] = field(default_factory=list)

    @property
    def slots(self) -> int:
        return self.market.slots

    async def run(
        self,
        on_slot: Callable[[SlotReport], None] | None = None,
        *,
        handle_signals: bool = False,
        metrics_port: int | None = None,
        on_exporter: Callable[[Exporter], None] | None = None,
        checkpoint: Callable[[int], Awaitable[None]] | None = None,
    ) -> DomainSummary:
        """Run every slot, settle, and measure the market against the domain's benchmark."""

        def slot_done(report: SlotReport) -> None:
            self.slot_traded.append(report.traded)
            self.slot_price_levels.append(report.prices)
            seen = self.service.last if self.runtime.population is not None else None
            self.population.append(histograms(seen, report.slot))
            if on_slot is not None:
                on_slot(report)

        with serving(self.runtime.metrics, metrics_port, on_exporter):
            report = await self.runtime.run(
                self.slots, on_slot=slot_done, handle_signals=handle_signals, checkpoint=checkpoint
            )
        trades = [Trade(*row) for row in self.ledger.settled()]
        return DomainSummary(
            run=report,
            seed=self.config.seed,
            domain=self.config.domain,
            strategy=self.config.strategy,
            unit=self.market.unit,
            quality=self.market.quality(trades),
        )

    def trace(self) -> RunTrace:
        """What the run did slot by slot, for the report (after :meth:`run`)."""
        samples = self.runtime.metrics.negotiation_latency.samples
        m = self.market
        return RunTrace(
            slot_hours=1.0,
            series={f"{m.unit}s traded": np.asarray(self.slot_traded, np.float64)},
            **slot_figures(
                self.slot_price_levels, self.population, self.service.bin_edges, samples
            ),
            quantity_label=f"{m.unit}s per slot",
            quantity_scale=1.0,
            price_label=m.price_label,
            price_scale=m.price_scale,
            population_label=f"{m.unit}s",
            population_scale=1.0,
            time_label="slot",
        )

    def close(self) -> None:
        """Close the ledger and let the collector have the population again."""
        self.ledger.close()
        self.runtime.close()


def build_domain(config: DomainConfig, *, metrics: RunMetrics | None = None) -> DomainRun:
    """Assemble a domain run: the adapter's market, rail, ledger, mean-field service, runtime."""
    domain = adapter(config.domain)
    market_rng, match_rng = np.random.default_rng(config.seed).spawn(2)
    market = domain.market(
        config.scenario or domain.default,
        market_rng,
        strategy=config.strategy,
        max_rounds=config.max_rounds,
    )
    rail = make_rail(config, market.funding_msat, market.inbound_msat)
    path = config.ledger or str(Path(tempfile.mkdtemp(prefix="negotiator-")) / "ledger.sqlite")
    ledger = Ledger(path)
    service = MeanFieldService(span=market.span)
    bus = LocalBus(config.runtime.inbox_size)
    bus.serve(MEANFIELD, service.handle)
    metrics = metrics or RunMetrics()
    metrics.population = service.gauges
    runtime = Runtime(
        market.agents,
        rail=rail,
        ledger=ledger,
        matcher=board_matcher(config.max_partners),
        rng=match_rng,
        config=config.runtime,
        bus=bus,
        metrics=metrics,
        population=MEANFIELD if config.guidance else None,
    )
    return DomainRun(config, market, rail, ledger, service, runtime)


__all__ = ["DomainConfig", "DomainRun", "DomainSummary", "build_domain"]
