"""Crash recovery: the state directory, checkpoints, reconciliation, and resuming a killed run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from negotiator.cli import app
from negotiator.errors import RecoveryError
from negotiator.ledger import Agreement, Ledger
from negotiator.messages import Terms
from negotiator.recovery import (
    Checkpoint,
    StateDir,
    adopt,
    checkpointer,
    reconcile,
    restore,
    rows_after,
)
from negotiator.runtime import RuntimeConfig
from negotiator.simulation import Simulation, SimulationConfig, build
from payments import InProcessRail


def test_a_state_directory_keeps_the_config_and_refuses_a_second_run(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "run")
    with pytest.raises(RecoveryError, match="no run"):
        state.config()
    state.create({"agents": 10})
    assert state.config() == {"agents": 10}
    assert state.load() is None  # killed before its first checkpoint
    with pytest.raises(RecoveryError, match="already holds a run"):
        state.create({"agents": 10})


def test_a_checkpoint_is_replaced_whole_and_a_damaged_one_is_refused(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.save(Checkpoint(3, {"x": [1, 2]}))
    state.save(Checkpoint(4, {"x": [1, 2, 3]}))
    loaded = state.load()
    assert loaded == Checkpoint(4, {"x": [1, 2, 3]})
    assert not list(tmp_path.glob("*.tmp"))  # written aside, then renamed over
    state.checkpoint_file.write_bytes(b"\x80\x05garbage")
    with pytest.raises(RecoveryError, match="cannot be read"):
        state.load()


class _Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a: int, b: list[int]) -> None:
        self.a, self.b = a, b


def test_adopt_copies_state_in_place_and_refuses_another_class() -> None:
    target, saved = _Slotted(1, [1]), _Slotted(2, [2, 2])
    adopt(target, saved)
    assert (target.a, target.b) == (2, [2, 2])
    with pytest.raises(RecoveryError, match="where the run has"):
        adopt(target, object())


def _agreement(nid: int, slot: int = 1) -> Agreement:
    return Agreement(nid, slot, 1, 2, Terms("energy", 1000, 100_000, slot, slot + 1), 3)


@pytest.mark.anyio
async def test_reconcile_checks_the_journal_against_the_rail(tmp_path: Path) -> None:
    rail = InProcessRail({1: 10**9, 2: 10**9}, seed=0)
    ledger = Ledger(tmp_path / "l.sqlite")
    paid = await rail.create_invoice(2, 100_000, "agreement-1", "")
    result = await rail.pay(1, paid)
    unpaid = await rail.create_invoice(2, 100_000, "agreement-2", "")
    ledger.record([_agreement(1), _agreement(2)], [paid.payment_hash, unpaid.payment_hash])
    ledger.mark_settled([(1, result.payment_hash, result.preimage, 0)])
    ledger.record([_agreement(3)])  # accepted, never invoiced
    before = rows_after(ledger, 0)
    assert [r.state for r in before] == ["settled", "settling", "accepted"]
    outcome = await reconcile(ledger, rail, before)
    assert outcome == {"settled": 1, "failed": 0, "interrupted": 2}
    assert ledger.failure_reasons() == {"interrupted": 2}

    fresh = InProcessRail({1: 10**9, 2: 10**9}, seed=0)  # a rail that never saw the payment
    with pytest.raises(RecoveryError, match="did not match"):
        await reconcile(ledger, fresh, rows_after(ledger, 0))


class _Crash(Exception):
    pass


def _config(tmp_path: Path, engine: str, name: str) -> SimulationConfig:
    return SimulationConfig(
        agents=200,
        slots=14,
        seed=5,
        ledger=str(tmp_path / name / "ledger.sqlite"),
        runtime=RuntimeConfig(engine=engine),
    )


def _run(sim: Simulation, state: StateDir, crash_after: int | None = None, **kw: Any) -> Any:
    checkpoint = checkpointer(sim, state, **kw)

    def on_slot(report: Any) -> None:
        if report.slot == crash_after:  # journaled and settled, its checkpoint not yet written
            raise _Crash

    async def main() -> Any:
        return await sim.run(on_slot, checkpoint=checkpoint)

    try:
        return anyio.run(main)
    finally:
        sim.close()


@pytest.mark.parametrize("engine", ["task", "shard"])
def test_a_run_resumed_after_a_crash_ends_as_if_never_stopped(tmp_path: Path, engine: str) -> None:
    """A crash after slot 9's agreements were paid but before its checkpoint: the resumed run
    replays slot 9, reconciles its journaled agreements, and ends with the same ledger digest,
    books and payments as a run that was never stopped."""
    whole = _run(build(_config(tmp_path, engine, "whole")), StateDir(tmp_path / "whole"))
    state = StateDir(tmp_path / "crashed")
    config = _config(tmp_path, engine, "crashed")
    with pytest.raises(ExceptionGroup) as crash:  # from inside the runtime's task group
        _run(build(config), state, crash_after=9)
    assert crash.group_contains(_Crash)
    sim = build(config)
    saved = state.load()
    assert saved is not None and saved.slot == 8
    restore(sim, saved)
    replayed = rows_after(sim.ledger, saved.slot)
    assert replayed and {r.slot for r in replayed} == {9}
    resumed = _run(sim, state, replayed=replayed)
    assert resumed.run.ledger_digest == whole.run.ledger_digest
    assert resumed.run.settled == whole.run.settled and resumed.run.slots == 14
    assert resumed.community_cost_msat == whole.community_cost_msat
    assert resumed.run.paid_msat == whole.run.paid_msat
    assert resumed.run.negotiations == whole.run.negotiations


def test_checkpoints_are_written_from_a_worker_the_loop_cannot_starve(
    tmp_path: Path, thread_calls: list[Any]
) -> None:
    # Each slot's checkpoint is written in a worker thread through negotiator.threads (the GIL
    # hand-off), so a saturated loop cannot hold the next slot up behind it.
    state = StateDir(tmp_path / "state")
    summary = _run(build(_config(tmp_path, "shard", "state")), state)
    writes = [getattr(fn, "__name__", "") for fn in thread_calls]
    assert writes.count("write") == summary.run.slots + 1  # one before slot 0, one per slot
    saved = state.load()
    assert saved is not None and saved.slot == summary.run.slots - 1


def test_the_cli_refuses_a_used_state_directory_and_a_missing_one(tmp_path: Path) -> None:
    runner = CliRunner(env={"COLUMNS": "400"})  # the error box does not wrap the message
    args = ["simulate", "--agents", "40", "--slots", "2", "--quiet"]
    assert runner.invoke(app, [*args, "--state", str(tmp_path / "s")]).exit_code == 0
    again = runner.invoke(app, [*args, "--state", str(tmp_path / "s")])
    assert again.exit_code != 0 and "already holds a run" in again.output
    missing = runner.invoke(app, ["resume", str(tmp_path / "nothing")])
    assert missing.exit_code != 0 and "no run" in missing.output
    both = runner.invoke(app, [*args, "--state", str(tmp_path / "t"), "--ledger", "x.sqlite"])
    assert both.exit_code != 0 and "drop --ledger" in both.output


def _negotiator(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "negotiator", *args, "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )


def _summary(process: subprocess.Popen[bytes], path: Path) -> dict[str, Any]:
    _, err = process.communicate(timeout=240)
    assert process.returncode == 0, err.decode()[-2000:]
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.mark.slow
def test_ten_kill_9s_at_random_instants_lose_nothing_and_pay_nothing_twice(
    tmp_path: Path,
) -> None:
    """The acceptance test: SIGKILL the run ten times at random instants (each after the
    process got going), resume each time, and compare with a run never stopped."""
    run = ["--agents", "600", "--slots", "96", "--seed", "3"]
    reference = tmp_path / "reference.json"
    whole = _summary(
        _negotiator("simulate", *run, "--state", str(tmp_path / "a"), "--json", str(reference)),
        reference,
    )
    state, out = tmp_path / "b", tmp_path / "b.json"
    rng = random.Random(1234)
    process = _negotiator("simulate", *run, "--state", str(state), "--json", str(out))
    kills = 0
    checkpoint = state / "checkpoint.pkl"
    while kills < 10:
        seen = checkpoint.stat().st_mtime_ns if checkpoint.exists() else 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:  # until it is running
            if checkpoint.exists() and checkpoint.stat().st_mtime_ns != seen:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.6))
        if process.poll() is not None:
            break  # it finished before this kill: the run was shorter than ten kills
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        kills += 1
        process = _negotiator("resume", str(state), "--json", str(out))
    final = _summary(process, out)
    assert kills == 10, f"the run ended after {kills} kills: make it longer"
    for key in ("ledger_digest", "settled", "agreements", "paid_msat", "community_cost_msat"):
        assert final[key] == whole[key], key
    assert final["failed_settlements"] == whole["failed_settlements"]
    ledger = Ledger(state / "ledger.sqlite")
    counts = ledger.counts()
    assert counts["accepted"] == counts["settling"] == 0  # every agreement reconciled
    assert ledger.digest() == whole["ledger_digest"]
    ledger.close()
