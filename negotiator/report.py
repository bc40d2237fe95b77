"""The run report: ``simulate --report DIR`` writes the summary and plots, ``report DIR`` one page.

:func:`write` takes the run's summary and its :class:`RunTrace` (what happened per slot, recorded
by the simulation) and writes ``summary.json`` and four PNGs into the directory:

- ``community.png``: the community's load, generation and grid exchange over the horizon, with the
  grid-only and optimal imports beside the realised one when the run has them, and the prices;
- ``prices.png``: the agreed prices per slot (median, 25-75% and 10-90% bands) between the
  tariff's import and export prices;
- ``latency.png``: the propose-to-accept latency histogram (log scale), with p50 / p95 / p99;
- ``population.png``: the mean-field service's histogram of net positions per agent type over
  time (one heat map per type).

:func:`render` turns a directory written by :func:`write` into ``index.html``: one self-contained
page (the plots inlined) with the headline figures on top. Plots are drawn with matplotlib's
Agg backend, so no display is needed.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PLOTS = ("community", "prices", "latency", "population")
"""The plots :func:`write` draws, in the order the page shows them."""

_CAPTIONS = {
    "community": "Community load, generation and grid exchange per slot",
    "prices": "Agreed prices per slot",
    "latency": "Negotiation latency, propose to accept",
    "population": "Mean-field histogram of net positions per agent type",
}


@dataclass
class RunTrace:
    """What a run did slot by slot, for the report."""

    slot_hours: float
    """Length of a slot in hours."""
    series: dict[str, np.ndarray] = field(default_factory=dict)
    """Community totals per slot in base units (Wh): ``load``, ``generation``, ``grid import``,
    ``grid export``, and where known ``battery`` (+ charging), ``grid import, grid only`` and
    ``grid import, optimum``."""
    import_price: np.ndarray | None = None
    export_price: np.ndarray | None = None
    """The tariff per slot (msat per 1,000 units)."""
    prices: np.ndarray | None = None
    """Slots x 5: agreed prices' p10, p25, p50, p75, p90; NaN in a slot without trades."""
    latency_ms: np.ndarray | None = None
    """Every negotiation's propose-to-accept latency."""
    population: dict[str, np.ndarray] = field(default_factory=dict)
    """Per agent type: slots x bins counts of the net positions the mean-field service saw."""
    bin_edges: np.ndarray | None = None
    quantity_label: str = "kW (community)"
    quantity_scale: float | None = None
    """Series are drawn multiplied by this (None: Wh per slot to kW)."""
    price_label: str = "sat / kWh"
    price_scale: float = 1000.0
    """Prices (msat per 1,000 units) are drawn divided by this."""
    population_label: str = "kWh"
    population_scale: float = 1000.0
    time_label: str = "hour"


def histograms(snapshot: Any, slot: int) -> dict[str, list[int]]:
    """The mean-field service's histograms of net positions per type in its ``snapshot``
    (``market.Snapshot``), if it is ``slot``'s; empty otherwise."""
    if snapshot is None or snapshot.slot != slot:
        return {}
    return {name: stats.histogram for name, stats in snapshot.types.items()}


def slot_figures(
    levels: list[tuple[float, ...]],
    population: list[dict[str, list[int]]],
    bin_edges: np.ndarray,
    latency_s: Any,
) -> dict[str, Any]:
    """:class:`RunTrace`'s ``prices``, ``latency_ms``, ``population`` and ``bin_edges`` from
    what a run recorded per slot: its price levels, the service's :func:`histograms`, and the
    latency samples (seconds; None when not kept)."""
    width = max((len(q) for q in levels), default=5)
    prices = np.full((len(levels), width), np.nan)
    for t, q in enumerate(levels):
        if q:
            prices[t] = q
    names = sorted({n for hist in population for n in hist})
    bins = len(bin_edges) - 1
    per_type = {n: np.array([hist.get(n, [0] * bins) for hist in population]) for n in names}
    return {
        "prices": prices,
        "latency_ms": np.asarray(latency_s if latency_s is not None else [], np.float64) * 1000,
        "population": per_type,
        "bin_edges": bin_edges if per_type else None,
    }


def write(directory: Path, summary: dict[str, Any], trace: RunTrace) -> list[Path]:
    """Write ``summary.json`` and the plots into ``directory``; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / "summary.json"]
    written[0].write_text(json.dumps(summary, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    for name, draw in (
        ("community", _community),
        ("prices", _prices),
        ("latency", _latency),
        ("population", _population),
    ):
        path = directory / f"{name}.png"
        if draw(trace, path):
            written.append(path)
    return written


def render(directory: Path) -> Path:
    """Render ``directory`` (written by :func:`write`) into one self-contained HTML page."""
    summary_path = directory / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path} not found: write it with simulate --report DIR")
    summary = json.loads(summary_path.read_text())
    rows = "\n".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in _headline(summary)
    )

    def caption(name: str) -> str:
        if name == "community" and "unit" in summary:  # a domain run: what was traded
            return f"{str(summary['unit']).capitalize()}s traded per slot"
        return _CAPTIONS[name]

    figures = []
    for name in PLOTS:
        png = directory / f"{name}.png"
        if png.is_file():
            data = base64.b64encode(png.read_bytes()).decode()
            figures.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{name}">'
                f"<figcaption>{html.escape(caption(name))}</figcaption></figure>"
            )
    full = html.escape(json.dumps(summary, indent=2))
    title = "negotiator run" + (f": {summary['scenario']}" if "scenario" in summary else "")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 2rem; }}
th, td {{ padding: 0.25rem 0.75rem; border-bottom: 1px solid #ddd; text-align: left; }}
td {{ font-variant-numeric: tabular-nums; }}
figure {{ margin: 0 0 2rem 0; }} img {{ max-width: 100%; }}
figcaption {{ color: #555; }} pre {{ background: #f6f6f6; padding: 1rem; overflow-x: auto; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<table>
{rows}
</table>
{"".join(figures)}
<details><summary>Full summary (JSON)</summary><pre>{full}</pre></details>
</body></html>
"""
    out = directory / "index.html"
    out.write_text(page)
    return out


def _headline(s: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = [
        ("agents / slots", f"{s.get('agents')} / {s.get('slots')}"),
        ("negotiations", f"{s.get('negotiations', 0):,}"),
        ("agreement rate", _pct(s.get("agreement_rate"))),
        ("settled / failed", f"{s.get('settled')} / {s.get('failed_settlements')}"),
    ]
    if "savings" in s:
        rows.append(("savings against grid only", _pct(s["savings"])))
    if "unit" in s:
        rows.append((f"traded ({s['unit']}s)", f"{s.get('traded_units', 0):,}"))
    latency = s.get("latency_ms") or {}
    if latency:
        rows.append(
            (
                "latency p50 / p95 / p99",
                f"{latency.get('p50')} / {latency.get('p95')} / {latency.get('p99')} ms",
            )
        )
    naive = s.get("naive") or {}

    def beside(key: str, fmt: Any = str) -> str:
        mine = fmt(s[key])
        return f"{mine} (naive {fmt(naive[key])})" if key in naive else mine

    for key, label, fmt in (
        ("efficiency", "efficiency against the optimum", str),
        ("peak_reduction", "peak import reduction against grid only", _pct),
        ("jain_index", "Jain index of gains", str),
        ("price_volatility", "price volatility (CV of slot prices)", str),
        ("self_sufficiency", "self-sufficiency", _pct),
    ):
        if key in s:
            rows.append((label, beside(key, fmt)))
    return rows


def _pct(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1%}"


def _hours(trace: RunTrace, slots: int) -> np.ndarray:
    return np.arange(slots) * trace.slot_hours


def _community(trace: RunTrace, path: Path) -> bool:
    import matplotlib.pyplot as plt

    series = trace.series
    if not series:
        return False
    slots = len(next(iter(series.values())))
    hours = _hours(trace, slots)
    scale, ps = trace.quantity_scale, trace.price_scale
    to_kw = 1 / (1000 * trace.slot_hours) if scale is None else scale  # Wh per slot to kW
    fig, (ax, bx) = plt.subplots(
        2, 1, figsize=(11, 6.5), sharex=True, height_ratios=[3, 1], layout="constrained"
    )
    style: dict[str, dict[str, Any]] = {
        "load": {"color": "#444444"},
        "generation": {"color": "#e6a700"},
        "grid import": {"color": "#c0392b", "linewidth": 2},
        "grid export": {"color": "#2e86c1"},
        "battery": {"color": "#27ae60", "alpha": 0.8},
        "grid import, grid only": {"color": "#c0392b", "linestyle": ":"},
        "grid import, optimum": {"color": "#8e44ad", "linestyle": "--"},
    }
    for name, values in series.items():
        ax.step(hours, np.asarray(values) * to_kw, where="post", label=name, **style.get(name, {}))
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_ylabel(trace.quantity_label)
    ax.legend(ncol=4, fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    tariff = trace.import_price is not None and trace.export_price is not None
    if tariff or trace.prices is not None:
        if trace.import_price is not None and trace.export_price is not None:
            bx.step(hours, trace.import_price / ps, where="post", label="import", color="#c0392b")
            bx.step(hours, trace.export_price / ps, where="post", label="export", color="#2e86c1")
        if trace.prices is not None:
            bx.plot(hours, trace.prices[:, 2] / ps, ".", label="agreed (median)", color="k")
        bx.set_ylabel(trace.price_label)
        bx.legend(ncol=3, fontsize=8, loc="upper left")
        bx.grid(alpha=0.3)
    bx.set_xlabel(trace.time_label)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _prices(trace: RunTrace, path: Path) -> bool:
    import matplotlib.pyplot as plt

    q = trace.prices
    if q is None or not np.isfinite(q).any():
        return False
    hours = _hours(trace, len(q))
    fig, ax = plt.subplots(figsize=(11, 4), layout="constrained")
    sat = q / (ps := trace.price_scale)
    ax.fill_between(hours, sat[:, 0], sat[:, 4], step="post", alpha=0.2, label="10-90%")
    ax.fill_between(hours, sat[:, 1], sat[:, 3], step="post", alpha=0.4, label="25-75%")
    ax.step(hours, sat[:, 2], where="post", color="k", label="median")
    if trace.import_price is not None and trace.export_price is not None:
        ax.step(hours, trace.import_price / ps, where="post", color="#c0392b", label="import")
        ax.step(hours, trace.export_price / ps, where="post", color="#2e86c1", label="export")
    ax.set_xlabel(trace.time_label)
    ax.set_ylabel(trace.price_label)
    ax.legend(ncol=5, fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _latency(trace: RunTrace, path: Path) -> bool:
    import matplotlib.pyplot as plt

    ms = trace.latency_ms
    if ms is None or ms.size == 0:
        return False
    ms = np.maximum(ms, 1e-3)
    fig, ax = plt.subplots(figsize=(11, 3.5), layout="constrained")
    bins = np.logspace(np.log10(ms.min()), np.log10(ms.max()) + 1e-9, 60)
    ax.hist(ms, bins=bins.tolist(), color="#5d6d7e")
    ax.set_xscale("log")
    for q, color in ((50, "#27ae60"), (95, "#e67e22"), (99, "#c0392b")):
        v = float(np.percentile(ms, q))
        ax.axvline(v, color=color, linestyle="--", label=f"p{q} {v:.1f} ms")
    ax.set_xlabel("ms, propose to accept")
    ax.set_ylabel("negotiations")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _population(trace: RunTrace, path: Path) -> bool:
    import matplotlib.pyplot as plt

    if not trace.population or trace.bin_edges is None:
        return False
    names = sorted(trace.population)
    edges = trace.bin_edges
    fig, axes = plt.subplots(
        len(names), 1, figsize=(11, 1.9 * len(names) + 0.6), sharex=True, layout="constrained"
    )
    axes = np.atleast_1d(axes)
    for ax, name in zip(axes, names, strict=True):
        counts = np.asarray(trace.population[name], np.float64)  # slots x bins
        hours = _hours(trace, counts.shape[0] + 1)
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        edge = edges / trace.population_scale
        mesh = ax.pcolormesh(hours, edge, share.T, cmap="viridis", shading="flat")
        ax.axhline(0, color="white", linewidth=0.5)
        ax.set_ylabel(f"{name}\n{trace.population_label}", fontsize=8)
        fig.colorbar(mesh, ax=ax, label="share", pad=0.01)
    axes[-1].set_xlabel(f"{trace.time_label} (positive: buying)")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
