"""Composition root of sharded runs: a worker process, and the coordinator that runs them.

``negotiator worker --shard I/N --nats URL --run ID`` runs :func:`work`: it joins the run's
coordinator over NATS (which answers with the run's configuration), builds its neighbourhood
(:func:`negotiator.simulation.build` with ``shard``) on a :class:`~negotiator.natsbus.NatsBus`
that reaches the coordinator's mean-field service, runs every slot in step with the other shards,
and sends its summary. With ``--state DIR`` it checkpoints every slot there and, started again
after a kill, resumes from the last checkpoint (:mod:`negotiator.recovery`).

``negotiator simulate --workers N --nats URL`` runs :func:`coordinate`: the hub
(:class:`negotiator.cluster.Hub`) on NATS, and, unless told the workers are started elsewhere,
the N worker processes too, each restarted (to resume) if it dies while the run has a state
directory. It returns one summary (:func:`negotiator.cluster.merge`).
"""

from __future__ import annotations

import asyncio
import bisect
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any

import msgspec
import nats
import structlog

from market import MeanFieldService, Snapshot
from negotiator.assembly import MEANFIELD, members
from negotiator.cluster import (
    HUB,
    Hello,
    Hub,
    Join,
    ShardDone,
    Sketch,
    SlotDone,
    merge,
    subject,
)
from negotiator.errors import NegotiatorError
from negotiator.natsbus import NatsBus, Remote, backoff, shard_identity
from negotiator.recovery import StateDir, checkpointer, restore, rows_after
from negotiator.runtime_types import SlotReport
from negotiator.signing import Keyring
from negotiator.simulation import SimulationConfig, build
from payments.graph import node_secret

_log = structlog.get_logger(__name__)

BARRIER_TIMEOUT_S = 600.0
"""How long a shard waits for the others at a slot's barrier (a worker being restarted after
a kill takes seconds; the default mean-field timeout would let the shards drift apart)."""


class ClusterError(NegotiatorError):
    """A sharded run could not go on (a worker died with no state to resume from, say)."""


def keyring(seed: int, own: Iterable[Hashable]) -> Keyring:
    """The run's keys: agents sign with their simulated Lightning node's secret (the network
    derives it from the seed, so every process knows every public key), shards with theirs."""

    def secret_of(identity: Hashable) -> bytes:
        name = f"agent-{identity}" if isinstance(identity, int) else str(identity)
        return node_secret(seed, name)

    return Keyring(secret_of, own)


def owner_of(agents: int, shards: int) -> Callable[[Any], int | None]:
    """Which shard an address belongs to (None: not an agent of this community)."""
    starts = [members(agents, (i, shards)).start for i in range(shards)]

    def owner(address: Any) -> int | None:
        if not isinstance(address, int) or not 0 <= address < agents:
            return None
        return bisect.bisect_right(starts, address) - 1

    return owner


async def work(
    url: str,
    run: str,
    shard: int,
    shards: int,
    *,
    state: Path | None = None,
    metrics_port: int | None = None,
    join_timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Run shard ``shard`` of ``shards`` of run ``run``; its summary (also sent to the hub)."""
    prefix = f"neg.{run}"
    remote: dict[Any, Remote] = {
        HUB: Remote(subject(run), Join),
        MEANFIELD: Remote(subject(run), Snapshot),
    }
    bus = NatsBus(url, prefix=prefix, shard=shard, remote=remote, try_timeout_s=10.0)
    await bus.connect()
    try:
        join = await bus.call(HUB, Hello(shards), join_timeout_s)
        config = SimulationConfig.model_validate_json(join.config)
        directory = StateDir(state) if state is not None else None
        saved = None
        if directory is not None:
            if directory.config_file.exists():
                saved = directory.load()
            else:
                directory.create(config.model_dump(mode="json"))
            config = config.model_copy(update={"ledger": str(directory.ledger)})
            (directory.path / "worker.pid").write_text(f"{os.getpid()}\n")
        sim = build(config, shard=(shard, shards), bus=bus)
        bus.keyring = keyring(config.seed, [*sim.members, shard_identity(shard)])
        bus.owner = owner_of(sim.community.spec.agents, shards)
        bus.receive = sim.runtime.receive_bytes
        try:
            if saved is not None:
                restore(sim, saved)
            checkpoint = None
            if directory is not None:
                replayed = rows_after(sim.ledger, saved.slot if saved is not None else -1)
                checkpoint = checkpointer(sim, directory, replayed)

            def on_slot(report: SlotReport) -> None:
                bus.send_to_nowait(HUB, SlotDone(report))

            summary = await sim.run(
                on_slot, handle_signals=True, metrics_port=metrics_port, checkpoint=checkpoint
            )
            data = summary.to_dict()
            metrics = sim.runtime.metrics
            done = ShardDone(
                msgspec.json.encode(data).decode(),
                Sketch.of(metrics.negotiation_latency.samples or ()),
                Sketch.of(metrics.settlement_latency.samples or ()),
            )
            await bus.call(HUB, done, join_timeout_s)
            return data
        finally:
            sim.close()
    finally:
        await bus.close()


async def coordinate(
    config: SimulationConfig,
    workers: int,
    url: str,
    *,
    spawn: bool = True,
    state: Path | None = None,
    run: str | None = None,
    on_slot: Callable[[SlotReport], None] | None = None,
    on_start: Callable[[str], None] | None = None,
    max_restarts: int = 20,
    log_level: str = "warning",
    metrics_port: int | None = None,
) -> dict[str, Any]:
    """Run ``config`` on ``workers`` shards over the NATS server at ``url``; one summary.

    With ``spawn`` the workers are started here (``python -m negotiator worker``) and, with a
    ``state`` directory, restarted to resume when one dies (``max_restarts`` in all); without,
    ``on_start`` gets the run's id and the workers are started elsewhere with it. Spawned worker
    I serves its Prometheus metrics on ``metrics_port + I`` (0: each on any free port).
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    members(config.agents, (workers - 1, workers))  # enough members for every shard
    if config.scenario is not None:
        raise ValueError("sharded runs take the synthetic community, not a --scenario")
    if config.rail == "cln":
        raise ValueError("sharded runs settle on a simulated rail in each worker, not --rail cln")
    run = run or secrets.token_hex(4)
    runtime = config.runtime.model_copy(update={"population_timeout_s": BARRIER_TIMEOUT_S})
    config = config.model_copy(update={"runtime": runtime, "ledger": None})
    if state is not None:
        StateDir(state).create(config.model_dump(mode="json"))
    hub = Hub(
        MeanFieldService(location=config.location),
        workers,
        config.model_dump_json(),
        on_slot=on_slot,
        keyring=keyring(config.seed, ()),
    )
    nc = await _connect(url)
    restarts = [0]
    started = time.perf_counter()
    try:
        await hub.attach(nc, run)
        if on_start is not None:
            on_start(run)
        if not spawn:
            await hub.finished.wait()
        else:
            async with asyncio.TaskGroup() as tg:
                for i in range(workers):
                    shard_state = state / f"shard-{i}" if state is not None else None
                    port = metrics_port + i if metrics_port else metrics_port
                    command = worker_command(url, run, i, workers, shard_state, log_level, port)
                    tg.create_task(_supervise(hub, command, i, shard_state, restarts, max_restarts))
        wall = time.perf_counter() - started
    finally:
        await nc.drain()
    summary = merge(hub.done, wall)
    summary.update(
        run=run,
        worker_restarts=restarts[0],
        repeated_reports=hub.duplicates,
        replay_mismatches=hub.mismatches,
    )
    return summary


async def _connect(url: str) -> Any:
    attempt = 0
    while True:
        try:
            return await nats.connect(
                url,
                name="coordinator",
                max_reconnect_attempts=-1,
                reconnect_to_server_handler=lambda servers, info: (
                    servers[0],
                    backoff(servers[0].reconnects),
                ),
                connect_timeout=2,
            )
        except (OSError, nats.errors.Error) as exc:
            if attempt >= 20:
                raise ClusterError(f"no NATS server answers at {url}: {exc}") from None
            await asyncio.sleep(backoff(attempt))
            attempt += 1


def worker_command(
    url: str,
    run: str,
    shard: int,
    shards: int,
    state: Path | None,
    log_level: str,
    metrics_port: int | None = None,
) -> list[str]:
    """The command line of worker ``shard`` (this Python, ``-m negotiator worker``)."""
    command = [sys.executable, "-m", "negotiator", "worker", "--shard", f"{shard}/{shards}"]
    command += ["--nats", url, "--run", run, "--log-level", log_level]
    if state is not None:
        command += ["--state", str(state)]
    if metrics_port is not None:
        command += ["--metrics-port", str(metrics_port)]
    return command


async def _supervise(
    hub: Hub,
    command: list[str],
    shard: int,
    state: Path | None,
    restarts: list[int],
    max_restarts: int,
) -> None:
    """Run worker ``shard`` to the end, restarting it (to resume from ``state``) if it dies."""
    while True:
        proc = await asyncio.create_subprocess_exec(*command, stdin=subprocess.DEVNULL)
        try:
            code = await proc.wait()
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
            raise
        if shard in hub.done:
            return
        if state is None or restarts[0] >= max_restarts:
            why = "no --state to resume from" if state is None else f"{max_restarts} restarts"
            raise ClusterError(f"worker {shard} exited with {code} before the end ({why})")
        restarts[0] += 1
        _log.warning("worker_restarted", shard=shard, exit=code, restarts=restarts[0])


__all__ = [
    "BARRIER_TIMEOUT_S",
    "ClusterError",
    "coordinate",
    "keyring",
    "owner_of",
    "work",
    "worker_command",
]
