"""Sharded runs over NATS: the coordinator's hub, the wire it speaks, and the merged summary.

A community of N members is split into n neighbourhoods (contiguous blocks of addresses,
:func:`negotiator.assembly.members`), one per worker process
(:mod:`negotiator.worker`). Every worker draws the same community from the seed, builds the
traders and the rail of its own neighbourhood only, and matches and negotiates among them: the
negotiations are shard-local and never cross the network. What does cross it, on NATS through
:class:`~negotiator.natsbus.NatsBus`, is what makes the shards one market:

- each slot, every worker sends the coordinator its population report and its last slot's
  trades, then asks for the snapshot; the coordinator's :class:`Hub` answers once every shard has
  reported the slot, from one mean-field service fed with the whole community (the reports
  merged in shard order: the same answer whatever order they came in, and the slot barrier
  that keeps the shards in step);
- every worker reports each finished slot (the coordinator's progress) and, at the end, its
  summary and latency samples, which :func:`merge` turns into one summary.

Everything a worker sends the hub is idempotent per shard and slot: a worker killed and resumed
from its state directory (:mod:`negotiator.recovery`) replays its interrupted slot and sends the
same reports again, which the hub recognises; a nats-server restart costs retries, not messages.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

from negotiator.messages import PopulationReport, SnapshotQuery, TradeReport, WireMessage
from negotiator.natsbus import envelope_decoder, shard_identity, subscribed
from negotiator.runtime_types import PRICE_LEVELS, SlotReport
from negotiator.signing import Keyring

_log = structlog.get_logger(__name__)

HUB = "hub"
"""Bus address of the coordinator (workers reach it over NATS)."""


def subject(run: str) -> str:
    """The subject the coordinator of run ``run`` listens on."""
    return f"neg.{run}.hub"


class Hello(msgspec.Struct, frozen=True, tag_field="kind", tag="hello"):
    """A worker joins (or, resumed, joins again): it is answered with the run's configuration."""

    shards: int


class Join(msgspec.Struct, frozen=True):
    """The answer to :class:`Hello`: the run's configuration (JSON)."""

    config: str


class SlotDone(msgspec.Struct, frozen=True, tag_field="kind", tag="slot_done"):
    """A worker finished a slot."""

    report: SlotReport


class Sketch(msgspec.Struct, frozen=True, array_like=True):
    """A shard's latency samples for merging quantiles: all of them (float64) up to
    :data:`SKETCH_POINTS`, else that many at evenly spaced ranks of the sorted samples, each
    standing for ``count / len(points)`` of them (rank error below 1 / SKETCH_POINTS)."""

    count: int
    points: bytes

    @classmethod
    def of(cls, samples: Any) -> Sketch:
        """The sketch of ``samples`` (a sequence of floats)."""
        data = np.sort(np.asarray(samples, np.float64))
        if data.size > SKETCH_POINTS:
            data = data[np.rint(np.linspace(0, data.size - 1, SKETCH_POINTS)).astype(np.int64)]
        return cls(len(samples), data.tobytes())


SKETCH_POINTS = 16_384
"""Points per shard sketch: 128 KB a sketch, whatever the shard's number of negotiations (raw
samples of 80k negotiations a shard were over NATS's default 1 MB payload)."""


class ShardDone(msgspec.Struct, frozen=True, tag_field="kind", tag="shard_done"):
    """A worker finished its run: its summary (JSON) and sketches of its latency samples."""

    summary: str
    latency: Sketch
    settle_latency: Sketch


ToHub = WireMessage | Hello | SlotDone | ShardDone
_hub_decoder = msgspec.msgpack.Decoder(ToHub)
_encoder = msgspec.msgpack.Encoder()


def merge_reports(reports: list[PopulationReport]) -> PopulationReport:
    """One report of the whole community from the shards' (in the order given)."""
    names: dict[str, int] = {}
    codes, nets, reservations = [], [], []
    for report in reports:
        local, net, reservation = report.arrays()
        remap = np.array([names.setdefault(n, len(names)) for n in report.type_names], np.int64)
        codes.append(remap[local] if local.size else local.astype(np.int64))
        nets.append(net)
        reservations.append(reservation)
    return PopulationReport.of(
        reports[0].slot,
        list(names),
        np.concatenate(codes),
        np.concatenate(nets),
        np.concatenate(reservations),
    )


class Hub:
    """The coordinator's side: joins, the slot barrier around the mean-field service, progress.

    ``service`` is the mean-field service (its ``handle`` takes reports and queries, as on a
    LocalBus). Call :meth:`attach` with a connected NATS client; :attr:`finished` is set once
    every shard has sent its :class:`ShardDone`.
    """

    def __init__(
        self,
        service: Any,
        shards: int,
        config_json: str,
        *,
        on_slot: Callable[[SlotReport], None] | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        self.service = service
        self.keyring = keyring
        """Verifies that each report comes from the shard it names (None: trust the network)."""
        self.refused = 0
        """Messages refused: undecodable, from no shard of the run, or not signed by it."""
        self.shards = shards
        self.config_json = config_json
        self.on_slot = on_slot
        self.nc: Client | None = None
        self.reports: dict[int, dict[int, PopulationReport]] = {}
        self.trades: dict[int, dict[int, TradeReport]] = {}
        self.snapshots: dict[int, bytes] = {}
        self.waiting: dict[int, list[str]] = {}
        self.slot_reports: dict[int, dict[int, SlotReport]] = {}
        self.done: dict[int, ShardDone] = {}
        self.joins = 0
        self.duplicates = 0
        """Reports a shard sent again (a retry, or a resumed worker replaying its slot)."""
        self.mismatches = 0
        """Replayed reports that differed from the first (a replay that was not deterministic)."""
        self._fed_trades = -1
        self.finished = asyncio.Event()

    async def attach(self, nc: Client, run: str) -> None:
        """Listen on the run's hub subject."""
        self.nc = nc
        await nc.subscribe(subject(run), cb=self._on_message)
        await subscribed(nc)

    async def _on_message(self, msg: Msg) -> None:
        try:
            envelope = envelope_decoder.decode(msg.data)
            shard = envelope.shard
            if not 0 <= shard < self.shards:
                raise ValueError(f"no shard {shard} in this run")
            message = _hub_decoder.decode(envelope.body)
            identity = shard_identity(shard)
            if (  # a Hello changes nothing: it asks for the configuration, keys come with it
                self.keyring is not None
                and not isinstance(message, Hello)
                and not self.keyring.verify(identity, envelope.body, envelope.signature)
            ):
                raise ValueError(f"not signed by {identity}")
        except (msgspec.MsgspecError, ValueError) as exc:
            self.refused += 1
            _log.warning("hub_refused", error=str(exc))
            return
        if isinstance(message, SnapshotQuery):
            self.waiting.setdefault(message.slot, []).append(msg.reply)
            self._answer(message.slot)
            return
        reply = b""
        if isinstance(message, Hello):
            self.joins += 1
            reply = _encoder.encode(Join(self.config_json))
        elif isinstance(message, PopulationReport):
            self._keep(self.reports, message.slot, shard, message)
            self._answer(message.slot)
        elif isinstance(message, TradeReport):
            self._keep(self.trades, message.slot, shard, message)
        elif isinstance(message, SlotDone):
            self._slot_done(shard, message.report)
        elif isinstance(message, ShardDone):
            self.done.setdefault(shard, message)
            if len(self.done) == self.shards:
                self.finished.set()
        if msg.reply:
            await self._publish(msg.reply, reply)

    def _keep(self, table: dict[int, dict[int, Any]], slot: int, shard: int, item: Any) -> None:
        seen = table.setdefault(slot, {})
        if shard in seen:
            self.duplicates += 1
            if seen[shard] != item:
                self.mismatches += 1
                _log.error("replay_differs", shard=shard, slot=slot, kind=type(item).__name__)
            return
        seen[shard] = item

    def _answer(self, slot: int) -> None:
        """Answer the queries for ``slot`` once every shard has reported it."""
        if slot not in self.snapshots:
            if slot >= 0 and len(self.reports.get(slot, {})) < self.shards:
                return
            if slot >= 0:
                self._feed(slot)
            self.snapshots[slot] = _encoder.encode(self.service.handle(SnapshotQuery(slot)))
        data = self.snapshots[slot]
        for reply in self.waiting.pop(slot, []):
            asyncio.get_running_loop().create_task(self._publish(reply, data))

    def _feed(self, slot: int) -> None:
        """Give the service the earlier slots' trades, then this slot's population, merged."""
        for earlier in range(self._fed_trades + 1, slot):
            shards = self.trades.get(earlier, {})
            if shards:
                parts = [shards[s] for s in sorted(shards)]
                prices = [p for t in parts for p in t.prices]
                quantities = [q for t in parts for q in t.quantities]
                self.service.handle(TradeReport(earlier, prices, quantities))
        self._fed_trades = max(self._fed_trades, slot - 1)
        reports = self.reports[slot]
        self.service.handle(merge_reports([reports[s] for s in sorted(reports)]))
        for old in [s for s in self.reports if s < slot - 2]:
            del self.reports[old]

    def _slot_done(self, shard: int, report: SlotReport) -> None:
        seen = self.slot_reports.setdefault(report.slot, {})
        if shard in seen:
            return
        seen[shard] = report
        if len(seen) == self.shards and self.on_slot is not None:
            self.on_slot(self.merged_slot(report.slot))

    def merged_slot(self, slot: int) -> SlotReport:
        """Slot ``slot`` over every shard (its duration: the slowest shard's)."""
        parts = self.slot_reports[slot].values()
        trades = self.trades.get(slot, {})
        prices = [p for t in trades.values() for p in t.prices]
        levels = tuple(float(v) for v in np.quantile(prices, PRICE_LEVELS)) if prices else ()
        return SlotReport(
            slot,
            sum(p.negotiations for p in parts),
            sum(p.agreements for p in parts),
            max(p.duration_s for p in parts),
            sum(p.traded for p in parts),
            levels,
        )

    async def _publish(self, reply: str, data: bytes) -> None:
        assert self.nc is not None
        try:
            await self.nc.publish(reply, data)
        except Exception as exc:  # a lost reply is retried by its requester
            _log.warning("hub_reply_failed", error=repr(exc))


_SUMS = (
    "agents",
    "negotiations",
    "agreements",
    "messages",
    "settled",
    "failed_settlements",
    "traded_units",
    "traded_wh",
    "paid_msat",
    "fees_msat",
    "agent_failures",
    "overflow",
    "grid_import_wh",
    "grid_export_wh",
    "bought_wh",
    "community_cost_msat",
    "grid_only_cost_msat",
)
_COUNTS = (
    "outcomes",
    "failure_reasons",
    "rejected_messages",
    "late_messages",
    "message_counts",
    "excluded",
    "aftermarket",
)


def quantiles(sketches: list[Sketch]) -> dict[str, float]:
    """p50, p95 and p99 in ms over every shard's sketch, each point weighted by what it stands
    for (exact, as numpy's Hazen quantiles, while no shard has more than
    :data:`SKETCH_POINTS` samples)."""
    values, weights = [], []
    for sketch in sketches:
        points = np.frombuffer(sketch.points, np.float64)
        if points.size:
            values.append(points)
            weights.append(np.full(points.size, sketch.count / points.size))
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    value = np.concatenate(values)
    order = np.argsort(value, kind="stable")
    value, weight = value[order], np.concatenate(weights)[order]
    # each point sits at the middle of the mass it stands for: with equal weights these are
    # Hazen's plotting positions (numpy's method="hazen")
    rank = (np.cumsum(weight) - weight / 2) / weight.sum()
    out = {}
    for q in (0.5, 0.95, 0.99):
        out[f"p{int(q * 100)}"] = round(float(np.interp(q, rank, value)) * 1000, 4)
    return out


def merge(done: dict[int, ShardDone], wall_s: float) -> dict[str, Any]:
    """One summary of the whole run from the shards' (JSON-ready).

    Counts and money add up; latency quantiles are over every shard's samples (sketched); the
    shards ran side by side, so the run's negotiation time is the slowest shard's and
    ``negotiations_per_s`` is every shard's negotiations over it. ``ledger_digest`` hashes the
    shards' digests in shard order.
    """
    shards = [msgspec.json.decode(done[i].summary) for i in sorted(done)]
    out: dict[str, Any] = {k: v for k, v in shards[0].items() if not isinstance(v, int | float)}
    for key in _SUMS:
        out[key] = sum(s[key] for s in shards)
    for key in _COUNTS:
        merged: dict[str, int] = {}
        for s in shards:
            for name, n in s[key].items():
                merged[name] = merged.get(name, 0) + n
        out[key] = dict(sorted(merged.items()))
    negotiations, agreements = out["negotiations"], out["agreements"]
    nego_s = max(s["negotiation_s"] for s in shards)
    offers = sum(s["offers_per_s"] * s["negotiation_s"] for s in shards)
    out["slots"] = min(s["slots"] for s in shards)
    out["seed"] = shards[0]["seed"]
    out["agreement_rate"] = round(agreements / negotiations, 6) if negotiations else 0.0
    out["messages_per_negotiation"] = (
        round(out["messages"] / negotiations, 4) if negotiations else 0.0
    )
    out["negotiation_s"] = round(nego_s, 4)
    out["clearing_s"] = max(s.get("clearing_s", 0.0) for s in shards)
    out["negotiations_per_s"] = round(negotiations / nego_s, 1) if nego_s else 0.0
    out["offers_per_s"] = round(offers / nego_s, 1) if nego_s else 0.0
    out["latency_ms"] = quantiles([done[i].latency for i in sorted(done)])
    out["settle_latency_ms"] = quantiles([done[i].settle_latency for i in sorted(done)])
    grid_only = out["grid_only_cost_msat"]
    out["savings"] = round(1 - out["community_cost_msat"] / grid_only, 6) if grid_only > 0 else 0.0
    out["wall_s"] = round(wall_s, 4)
    out["run_s"] = max(s["wall_s"] for s in shards)
    """The slowest shard's run: its slots and the settlement of its last agreement."""
    out["interrupted"] = any(s["interrupted"] for s in shards)
    digest = hashlib.sha256()
    for i, s in enumerate(shards):
        digest.update(f"{i}:{s['ledger_digest']};".encode())
    out["ledger_digest"] = digest.hexdigest()
    out["ledger_path"] = " ".join(str(s["ledger_path"]) for s in shards)  # one per shard
    out["payments"] = {}  # each shard's rail is its own: see "shards"
    out["workers"] = len(shards)
    out["shards"] = [
        {
            "agents": s["agents"],
            "negotiations": s["negotiations"],
            "agreements": s["agreements"],
            "negotiations_per_s": s["negotiations_per_s"],
            "ledger_path": s["ledger_path"],
            "ledger_digest": s["ledger_digest"],
            "payments": s["payments"],
        }
        for s in shards
    ]
    return out


__all__ = [
    "HUB",
    "Hello",
    "Hub",
    "Join",
    "ShardDone",
    "Sketch",
    "SlotDone",
    "merge",
    "merge_reports",
    "quantiles",
    "subject",
]
