"""The runtime's configuration and what it reports: per slot and for the whole run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from negotiator.ledger import Ledger
    from negotiator.metrics import Histogram, RunMetrics


class RuntimeConfig(BaseModel):
    """How the runtime runs (not what it simulates)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    engine: str = Field("task", pattern="^(task|shard)$", description="task or shard engine")
    shards: int = Field(1, ge=1, description="dispatchers for the shard engine")
    inbox_size: int = Field(1024, ge=1, description="capacity of each agent's inbox")
    max_in_flight: int = Field(500, ge=1, description="negotiations open at once, at most")
    max_under_way: int = Field(
        16,
        ge=0,
        description="task engine: negotiations begun at once, at most; the Starts of the others"
        " in flight wait for one to end (0: all at once)",
    )
    deadline_ms: float = Field(5000.0, gt=0, description="wall-clock limit of one negotiation")
    slot_timeout_s: float = Field(120.0, gt=0, description="gate closure: wall time per slot")
    settle_workers: int = Field(1, ge=1, description="settlement batches in progress at once")
    settle_batch: int = Field(8192, ge=1, description="settlement jobs per batch, at most")
    settle_timeout_s: float = Field(30.0, gt=0, description="time to settle before failing")
    max_settling: int = Field(
        20_000,
        ge=1,
        description="agreements waiting for settlement before the next slot waits for them",
    )
    population_timeout_s: float = Field(10.0, gt=0, description="mean-field request timeout")
    max_agent_failures: int = Field(3, ge=1, description="handler exceptions before retirement")
    pay_timeout_s: float = Field(
        30.0,
        gt=0,
        description="time a buyer has to pay its invoice before it has reneged (a buyer that"
        " handles its invoice without paying has reneged at once)",
    )
    max_reneges: int = Field(
        1, ge=1, description="unpaid agreements before a buyer is excluded from the market"
    )
    aftermarket_rounds: int = Field(
        2,
        ge=0,
        description="rounds of trading again, before gate closure, the quantities of agreements"
        " that unproven buyers left unpaid (0: close the slot without waiting for them)",
    )
    clearing_timeout_s: float = Field(
        5.0, gt=0, description="time gate closure waits for unproven buyers' payments, at most"
    )
    max_effects: int = Field(8, ge=1, description="effects one handler call may return, at most")
    max_strikes: int = Field(
        3, ge=1, description="messages refused by the runtime before their sender is excluded"
    )
    grace_s: float = Field(10.0, ge=0, description="time to finish in-flight work on shutdown")


PRICE_LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)
"""The quantiles of a slot's agreed prices that :class:`SlotReport` carries."""


class SlotReport(msgspec.Struct, frozen=True):
    """What happened in one slot (for progress displays)."""

    slot: int
    negotiations: int
    agreements: int
    duration_s: float
    traded: int = 0
    """Units agreed in the slot."""
    prices: tuple[float, ...] = ()
    """Agreed prices' p10, p25, p50, p75 and p90 (msat per 1,000 units); empty without trades."""


class RunReport(msgspec.Struct, frozen=True):
    """The machine-readable summary of a run."""

    engine: str
    agents: int
    slots: int
    negotiations: int
    agreements: int
    agreement_rate: float
    outcomes: dict[str, int]
    messages: int
    """Moves and settlement messages sent to agents (not the runtime's Start and Timeout)."""
    messages_per_negotiation: float
    latency_ms: dict[str, float]
    settle_latency_ms: dict[str, float]
    offers_per_s: float
    negotiations_per_s: float
    settled: int
    failed_settlements: int
    failure_reasons: dict[str, int]
    traded_units: int
    """Base units settled (Wh for energy, parcels for logistics)."""
    paid_msat: int
    fees_msat: int
    rejected_messages: dict[str, int]
    late_messages: dict[str, int]
    """Moves that came after the runtime had closed their negotiation (void, not relayed)."""
    agent_failures: int
    overflow: int
    wall_s: float
    negotiation_s: float
    """Time in the slots' negotiations (the aftermarket's included, waiting for payments not)."""
    ledger_path: str
    ledger_digest: str
    interrupted: bool
    rail: str = "none"
    payments: dict[str, Any] = {}
    """The rail's payment statistics (success rate, fees, parts, hops, latency, utilization)."""
    excluded: dict[str, int] = {}
    """Agents the runtime excluded from the market, by reason (``refused_messages``:
    forged, out-of-turn or flooding moves; ``reneged``: invoices left unpaid)."""
    clearing_s: float = 0.0
    """Time gate closures waited for the payments of buyers that had never paid before."""
    message_counts: dict[str, int] = {}
    """Messages sent to agents' inboxes by kind, the runtime's own (``start``, ``timeout``)
    included."""
    start_wait_ms: dict[str, float] = {}
    """From the runtime opening a negotiation to its first offer: the wait before the
    propose-to-accept ``latency_ms`` begins."""
    aftermarket: dict[str, int] = {}
    """Aftermarket ``rounds`` (before gate closure, after unproven buyers' agreements failed)
    and the ``negotiations`` opened in them (counted in ``negotiations`` too)."""


def run_report(
    m: RunMetrics,
    ledger: Ledger,
    *,
    engine: str,
    agents: int,
    slots: int,
    negotiations: int,
    negotiation_s: float,
    clearing_s: float,
    overflow: int,
    wall_s: float,
    interrupted: bool,
) -> RunReport:
    """The summary of a run from its metrics, its ledger and the runtime's own counts."""
    counts = ledger.counts()
    traded, _amount, _fees = ledger.settled_totals()
    agreements = m.outcomes.get("agreed", 0)
    offers = m.messages.get("propose", 0) + m.messages.get("counter", 0)
    messages = sum(v for k, v in m.messages.items() if k not in ("start", "timeout"))
    nego_s = max(negotiation_s, 1e-9)

    def quantiles(h: Histogram) -> dict[str, float]:
        return {
            f"p{int(q * 100)}": round(h.quantile(q) * 1000, 4) if h.samples else 0.0
            for q in (0.5, 0.95, 0.99)
        }

    return RunReport(
        engine=engine,
        agents=agents,
        slots=slots,
        negotiations=negotiations,
        agreements=agreements,
        agreement_rate=round(agreements / negotiations, 6) if negotiations else 0.0,
        outcomes=dict(sorted(m.outcomes.items())),
        messages=messages,
        messages_per_negotiation=round(messages / negotiations, 4) if negotiations else 0.0,
        latency_ms=quantiles(m.negotiation_latency),
        settle_latency_ms=quantiles(m.settlement_latency),
        offers_per_s=round(offers / nego_s, 1),
        negotiations_per_s=round(negotiations / nego_s, 1),
        settled=counts["settled"],
        failed_settlements=counts["failed"],
        failure_reasons=ledger.failure_reasons(),
        traded_units=traded,
        paid_msat=m.paid_msat,
        fees_msat=m.fees_msat,
        rejected_messages=dict(sorted(m.rejected.items())),
        late_messages=dict(sorted(m.late.items())),
        agent_failures=m.agent_failures,
        overflow=overflow,
        wall_s=round(wall_s, 4),
        negotiation_s=round(negotiation_s, 4),
        clearing_s=round(clearing_s, 4),
        ledger_path=ledger.path,
        ledger_digest=ledger.digest(),
        interrupted=interrupted,
        rail=m.rail,
        payments=m.payments.summary() if m.payments is not None else {},
        excluded=dict(sorted(m.excluded.items())),
        message_counts={k: v for k, v in sorted(m.messages.items()) if v},
        aftermarket=dict(sorted(m.aftermarket.items())),
        start_wait_ms=quantiles(m.start_wait),
    )
