"""The run summary as a rich table (the kernel's figures, payments, market quality) and the
progress bar."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from negotiator.runtime_types import SlotReport


def progress_bar(console: Console, quiet: bool, unit: str = "slot") -> Progress:
    """The progress bar of ``simulate`` (per slot) and ``train`` (per day): a task's ``info``
    field says what the last step did; disabled when ``quiet``."""
    return Progress(
        TextColumn(f"[bold]{unit}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
    )


def slot_info(report: SlotReport) -> str:
    """The progress bar's ``info`` after a slot: its counts, with the slot they are for."""
    return f"slot {report.slot}: {report.negotiations} negotiations, {report.agreements} agreed"


def summary_table(data: dict[str, object], quality: Sequence[str] = ()) -> Table:
    """The ``simulate`` summary (the JSON's figures) as a two-column table; ``quality``: a
    domain run's market-quality keys, shown as they are."""
    table = Table(title="Run summary", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    latency = data["latency_ms"]
    settle = data["settle_latency_ms"]
    assert isinstance(latency, dict) and isinstance(settle, dict)
    rows = [
        ("engine", data["engine"]),
        ("agents / slots", f"{data['agents']} / {data['slots']}"),
        ("negotiations", data["negotiations"]),
        ("agreements", f"{data['agreements']} ({float(str(data['agreement_rate'])):.1%})"),
        ("negotiations / s", data["negotiations_per_s"]),
        ("offers / s", data["offers_per_s"]),
        ("latency p50 / p95 / p99", f"{latency['p50']} / {latency['p95']} / {latency['p99']} ms"),
        *_wait_rows(data),
        ("settle p50 / p95", f"{settle['p50']} / {settle['p95']} ms"),
        ("settled / failed", f"{data['settled']} / {data['failed_settlements']}"),
        *_traded_rows(data),
        *_payment_rows(data),
        *([(key, data[key]) for key in quality] if quality else _quality_rows(data)),
        ("rejected messages", data["rejected_messages"] or 0),
        ("late moves (void)", data["late_messages"] or 0),
        ("ledger", data["ledger_path"]),
        ("ledger digest", str(data["ledger_digest"])[:16] + "..."),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    return table


def _wait_rows(data: dict[str, object]) -> list[tuple[str, object]]:
    wait = data.get("start_wait_ms")  # absent from a cluster's summary
    if not isinstance(wait, dict) or not wait:
        return []
    return [("start wait p50 / p95", f"{wait['p50']} / {wait['p95']} ms")]


def _traded_rows(data: dict[str, object]) -> list[tuple[str, object]]:
    paid = ("paid", f"{int(str(data['paid_msat'])) // 1000:,} sat")
    if "traded_wh" not in data:  # a domain run: its own unit
        return [("traded", f"{int(str(data['traded_units'])):,} {data.get('unit', 'unit')}s"), paid]
    return [
        ("traded", f"{int(str(data['traded_wh'])) / 1000:,.1f} kWh"),
        paid,
        ("community savings vs grid only", f"{float(str(data['savings'])):.1%}"),
    ]


def _quality_rows(data: dict[str, object]) -> list[tuple[str, object]]:
    if "efficiency" not in data:
        return []
    naive = data.get("naive")
    beside = f" (naive {naive['efficiency']})" if isinstance(naive, dict) else ""
    rows: list[tuple[str, object]] = [
        ("scenario", data["scenario"]),
        ("efficiency vs optimum", f"{data['efficiency']}{beside}"),
        (
            "peak import (grid only / optimum)",
            f"{data['peak_import_wh']} Wh ({data['grid_only_peak_import_wh']} /"
            f" {data['optimum_peak_import_wh']}), reduction {float(str(data['peak_reduction'])):.1%}",
        ),
        ("Jain index of gains", data["jain_index"]),
        ("price volatility (CV of slot prices)", data["price_volatility"]),
        ("self-sufficiency", data["self_sufficiency"]),
    ]
    if isinstance(naive, dict):
        rows.append(
            (
                "naive: peak reduction / Jain / volatility",
                f"{float(naive['peak_reduction']):.1%} / {naive['jain_index']} /"
                f" {naive['price_volatility']}",
            )
        )
    return rows


def _payment_rows(data: dict[str, object]) -> list[tuple[str, object]]:
    p = data.get("payments")
    if not isinstance(p, dict) or not p.get("payments"):
        return []
    net = p["network_latency_ms"]
    return [
        ("rail", data["rail"]),
        ("payments ok / on chain", f"{p['success_rate']:.1%} / {p['onchain']}"),
        ("routing fees", f"{p['fees_msat']:,} msat ({p['fee_ppm']} ppm)"),
        ("hops / parts (mean)", f"{p['hops_mean']} / {p['parts_mean']}"),
        ("network latency p50 / p95", f"{net['p50']} / {net['p95']} ms"),
    ]
