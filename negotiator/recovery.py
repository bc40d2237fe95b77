"""Crash recovery: a run's state directory, its slot checkpoints, and going on after a kill.

``negotiator simulate --state DIR`` keeps in DIR everything a run needs to go on:

- ``config.json``: the run's configuration (its ledger is ``DIR/ledger.sqlite``);
- ``ledger.sqlite``: the journal of agreements (SQLite, WAL), written before any payment is
  attempted and after it (:mod:`negotiator.ledger`);
- ``checkpoint.pkl``: the run as it stood after its last completed slot, once that slot's
  agreements were settled or failed and both parties knew: the traders, the rail, the mean-field
  service, the runtime's counters and random generator, the metrics, the per-slot series. It is
  written to a temporary file, flushed to disk and renamed over the last one, so a kill leaves
  either the old checkpoint or the new one, never half of one.

``negotiator resume DIR`` after a kill -9 at any instant restores the last checkpoint (slot k)
and runs on from slot k + 1. What happened after the checkpoint lived in the killed process
(negotiations in flight, and with a simulated rail the network's balances too) except what the
ledger journaled: the agreements of slot k + 1. The embedded mode is deterministic (same seed,
same engine: same pairings, same agreements, same negotiation ids), every ledger write is
idempotent, and an invoice's preimage is derived from its label (the negotiation id), so running
slot k + 1 again journals the same agreements under the same payment hashes and retries each
payment once, by that hash, on the restored network. Before slot k + 1's checkpoint is written,
:func:`reconcile` checks every agreement the killed run had journaled for it against the rail:
settled in the ledger and paid on the rail, failed with its reason and unpaid, or, one the
replay did not reach, failed as ``interrupted`` (nobody paid it, no book counts it). A mismatch
stops the resume with RecoveryError rather than risk paying twice or losing an agreement.

Real Core Lightning nodes keep their state outside the process and cannot be rewound: ``--state``
is refused with ``--rail cln``.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec
import structlog

from negotiator import threads
from negotiator.errors import RecoveryError
from negotiator.ledger import FAILED, SETTLED, Ledger
from negotiator.settlement import PaymentStatus, Rail

if TYPE_CHECKING:
    from negotiator.simulation import Simulation

_log = structlog.get_logger(__name__)

CONFIG: Final = "config.json"
LEDGER: Final = "ledger.sqlite"
CHECKPOINT: Final = "checkpoint.pkl"
_VERSION: Final = 1
_SERIES: Final = (
    "slot_import_wh",
    "slot_export_wh",
    "slot_prices",
    "slot_price_levels",
    "population",
)
"""The simulation's per-slot records, kept so that a resumed run reports the whole run."""


class Checkpoint(msgspec.Struct, frozen=True):
    """The run after slot ``slot`` (-1: before the first), as :func:`capture` took it."""

    slot: int
    parts: dict[str, Any]
    """Named pieces of state, each picklable (traders, rail, service, runtime, series)."""


@dataclass(frozen=True)
class StateDir:
    """A run's state directory."""

    path: Path

    @property
    def config_file(self) -> Path:
        """Where the run's configuration is kept."""
        return self.path / CONFIG

    @property
    def ledger(self) -> Path:
        """Where the run's ledger is kept."""
        return self.path / LEDGER

    @property
    def checkpoint_file(self) -> Path:
        """Where the last checkpoint is kept."""
        return self.path / CHECKPOINT

    def create(self, config: Mapping[str, Any]) -> None:
        """Start a fresh run here; refuse a directory that already holds one."""
        if self.config_file.exists():
            raise RecoveryError(
                f"{self.path} already holds a run: `negotiator resume {self.path}` goes on with"
                " it, or choose another directory"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.config_file, msgspec.json.format(msgspec.json.encode(config)))

    def config(self) -> dict[str, Any]:
        """The configuration the run was started with."""
        try:
            data = self.config_file.read_bytes()
        except FileNotFoundError:
            raise RecoveryError(f"no run in {self.path}: no {CONFIG}") from None
        try:
            config = msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            raise RecoveryError(f"{self.config_file} is not valid JSON: {exc}") from None
        if not isinstance(config, dict):
            raise RecoveryError(f"{self.config_file} does not hold a configuration")
        return config

    def save(self, checkpoint: Checkpoint) -> None:
        """Replace the last checkpoint, atomically and durably."""
        self.write(encode(checkpoint))

    def write(self, data: bytes) -> None:
        """Replace the last checkpoint with bytes from :func:`encode` (blocking: from a thread)."""
        _atomic_write(self.checkpoint_file, data)

    def load(self) -> Checkpoint | None:
        """The last checkpoint, or None if the run was killed before its first.

        Checkpoints are pickles: resume only state directories you (or your runs) wrote.
        """
        try:
            data = self.checkpoint_file.read_bytes()
        except FileNotFoundError:
            return None
        try:
            version, checkpoint = pickle.loads(data)  # our own file: see above
        except Exception as exc:
            raise RecoveryError(f"{self.checkpoint_file} cannot be read: {exc}") from None
        if version != _VERSION or not isinstance(checkpoint, Checkpoint):
            raise RecoveryError(
                f"{self.checkpoint_file} was written by another version of the runtime"
            )
        return checkpoint


def encode(checkpoint: Checkpoint) -> bytes:
    """The bytes of a checkpoint file (taken on the event loop: the state must not move)."""
    return pickle.dumps((_VERSION, checkpoint), protocol=pickle.HIGHEST_PROTOCOL)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a kill leaves the old file or the new, never half."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


def adopt(target: object, saved: object) -> None:
    """Give ``target`` the state of ``saved`` (same class), in place: the runtime, the engines
    and the bus keep references to the objects they were built with."""
    if type(target) is not type(saved):
        raise RecoveryError(
            f"checkpoint holds a {type(saved).__name__} where the run has a {type(target).__name__}"
        )
    for cls in type(target).__mro__:
        for name in cls.__dict__.get("__slots__", ()):
            if name in ("__dict__", "__weakref__"):
                continue
            if hasattr(saved, name):
                setattr(target, name, getattr(saved, name))
    if hasattr(saved, "__dict__"):
        vars(target).update(vars(saved))


class Row(msgspec.Struct, frozen=True):
    """One agreement as the ledger journaled it."""

    nid: int
    slot: int
    buyer: int
    seller: int
    amount_msat: int
    state: str
    payment_hash: str | None
    preimage: str | None


def rows_after(ledger: Ledger, slot: int) -> list[Row]:
    """The agreements journaled for slots after ``slot`` (those of the slot being replayed)."""
    return [Row(*r) for r in ledger.rows_after(slot)]


async def reconcile(ledger: Ledger, rail: Rail, before: Sequence[Row]) -> dict[str, int]:
    """Check what the killed run journaled for the replayed slot (``before``) against the rail.

    For each agreement: if the ledger has it settled, the rail must know its payment complete
    (the replay paid it again on the restored network); if the ledger has it failed, the rail
    must not. One still unfinished (the replay did not reach it) is looked up by its payment
    hash: complete means paid, which the replay cannot have done without journaling it, so it is
    an error; otherwise it fails as ``interrupted`` (nobody paid; both parties' books never
    counted it after the restore). Returns how many agreements ended which way.

    Raises RecoveryError when the rail and the ledger disagree: the replay did not reproduce the
    killed run, and going on could pay an agreement twice or lose one.
    """
    outcome = {"settled": 0, "failed": 0, "interrupted": 0}
    interrupted: list[tuple[int, str]] = []
    for row in before:
        state = ledger.state_of(row.nid)
        status = (
            await rail.lookup(row.payment_hash)
            if row.payment_hash is not None
            else PaymentStatus.UNKNOWN
        )
        if state == SETTLED:
            if status is not PaymentStatus.COMPLETE:
                raise RecoveryError(
                    f"agreement {row.nid} is settled in the ledger but the rail has its payment"
                    f" {status.value}: the replay of slot {row.slot} did not match the run"
                )
            outcome["settled"] += 1
        elif state == FAILED:
            if status is PaymentStatus.COMPLETE:
                raise RecoveryError(
                    f"agreement {row.nid} failed in the ledger but the rail has it paid"
                )
            outcome["failed"] += 1
        else:
            if status is PaymentStatus.COMPLETE:
                raise RecoveryError(
                    f"agreement {row.nid} is paid on the rail but was never journaled settled"
                )
            interrupted.append((row.nid, "interrupted"))
    if interrupted:
        ledger.mark_failed(interrupted)
        outcome["interrupted"] = len(interrupted)
    return outcome


def capture(sim: Simulation, slot: int) -> Checkpoint:
    """The state of ``sim`` after ``slot``, at a slot boundary (nothing in flight, all settled)."""
    return Checkpoint(
        slot,
        {
            "traders": sim.traders,
            "rail": sim.rail,
            "service": sim.service,
            "runtime": sim.runtime.state(),
            "series": {name: getattr(sim, name) for name in _SERIES},
        },
    )


def restore(sim: Simulation, checkpoint: Checkpoint) -> None:
    """Put a freshly built ``sim`` (same configuration) back where ``checkpoint`` was taken."""
    parts = checkpoint.parts
    if len(parts["traders"]) != len(sim.traders):
        raise RecoveryError("the checkpoint has another population than the configuration")
    for trader, saved in zip(sim.traders, parts["traders"], strict=True):
        adopt(trader, saved)
    adopt(sim.rail, parts["rail"])
    sim.runtime.metrics.payments = sim.rail.stats
    adopt(sim.service, parts["service"])
    sim.runtime.restore(parts["runtime"])
    for name, values in parts["series"].items():
        setattr(sim, name, values)


def checkpointer(
    sim: Simulation, state: StateDir, replayed: Sequence[Row] = ()
) -> Callable[[int], Awaitable[None]]:
    """The runtime's checkpoint hook for ``sim``: after each slot, write its checkpoint.

    ``replayed`` are the agreements the killed run had journaled after its last checkpoint; they
    are reconciled (:func:`reconcile`) once the slot they belong to has been run again, before
    its checkpoint is written.
    """
    pending = list(replayed)

    async def checkpoint(slot: int) -> None:
        if pending and slot >= max(row.slot for row in pending):
            outcome = await reconcile(sim.ledger, sim.rail, pending)
            _log.info("reconciled", slot=slot, **outcome)
            pending.clear()
        data = encode(capture(sim, slot))
        await threads.run_sync(state.write, data)

    return checkpoint


__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "LEDGER",
    "Checkpoint",
    "Row",
    "StateDir",
    "adopt",
    "capture",
    "checkpointer",
    "encode",
    "reconcile",
    "restore",
    "rows_after",
]
