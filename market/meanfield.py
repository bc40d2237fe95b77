"""The mean-field service: population statistics per agent type, served from a cached snapshot.

Agents report their state each slot (the runtime batches the reports into one PopulationReport);
the slot's agreed prices arrive as a TradeReport. The service keeps, per type, the moments of the
net position, a fixed-bin histogram and the share of buyers, plus trade-price statistics over a
window of recent slots, and a guidance price (the volume-weighted average price of that window) for
strategies to anchor on. A query is answered from the cached snapshot; the snapshot is recomputed
only when a report arrived since (``recomputations`` counts it). Everything is vectorised with numpy.

It runs on the bus like any other party: :meth:`MeanFieldService.handle` is its handler.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from market.lq import LQType
from market.lq import solve as solve_lq
from negotiator.messages import PopulationReport, SnapshotQuery, TradeReport


class TypeStats(msgspec.Struct, frozen=True):
    """Statistics of one agent type's net positions (base units; positive: buying)."""

    count: int
    buyers: int
    sellers: int
    mean: float
    std: float
    minimum: int
    maximum: int
    histogram: list[int]
    """Counts per bin of ``Snapshot.bin_edges`` (values outside are clipped to the end bins)."""
    reservation_mean: float
    drift: float = 0.0
    """1-Wasserstein distance between this type's distribution of net positions in this slot and
    in the previous reported slot (same bins: the area between the two CDFs); 0 for the first."""


class PriceStats(msgspec.Struct, frozen=True):
    """Agreed prices over the recent window (msat per 1,000 units)."""

    trades: int
    volume: int
    vwap: float
    mean: float
    std: float
    minimum: int
    maximum: int


class Guidance(msgspec.Struct, frozen=True):
    """Equilibrium guidance for one type in the coming slot (from the LQ mean-field model)."""

    price: float
    """Expected clearing price (msat per 1,000 units): the recent VWAP moved by the population's
    equilibrium imbalance."""
    position: float
    """Expected net position left after the slot's trading (units; positive: still buying)."""
    traded_share: float
    """1 - position / mean position: the share of the type's need the market is expected to meet."""


@dataclass(frozen=True, slots=True)
class GuidanceModel:
    """The within-slot trading game behind the guidance, as a typed LQ mean-field-type game.

    Each type's state x is its remaining net position, traded away at rate u (dx = -u dt over a
    slot of length 1); trading costs 1/2 r u^2 (friction: price concessions), a position left at
    the end costs 1/2 q_T x^2 (settling with the grid), and holding a position on the crowded
    side costs s x x_bar. The types' equilibrium mean paths give the expected leftover
    positions; the expected clearing price is the recent VWAP plus ``impact`` times the
    population's mean imbalance over the slot, relative to its mean absolute position.
    """

    r: float = 1.0
    q_T: float = 4.0  # noqa: N815 (the paper's symbol)
    s: float = 0.5
    impact: float = 20_000.0
    """msat per 1,000 units for a population entirely on one side."""
    steps: int = 24


class Snapshot(msgspec.Struct, frozen=True):
    """What the service answers: the population of the last reported slot and recent prices."""

    slot: int
    version: int
    types: dict[str, TypeStats]
    bin_edges: list[float]
    prices: PriceStats | None
    guidance_price: int | None
    """Volume-weighted average price of the recent window; None before any trade."""
    guidance: dict[str, Guidance] = {}
    """Per type: expected clearing price and leftover position in the coming slot (empty until
    a price has been seen)."""


class MeanFieldService:
    """Keeps the population statistics; answer queries from the cached snapshot."""

    def __init__(
        self,
        *,
        bins: int = 32,
        span: float = 5000.0,
        price_window: int = 4,
        model: GuidanceModel | None = None,
        guidance: bool = True,
    ) -> None:
        if bins < 1 or span <= 0 or price_window < 1:
            raise ValueError("bins, span and price_window must be positive")
        self.bin_edges = np.linspace(-span, span, bins + 1)
        self.model = model or GuidanceModel()
        self.guidance = guidance
        """Solve the per-type guidance with every snapshot (off: statistics only)."""
        self._trades: deque[tuple[np.ndarray, np.ndarray]] = deque(maxlen=price_window)
        self._report: PopulationReport | None = None
        self._previous: dict[str, np.ndarray] = {}
        self._current: dict[str, np.ndarray] = {}
        self._hist_slot: int | None = None
        self._snapshot: Snapshot | None = None
        self._dirty = True
        self._version = 0
        self.recomputations = 0
        """How many times the snapshot was rebuilt (queries between reports reuse it)."""

    def handle(self, message: Any) -> Snapshot | None:
        """The bus handler: reports update the state, queries get the snapshot."""
        if isinstance(message, SnapshotQuery):
            return self.snapshot()
        if isinstance(message, PopulationReport):
            self._report = message
            self._dirty = True
            return None
        if isinstance(message, TradeReport):
            self._trades.append(
                (np.asarray(message.prices, np.int64), np.asarray(message.quantities, np.int64))
            )
            self._dirty = True
            return None
        raise TypeError(f"the mean-field service does not take {type(message).__name__}")

    def snapshot(self) -> Snapshot:
        """The current snapshot, rebuilt only if something was reported since the last one."""
        if self._dirty or self._snapshot is None:
            self._snapshot = self._compute()
            self._dirty = False
        return self._snapshot

    def _compute(self) -> Snapshot:
        self.recomputations += 1
        self._version += 1
        types: dict[str, TypeStats] = {}
        slot = -1
        report = self._report
        if report is not None:
            slot = report.slot
            n = len(report.net)
            codes = np.fromiter(report.types, np.int64, n)
            net = np.fromiter(report.net, np.int64, n)
            reservation = np.fromiter(report.reservation, np.int64, n)
            if slot != self._hist_slot:  # a new slot's report: its histograms become "previous"
                self._previous, self._hist_slot = self._current, slot
                self._current = {}
            types = self._type_stats(report.type_names, codes, net, reservation)
        prices, guidance = self._price_stats()
        wanted = self.guidance and guidance is not None and types
        advice = self._guidance(types, guidance) if wanted and guidance is not None else {}
        return Snapshot(
            slot, self._version, types, self.bin_edges.tolist(), prices, guidance, advice
        )

    def _guidance(self, types: dict[str, TypeStats], vwap: float) -> dict[str, Guidance]:
        """Solve the slot's LQ mean-field-type game for every type (see GuidanceModel)."""
        model = self.model
        names = [n for n, t in types.items() if t.count > 0]
        scale = sum(abs(types[n].mean) * types[n].count for n in names) / sum(
            types[n].count for n in names
        )
        if scale <= 0:
            return {n: Guidance(float(vwap), 0.0, 1.0) for n in names}
        kinds = [
            LQType(
                weight=float(types[n].count),
                a=0.0,
                b=-1.0,
                sigma=float(types[n].std) / scale,
                q=0.0,
                r=model.r,
                s=model.s,
                q_T=model.q_T,
                x0=float(types[n].mean) / scale,
            )
            for n in names
        ]
        solution = solve_lq(kinds, steps=model.steps, tol=1e-9)  # guidance, not a proof
        pressure = float(solution.mean_field.mean())  # the slot's average imbalance, in scale
        price = float(vwap) + model.impact * pressure
        out = {}
        for i, n in enumerate(names):
            left = float(solution.mean[-1, i]) * scale
            mean = float(types[n].mean)
            share = 1.0 - left / mean if mean else 1.0
            out[n] = Guidance(price, left, share)
        return out

    def _type_stats(
        self, names: list[str], codes: np.ndarray, net: np.ndarray, reservation: np.ndarray
    ) -> dict[str, TypeStats]:
        """Every type's statistics at once: grouped sums by bincount, no per-type masks."""
        kinds = len(names)
        bins = len(self.bin_edges) - 1
        lo, hi = float(self.bin_edges[0]), float(self.bin_edges[-1])
        x = net.astype(np.float64)
        count = np.bincount(codes, minlength=kinds)
        safe = np.maximum(count, 1)
        mean = np.bincount(codes, weights=x, minlength=kinds) / safe
        square = np.bincount(codes, weights=x * x, minlength=kinds) / safe
        var = np.maximum(square - mean * mean, 0.0)
        buyers = np.bincount(codes[net > 0], minlength=kinds)
        sellers = np.bincount(codes[net < 0], minlength=kinds)
        res_mean = np.bincount(codes, weights=reservation, minlength=kinds) / safe
        low = np.full(kinds, np.iinfo(np.int64).max)
        high = np.full(kinds, np.iinfo(np.int64).min)
        np.minimum.at(low, codes, net)
        np.maximum.at(high, codes, net)
        # the fixed bins are uniform: a bin index by arithmetic, then one bincount for all types
        scaled = x - lo
        scaled *= bins / (hi - lo)
        np.clip(scaled, 0, bins - 1, out=scaled)  # values beyond the span go to the end bins
        index = scaled.astype(np.int64)
        index += codes * bins
        hist = np.bincount(index, minlength=kinds * bins).reshape(kinds, bins)
        out: dict[str, TypeStats] = {}
        for code, name in enumerate(names):
            if count[code] == 0:
                continue
            self._current[name] = hist[code]
            out[name] = TypeStats(
                count=int(count[code]),
                buyers=int(buyers[code]),
                sellers=int(sellers[code]),
                mean=float(mean[code]),
                std=float(np.sqrt(var[code])),
                minimum=int(low[code]),
                maximum=int(high[code]),
                histogram=hist[code].tolist(),
                reservation_mean=float(res_mean[code]),
                drift=self._drift(self._previous.get(name), hist[code]),
            )
        return out

    def _drift(self, before: np.ndarray | None, now: np.ndarray) -> float:
        """W1 between two histograms on the service's bins: sum |F_before - F_now| * width."""
        if before is None or before.sum() == 0 or now.sum() == 0:
            return 0.0
        cdf_before = np.cumsum(before) / before.sum()
        cdf_now = np.cumsum(now) / now.sum()
        return float((np.abs(cdf_before - cdf_now) * np.diff(self.bin_edges)).sum())

    def gauges(self) -> dict[str, Any]:
        """The figures the metrics export: drift and buyers / sellers per type, prices.

        Read from the last snapshot served, never recomputed here: Prometheus scrapes from the
        exporter's thread, and only the event loop's thread may rebuild the snapshot.
        """
        snap = self._snapshot
        if snap is None:
            return {}
        return {
            "drift": {name: t.drift for name, t in snap.types.items()},
            "agents": {
                (name, role): n
                for name, t in snap.types.items()
                for role, n in (("buyer", t.buyers), ("seller", t.sellers))
            },
            "guidance_price": snap.guidance_price,
            "vwap": snap.prices.vwap if snap.prices else None,
        }

    def _price_stats(self) -> tuple[PriceStats | None, int | None]:
        if not self._trades:
            return None, None
        p = np.concatenate([t[0] for t in self._trades])
        q = np.concatenate([t[1] for t in self._trades])
        if p.size == 0:
            return None, None
        volume = int(q.sum())
        vwap = float((p * q).sum() / volume)
        stats = PriceStats(
            trades=int(p.size),
            volume=volume,
            vwap=vwap,
            mean=float(p.mean()),
            std=float(p.std()),
            minimum=int(p.min()),
            maximum=int(p.max()),
        )
        return stats, round(vwap)
