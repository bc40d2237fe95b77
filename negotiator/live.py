"""``negotiator simulate --live``: the run's figures in the terminal, refreshed as it goes.

A rich Live panel when stdout is a terminal (throughput, latency quantiles, agreement rate, the
slot and its price, settlement and payment success); one plain line per slot otherwise, so a log
file or a pipe gets readable text, not control sequences.
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from negotiator.metrics import RunMetrics
from negotiator.runtime import SlotReport


class LiveView:
    """Updated once per slot by :meth:`on_slot`; a context manager around the run."""

    def __init__(self, console: Console, metrics: RunMetrics, slots: int) -> None:
        self.console = console
        self.metrics = metrics
        self.slots = slots
        self.done = 0
        self.negotiations = 0
        self.agreements = 0
        self.started = time.perf_counter()
        self.interactive = console.is_terminal
        self._live: Live | None = None
        self._gone = False

    def __enter__(self) -> LiveView:
        self.started = time.perf_counter()
        if self.interactive:
            self._live = Live(self.render(), console=self.console, refresh_per_second=4)
            self._live.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(kind, value, tb)
        elif kind is None and not self._gone:  # settlement ends after the last slot: say how
            f = self.figures()
            self.console.print(
                f"done: settled/failed {f['settled / failed']}; payments ok {f['payments ok']}",
                soft_wrap=True,
                highlight=False,
            )

    def on_slot(self, report: SlotReport) -> None:
        """A slot has closed: count it and redraw (or print its line)."""
        self.done += 1
        self.negotiations += report.negotiations
        self.agreements += report.agreements
        if self._live is not None:
            self._live.update(self.render())
        elif not self._gone:
            try:
                self.console.print(self.line(report), soft_wrap=True, highlight=False)
            except SystemExit:  # rich's answer to a closed pipe (`| head`): stop printing,
                self._gone = True  # let the run finish and settle what it agreed

    # -- figures -------------------------------------------------------------------------------

    def figures(self) -> dict[str, str]:
        """What the view shows, as text."""
        m = self.metrics
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        latency = m.negotiation_latency
        quantiles = " / ".join(
            f"{latency.quantile(q) * 1000:.1f}" if latency.samples else "-"
            for q in (0.5, 0.95, 0.99)
        )
        settled = m.settlements.get("settled", 0)
        failed = m.settlements.get("failed", 0)
        payments = m.payments.outcomes if m.payments is not None else {}
        ok = payments.get("succeeded", 0) + payments.get("onchain", 0)
        total = sum(payments.values())
        gauges = m.population()
        guidance = gauges.get("guidance_price")
        return {
            "slot": f"{self.done} / {self.slots}",
            "negotiations / s (wall)": f"{self.negotiations / elapsed:,.0f}",
            "latency p50 / p95 / p99 (ms)": quantiles,
            "agreement rate": (
                f"{self.agreements / self.negotiations:.1%}" if self.negotiations else "-"
            ),
            "slot price (msat/1k units)": f"{m.slot_price:,.0f}"
            if m.slot_price is not None
            else "-",
            "guidance price (msat/1k units)": f"{guidance:,}" if guidance is not None else "-",
            "in flight": f"{m.in_flight:,}",
            "settled / failed": f"{settled:,} / {failed:,}",
            "payments ok": f"{ok / total:.1%} of {total:,}" if total else "-",
        }

    def render(self) -> Group:
        """The Live panel: a progress bar over the slots and a table of figures."""
        table = Table(title="negotiator simulate", show_header=False, min_width=56)
        table.add_column("what", style="bold")
        table.add_column("value", justify="right")
        for name, value in self.figures().items():
            table.add_row(name, value)
        bar = ProgressBar(total=max(self.slots, 1), completed=self.done, width=56)
        return Group(table, bar)

    def line(self, report: SlotReport) -> str:
        """One slot as a plain line (no terminal)."""
        f = self.figures()
        return (
            f"slot {f['slot']}: {report.negotiations} negotiations, {report.agreements} agreed;"
            f" {f['negotiations / s (wall)']}/s; latency p50/p95/p99 {f['latency p50 / p95 / p99 (ms)']}"
            f" ms; price {f['slot price (msat/1k units)']}; settled/failed {f['settled / failed']};"
            f" payments ok {f['payments ok']}"
        )
