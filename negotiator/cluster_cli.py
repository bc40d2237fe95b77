"""The command line of sharded runs: ``negotiator worker`` and ``simulate --workers N``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import anyio
import typer
from rich.console import Console

from negotiator import log
from negotiator.errors import NegotiatorError
from negotiator.runtime_types import SlotReport
from negotiator.sharded import coordinate, work
from negotiator.simulation import SimulationConfig
from negotiator.tables import progress_bar, slot_info, summary_table


def _shard(value: str) -> tuple[int, int]:
    try:
        i, n = (int(part) for part in value.split("/"))
    except ValueError:
        raise typer.BadParameter(f"--shard takes I/N (0 <= I < N), not {value!r}") from None
    if not 0 <= i < n:
        raise typer.BadParameter(f"--shard {value}: I must be in 0..N-1")
    return i, n


def worker(
    shard: Annotated[str, typer.Option(help="This worker's shard: I/N, counting from 0.")],
    nats: Annotated[str, typer.Option(help="NATS server URL, e.g. nats://127.0.0.1:4222.")],
    run: Annotated[str, typer.Option(help="The run's id (the coordinator prints it).")],
    state: Annotated[
        Path | None,
        typer.Option(
            help="Checkpoint every slot here; started again after a kill, resume from it."
        ),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve this shard's Prometheus metrics on 127.0.0.1:PORT.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "warning",
) -> None:
    """Run one shard of a sharded community (started by `simulate --workers`, or by hand)."""
    log.configure(log_level)
    i, n = _shard(shard)
    try:
        anyio.run(lambda: work(nats, run, i, n, state=state, metrics_port=metrics_port))
    except NegotiatorError as exc:
        Console(stderr=True).print(f"[red]worker {i}/{n} failed:[/red] {exc}")
        raise typer.Exit(1) from None


def run_cluster(
    config: SimulationConfig,
    workers: int,
    nats: str,
    *,
    spawn: bool,
    state: Path | None,
    quiet: bool,
    json_out: Path | None,
    log_level: str,
    metrics_port: int | None = None,
) -> None:
    """``simulate --workers N --nats URL``: coordinate the shards, print one summary."""
    console = Console()
    progress = progress_bar(console, quiet)
    task = progress.add_task("slots", total=config.slots, info="")

    def on_slot(report: SlotReport) -> None:
        progress.update(task, advance=1, info=f"{slot_info(report)} ({workers} shards)")

    def on_start(run: str) -> None:
        if spawn and metrics_port and not quiet:
            last = metrics_port + workers - 1
            console.print(f"shard metrics at http://127.0.0.1:{metrics_port}..{last}/metrics")
        if not spawn:
            console.print(f"run {run}: start the workers with")
            for i in range(workers):
                console.print(
                    f"  negotiator worker --shard {i}/{workers} --nats {nats} --run {run}"
                )

    async def main() -> dict[str, object]:
        return await coordinate(
            config,
            workers,
            nats,
            spawn=spawn,
            state=state,
            on_slot=on_slot,
            on_start=on_start,
            log_level=log_level,
            metrics_port=metrics_port,
        )

    try:
        with progress:
            data = anyio.run(main)
    except (NegotiatorError, ValueError) as exc:
        console.print(f"[red]sharded run failed:[/red] {exc}")
        raise typer.Exit(1) from None
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(data, indent=2) + "\n")
    if not quiet:
        console.print(summary_table(data))


__all__ = ["run_cluster", "worker"]
