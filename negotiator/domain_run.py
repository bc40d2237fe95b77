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
from typing import Any, Literal

import msgspec
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agents import strategy
from domains import adapter
from market import MeanFieldService, board_matcher
from negotiator.assembly import rail as make_rail
from negotiator.bus import LocalBus
from negotiator.domain import DomainMarket, Trade
from negotiator.ledger import Ledger
from negotiator.metrics import Exporter, RunMetrics
from negotiator.report import RunTrace
from negotiator.runtime import PRICE_LEVELS, RunReport, Runtime, RuntimeConfig, SlotReport
from negotiator.settlement import Rail

MEANFIELD = "meanfield"
"""Bus address of the mean-field service."""


class DomainConfig(BaseModel):
    """Everything that defines a domain's run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    domain: str = Field("logistics", description="the adapter (domains.ADAPTERS)")
    scenario: str | None = Field(
        None, description="the domain's named scenario or a TOML path (None: its default)"
    )
    seed: int = Field(0, ge=0, description="seed of every random choice in the run")
    strategy: str = Field("mixed", description="boulware, linear, conceder or mixed")
    max_rounds: int = Field(10, ge=1, description="offers per negotiation, at most")
    max_partners: int = Field(12, ge=1, description="sellers each buyer negotiates with per slot")
    ledger: str | None = Field(None, description="SQLite ledger path; a temp file when None")
    rail: Literal["lightning", "inprocess", "cln"] = "lightning"
    cln_nodes: dict[str, str] = Field(default_factory=dict)
    settlement: Literal["per_trade", "netted"] = "per_trade"
    hubs: int = Field(4, ge=1, description="Lightning service providers the agents are spread over")
    placement: Literal["node", "hub"] = "node"
    guidance: bool = Field(True, description="agents read the mean-field service each slot")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    def model_post_init(self, context: Any) -> None:
        """Unknown domains and strategies are refused early, with the choices."""
        adapter(self.domain)
        if self.strategy != "mixed":
            strategy(self.strategy)
        if self.rail == "cln" and not self.cln_nodes:
            raise ValueError("--rail cln needs nodes: --cln NAME=SOCKET (repeat) or --cln-dir")


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
        exporter = None
        if metrics_port is not None:
            exporter = Exporter(self.runtime.metrics, metrics_port)
            if on_exporter is not None:
                on_exporter(exporter)

        def slot_done(report: SlotReport) -> None:
            self.slot_traded.append(report.traded)
            self.slot_price_levels.append(report.prices)
            seen = self.service.last if self.runtime.population is not None else None
            if seen is not None and seen.slot == report.slot:
                self.population.append({n: t.histogram for n, t in seen.types.items()})
            else:
                self.population.append({})
            if on_slot is not None:
                on_slot(report)

        try:
            report = await self.runtime.run(
                self.slots, on_slot=slot_done, handle_signals=handle_signals, checkpoint=checkpoint
            )
        finally:
            if exporter is not None:
                exporter.close()
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
        slots = len(self.slot_traded)
        levels = np.full((slots, len(PRICE_LEVELS)), np.nan)
        for t, q in enumerate(self.slot_price_levels):
            if q:
                levels[t] = q
        names = sorted({n for hist in self.population for n in hist})
        bins = len(self.service.bin_edges) - 1
        population = {
            n: np.array([hist.get(n, [0] * bins) for hist in self.population]) for n in names
        }
        samples = self.runtime.metrics.negotiation_latency.samples
        m = self.market
        return RunTrace(
            slot_hours=1.0,
            series={f"{m.unit}s traded": np.asarray(self.slot_traded, np.float64)},
            prices=levels,
            latency_ms=np.asarray(samples if samples is not None else [], np.float64) * 1000,
            population=population,
            bin_edges=self.service.bin_edges if population else None,
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
