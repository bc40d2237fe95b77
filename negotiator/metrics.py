"""Every Prometheus metric of a run, defined in this one module.

The negotiation loop never touches prometheus_client: it bumps plain integers and a bucketed
histogram (a bisect and two additions, no lock), and :class:`RunMetrics` exposes them through one
custom collector that builds the metric families when Prometheus scrapes. Names follow Prometheus
conventions: base units (seconds), ``_total`` for counters, bounded label sets (never an agent or a
negotiation id).
"""

from __future__ import annotations

import bisect
import copy
import math
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

LATENCY_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Seconds: sub-millisecond (shard engine) to seconds (real Lightning payments)."""
ROUND_BUCKETS: Final = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 30)


class Histogram:
    """A fixed-bucket histogram that can also keep its raw samples for exact quantiles."""

    __slots__ = ("bounds", "counts", "samples", "sum")

    def __init__(self, bounds: tuple[float, ...], keep_samples: bool = False) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.samples: array[float] | None = array("d") if keep_samples else None

    def observe(self, value: float) -> None:
        """Add one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        if self.samples is not None:
            self.samples.append(value)

    @property
    def count(self) -> int:
        """Number of observations."""
        return sum(self.counts)

    def quantile(self, q: float) -> float:
        """Exact quantile of the kept samples (linear interpolation); NaN when empty."""
        if not self.samples:
            return math.nan
        data = sorted(self.samples)
        pos = q * (len(data) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(data) - 1)
        return data[lo] + (data[hi] - data[lo]) * (pos - lo)

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        """Export as a Prometheus histogram (cumulative buckets)."""
        counts = list(self.counts)  # one consistent copy while the loop keeps counting
        cumulative, running = [], 0
        for bound, n in zip(self.bounds, counts, strict=False):
            running += n
            cumulative.append((_fmt(bound), running))
        running += counts[-1]
        cumulative.append(("+Inf", running))
        return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=self.sum)


def _fmt(bound: float) -> str:
    return repr(float(bound))


PART_BUCKETS: Final = (1, 2, 3, 4, 6, 8, 12, 16)
HOP_BUCKETS: Final = (0, 1, 2, 3, 4, 5, 6, 8, 10, 20)
SIM_LATENCY_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 60.0, 600.0, 3600.0)
"""Seconds of simulated network time: tens of ms per hop up to on-chain confirmations."""


class PaymentStats:
    """What a settlement rail did with the payments it was asked to make (filled by the rail)."""

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}
        """Payments by outcome: ``succeeded``, ``onchain`` (fallback), or a failure reason."""
        self.parts = Histogram(PART_BUCKETS)
        self.hops = Histogram(HOP_BUCKETS)
        self.attempts = 0
        self.fees_msat = 0
        """Lightning routing fees."""
        self.onchain_fees_msat = 0
        """On-chain fees of fallback payments."""
        self.amount_msat = 0
        self.latency = Histogram(SIM_LATENCY_BUCKETS, keep_samples=True)
        """Simulated network time per payment (seconds)."""
        self.wall = Histogram(LATENCY_BUCKETS, keep_samples=True)
        """Wall time the rail spent per payment (seconds)."""
        self.liquidity: Callable[[], dict[str, float]] = dict
        """Channel utilization figures (imbalance, depleted_share, turnover, locked_share)."""
        self.events: Callable[[], dict[str, int]] = dict
        """Counts of rail events: rebalances, splices, closes, breaches, watchtower interventions."""

    def record(self, outcome: str) -> None:
        """Count one payment's outcome."""
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def summary(self) -> dict[str, object]:
        """The JSON summary's ``payments`` section."""
        total = sum(self.outcomes.values())
        ok = self.outcomes.get("succeeded", 0) + self.outcomes.get("onchain", 0)
        lat = self.latency
        return {
            "payments": total,
            "success_rate": round(ok / total, 6) if total else 0.0,
            "outcomes": dict(sorted(self.outcomes.items())),
            "onchain": self.outcomes.get("onchain", 0),
            "fees_msat": self.fees_msat,
            "onchain_fees_msat": self.onchain_fees_msat,
            "fee_ppm": round(self.fees_msat * 1e6 / self.amount_msat, 3)
            if self.amount_msat
            else 0.0,
            "parts_mean": round(self.parts.sum / self.parts.count, 4) if self.parts.count else 0.0,
            "hops_mean": round(self.hops.sum / self.hops.count, 4) if self.hops.count else 0.0,
            "attempts_per_payment": round(self.attempts / total, 4) if total else 0.0,
            "network_latency_ms": {
                q: _ms(lat.quantile(v)) for q, v in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
            },
            "wall_latency_ms": {
                q: _ms(self.wall.quantile(v)) for q, v in (("p50", 0.5), ("p95", 0.95))
            },
            "utilization": self.liquidity(),
            "events": self.events(),
        }


def _ms(seconds: float) -> float:
    return 0.0 if math.isnan(seconds) else round(seconds * 1000, 3)


class RunMetrics:
    """The accumulators of one run and the collector that exposes them."""

    def __init__(self) -> None:
        self.negotiation_latency = Histogram(LATENCY_BUCKETS, keep_samples=True)
        self.start_wait = Histogram(LATENCY_BUCKETS, keep_samples=True)
        """From the runtime opening a negotiation to its first offer (the Start's wait)."""
        self.settlement_latency = Histogram(LATENCY_BUCKETS, keep_samples=True)
        self.slot_duration = Histogram(LATENCY_BUCKETS)
        self.rounds = Histogram(ROUND_BUCKETS)
        self.outcomes: dict[str, int] = {}
        self.messages: dict[str, int] = {}
        self.rejected: dict[str, int] = {}
        self.late: dict[str, int] = {}
        """Negotiation messages that came after the runtime closed their negotiation, by kind."""
        self.settlements: dict[str, int] = {}
        self.excluded: dict[str, int] = {}
        """Agents excluded from the market (retired), by reason: refused messages, reneging."""
        self.aftermarket: dict[str, int] = {}
        """Aftermarket ``rounds`` run and ``negotiations`` opened in them."""
        self.fees_msat = 0
        self.paid_msat = 0
        self.agent_failures = 0
        self.agents_alive = 0
        self.in_flight = 0
        self.slot = 0
        self.rail = "none"
        self.payments: PaymentStats | None = None
        """The rail's payment statistics, once a settler is attached."""
        self.population_latency = Histogram(LATENCY_BUCKETS)
        """Round trip of the runtime's snapshot query to the mean-field service."""
        self.population: Callable[[], dict[str, Any]] = dict
        """The mean-field service's gauges: drift and agents per type, guidance price, vwap."""
        self.slot_price: float | None = None
        """Volume-weighted agreed price of the last slot (msat per 1,000 units)."""
        self.shard_messages: Callable[[], list[int]] = list
        """Messages handled per shard dispatcher (shard engine)."""
        self.queue_depth: Callable[[], int] = lambda: 0
        self.overflow: Callable[[], int] = lambda: 0
        self.undeliverable: Callable[[], int] = lambda: 0

    _ACCUMULATORS: Final = (
        "negotiation_latency",
        "start_wait",
        "settlement_latency",
        "slot_duration",
        "rounds",
        "outcomes",
        "messages",
        "rejected",
        "late",
        "settlements",
        "excluded",
        "aftermarket",
        "fees_msat",
        "paid_msat",
        "agent_failures",
        "population_latency",
        "slot_price",
    )

    def accumulators(self) -> dict[str, Any]:
        """The run's counts and histograms so far (copies, picklable): what a resumed run
        starts from so that its summary covers the whole run."""
        return {name: copy.deepcopy(getattr(self, name)) for name in self._ACCUMULATORS}

    def restore(self, saved: dict[str, Any]) -> None:
        """Take back :meth:`accumulators`. Dicts and histograms are updated in place: the
        router and the settler hold references to them."""
        for name in self._ACCUMULATORS:
            if name not in saved:  # a checkpoint written before the accumulator existed
                continue
            value = copy.deepcopy(saved[name])
            current = getattr(self, name)
            if isinstance(current, dict):
                current.clear()
                current.update(value)
            elif isinstance(current, Histogram):
                current.counts[:] = value.counts
                current.sum = value.sum
                if current.samples is not None:
                    current.samples[:] = value.samples or array("d")
            else:
                setattr(self, name, value)

    def count(self, table: dict[str, int], key: str, n: int = 1) -> None:
        """Add ``n`` to one labelled counter."""
        table[key] = table.get(key, 0) + n

    def registry(self) -> CollectorRegistry:
        """A fresh registry holding only this run's metrics."""
        registry = CollectorRegistry(auto_describe=True)
        registry.register(_Collector(self))
        return registry


def _counter(name: str, doc: str, label: str, table: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(dict(table).items()):
        family.add_metric([key], value)
    return family


class _Collector:
    def __init__(self, m: RunMetrics) -> None:
        self._m = m

    def collect(self) -> Iterator[Metric]:
        m = self._m
        yield m.negotiation_latency.family(
            "negotiator_negotiation_latency_seconds",
            "Time from the first offer (propose) to acceptance, per agreed negotiation.",
        )
        yield m.start_wait.family(
            "negotiator_negotiation_start_wait_seconds",
            "Time from the runtime opening a negotiation to its first offer (propose), per"
            " negotiation that began.",
        )
        yield m.settlement_latency.family(
            "negotiator_settlement_latency_seconds",
            "Time from acceptance to a settled payment, per settled agreement.",
        )
        yield m.slot_duration.family(
            "negotiator_slot_duration_seconds", "Wall time of one trading slot, open to close."
        )
        rounds = m.rounds.family(
            "negotiator_negotiation_rounds", "Offers made in a negotiation, at its close."
        )
        yield rounds
        yield _counter(
            "negotiator_negotiations",
            "Negotiations ended, by outcome (agreed, rejected, withdrawn, expired, skipped).",
            "outcome",
            m.outcomes,
        )
        yield _counter(
            "negotiator_messages", "Messages routed between agents, by kind.", "kind", m.messages
        )
        yield _counter(
            "negotiator_messages_rejected",
            "Messages refused: undecodable bytes or protocol violations, by reason.",
            "reason",
            m.rejected,
        )
        yield _counter(
            "negotiator_messages_late",
            "Moves that reached the runtime after it had closed their negotiation (deadline or"
            " gate closure): void, not relayed, by kind.",
            "kind",
            m.late,
        )
        settlements = CounterMetricFamily(
            "negotiator_settlements",
            "Agreements whose settlement ended, by outcome and rail.",
            labels=["outcome", "rail"],
        )
        for key, value in sorted(dict(m.settlements).items()):
            settlements.add_metric([key, m.rail], value)
        yield settlements
        yield CounterMetricFamily(
            "negotiator_payment_fees_msat", "Routing fees paid, in millisatoshi.", value=m.fees_msat
        )
        yield CounterMetricFamily(
            "negotiator_payments_msat",
            "Amounts paid to sellers, in millisatoshi.",
            value=m.paid_msat,
        )
        yield CounterMetricFamily(
            "negotiator_agent_failures",
            "Exceptions raised by agent handlers.",
            value=m.agent_failures,
        )
        yield _counter(
            "negotiator_agents_excluded",
            "Agents excluded from the market, by reason (refused messages, reneging on payment).",
            "reason",
            m.excluded,
        )
        yield _counter(
            "negotiator_aftermarket",
            "Aftermarket rounds before gate closure (unproven buyers' agreements that failed),"
            " and the negotiations opened in them.",
            "kind",
            m.aftermarket,
        )
        yield CounterMetricFamily(
            "negotiator_inbox_overflow",
            "Messages that found their inbox full (queued later, never dropped).",
            value=m.overflow(),
        )
        yield CounterMetricFamily(
            "negotiator_undeliverable",
            "Messages addressed to nobody on the bus.",
            value=m.undeliverable(),
        )
        yield GaugeMetricFamily(
            "negotiator_agents_alive", "Agents running (not retired).", value=m.agents_alive
        )
        yield GaugeMetricFamily(
            "negotiator_negotiations_in_flight", "Negotiations open right now.", value=m.in_flight
        )
        yield GaugeMetricFamily(
            "negotiator_bus_queue_depth", "Messages waiting in inboxes.", value=m.queue_depth()
        )
        yield GaugeMetricFamily("negotiator_slot", "The current trading slot.", value=m.slot)
        if m.payments is not None:
            yield from _payment_families(m.payments, m.rail)
        yield from _market_families(m)


def _market_families(m: RunMetrics) -> Iterator[Metric]:
    yield m.population_latency.family(
        "negotiator_meanfield_query_latency_seconds",
        "Round trip of the runtime's snapshot query to the mean-field service, per slot.",
    )
    gauges = m.population()
    drift = GaugeMetricFamily(
        "negotiator_meanfield_drift",
        "1-Wasserstein distance between consecutive slots' distributions of net positions"
        " (base units), per agent type.",
        labels=["type"],
    )
    for kind, value in sorted(gauges.get("drift", {}).items()):
        drift.add_metric([kind], value)
    yield drift
    agents = GaugeMetricFamily(
        "negotiator_meanfield_agents",
        "Agents that reported wanting to buy or sell in the last slot, per type and role.",
        labels=["type", "role"],
    )
    for (kind, role), n in sorted(gauges.get("agents", {}).items()):
        agents.add_metric([kind, role], n)
    yield agents
    for key, name, doc in (
        ("guidance_price", "negotiator_meanfield_guidance_price",
         "The mean-field service's guidance price: VWAP of recent slots (msat per 1,000 units)."),
        ("vwap", "negotiator_meanfield_vwap",
         "Volume-weighted average agreed price over the service's window (msat per 1,000 units)."),
        ("slot_price", "negotiator_slot_price",
         "Volume-weighted agreed price of the last slot (msat per 1,000 units: msat/kWh)."),
    ):  # fmt: skip
        value = m.slot_price if key == "slot_price" else gauges.get(key)
        gauge = GaugeMetricFamily(name, doc, labels=[])
        if value is not None:  # declared from the start, valued once there is a price
            gauge.add_metric([], value)
        yield gauge
    family = CounterMetricFamily(
        "negotiator_shard_messages",
        "Messages handled by each shard's dispatcher (shard engine throughput; none with the"
        " task engine).",
        labels=["shard"],
    )
    for i, n in enumerate(m.shard_messages()):
        family.add_metric([str(i)], n)
    yield family


def _payment_families(p: PaymentStats, rail: str) -> Iterator[Metric]:
    outcomes = CounterMetricFamily(
        "negotiator_payments",
        "Payments attempted by the rail, by outcome (succeeded, onchain fallback, or the reason"
        " it failed).",
        labels=["outcome", "rail"],
    )
    for key, value in sorted(dict(p.outcomes).items()):
        outcomes.add_metric([key, rail], value)
    yield outcomes
    yield p.parts.family("negotiator_payment_parts", "HTLC parts per successful payment.")
    yield p.hops.family("negotiator_payment_hops", "Hops of the longest part, per payment.")
    yield p.latency.family(
        "negotiator_payment_network_latency_seconds",
        "Simulated network time per payment: failed attempts, then the slowest part both ways.",
    )
    yield p.wall.family(
        "negotiator_payment_wall_latency_seconds", "Wall time the rail spent per payment."
    )
    yield CounterMetricFamily(
        "negotiator_payment_attempts", "HTLC routes tried, all payments.", value=p.attempts
    )
    util = GaugeMetricFamily(
        "negotiator_channel_utilization",
        "Channel liquidity: mean imbalance |a-b|/capacity, share of channels with a side under"
        " 10%, turnover (forwarded / capacity), share locked in HTLCs.",
        labels=["measure"],
    )
    for measure, figure in sorted(p.liquidity().items()):
        util.add_metric([measure], figure)
    yield util
    events = CounterMetricFamily(
        "negotiator_rail_events",
        "Liquidity and security events: rebalances, splices, closes, breaches, watchtower"
        " interventions, expired HTLCs.",
        labels=["event"],
    )
    for key, value in sorted(p.events().items()):
        events.add_metric([key], value)
    yield events


class Exporter:
    """The /metrics HTTP endpoint, bound to 127.0.0.1 unless told otherwise."""

    def __init__(self, metrics: RunMetrics, port: int, host: str = "127.0.0.1") -> None:
        self._server, self._thread = start_http_server(port, addr=host, registry=metrics.registry())
        self.host = host
        self.port = int(self._server.server_port)

    @property
    def url(self) -> str:
        """Where to scrape."""
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@contextmanager
def serving(
    metrics: RunMetrics, port: int | None, on_exporter: Callable[[Exporter], None] | None = None
) -> Iterator[Exporter | None]:
    """Serve ``metrics`` on 127.0.0.1:``port`` for the block (nothing when ``port`` is None);
    ``on_exporter`` hears where."""
    if port is None:
        yield None
        return
    exporter = Exporter(metrics, port)
    try:
        if on_exporter is not None:
            on_exporter(exporter)
        yield exporter
    finally:
        exporter.close()
