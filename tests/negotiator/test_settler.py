"""The settler: one failure per agreement, whatever the number of reasons to fail it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from negotiator.actor import Pay
from negotiator.ledger import Agreement, Ledger
from negotiator.messages import SettlementFailed, Terms
from negotiator.metrics import RunMetrics
from negotiator.settler import Settler
from payments import InProcessRail

pytestmark = pytest.mark.anyio


async def test_an_agreement_abandoned_twice_in_one_batch_fails_once_with_the_first_reason(
    tmp_path: Path,
) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    delivered: list[Any] = []
    metrics = RunMetrics()
    settler = Settler(InProcessRail({1: 10**9, 2: 0}), ledger, metrics, delivered.append)
    agreement = Agreement(5, 0, 1, 2, Terms("energy", 1000, 200_000, 0, 1), 3)
    async with anyio.create_task_group() as tg:
        tg.start_soon(settler.run)
        settler.agree(agreement, 0.0)
        with anyio.fail_after(5):
            while ledger.state_of(5) != "settling":  # invoiced; the buyer never pays
                await anyio.sleep(0.001)
        settler.abandon(5, "agent_failure")  # the buyer fails...
        settler.abandon(5, "agent_retired")  # ...and is retired, before the settler runs
        assert await settler.drain(5)
        tg.cancel_scope.cancel()
    assert ledger.failure_reasons() == {"agent_failure": 1}
    assert metrics.settlements == {"failed": 1}
    failures = [m for m in delivered if isinstance(m, SettlementFailed)]
    assert sorted(m.receiver for m in failures) == [1, 2]  # each party told once
    ledger.close()


async def test_agreements_that_time_out_are_failed_once_each_however_long_the_drain(
    tmp_path: Path,
) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    settler = Settler(
        InProcessRail({1: 10**9, 2: 0}), ledger, RunMetrics(), lambda _: None, timeout_s=0.01
    )
    submitted: list[object] = []
    submit = settler._submit

    def counting(job: Any) -> None:
        submitted.append(job)
        submit(job)

    settler._submit = counting  # type: ignore[method-assign]
    for nid in range(200):  # a backlog the settler has not reached yet, all stale already
        settler.agree(Agreement(nid, 0, 1, 2, Terms("energy", 10, 200_000, 0, 1), 3), 0.0)
    for _ in range(5):  # the drain's loop looks for stale agreements again and again
        settler._expire_stale()
    assert sum(isinstance(job, tuple) for job in submitted) == 200  # one failure job each
    async with anyio.create_task_group() as tg:
        tg.start_soon(settler.run)
        assert await settler.drain(5)
        tg.cancel_scope.cancel()
    assert ledger.failure_reasons() == {"settlement_timeout": 200}
    ledger.close()


async def test_gate_closure_waits_for_unproven_buyers_and_no_longer_than_its_timeout(
    tmp_path: Path,
) -> None:
    """An agreement of a buyer that has never paid is provisional until it settles or fails;
    ``cleared`` waits for it, at most its timeout (a buyer sitting on its invoice cannot hold a
    slot open longer than that)."""
    ledger = Ledger(tmp_path / "ledger.sqlite")
    settler = Settler(InProcessRail({1: 10**9, 2: 0}), ledger, RunMetrics(), lambda _: None)
    terms = Terms("energy", 1000, 200_000, 0, 1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(settler.run)
        settler.agree(Agreement(1, 0, 1, 2, terms, 3), 0.0)
        assert settler.provisional == {1}
        assert not await settler.cleared(0.05)  # invoiced; the buyer has not answered
        settler.abandon(1, "unpaid")
        assert await settler.cleared(5) and settler.provisional_failed == 1
        settler.agree(Agreement(2, 0, 1, 2, terms, 3), 0.0)
        with anyio.fail_after(5):  # journaled as settling first, then handed to the buyer
            while settler._pending[2].invoice is None:
                await anyio.sleep(0.001)
        invoice = settler._pending[2].invoice
        assert invoice is not None
        settler.pay(Pay(2, 1, invoice))
        assert await settler.cleared(5)
        assert settler.payers == {1} and settler.provisional_failed == 1
        settler.agree(Agreement(3, 0, 1, 2, terms, 3), 0.0)  # buyer 1 has paid: final at once
        assert not settler.provisional and await settler.cleared(0)
        tg.cancel_scope.cancel()
    ledger.close()


async def test_the_ledger_is_written_from_a_worker_the_loop_cannot_starve(
    tmp_path: Path, thread_calls: list[Any]
) -> None:
    # Every journal write goes through negotiator.threads.run_sync (the GIL hand-off), never
    # straight to anyio.to_thread: under a saturated loop the latter took seconds per write.
    ledger = Ledger(tmp_path / "ledger.sqlite")
    delivered: list[Any] = []
    settler = Settler(InProcessRail({1: 10**9, 2: 0}), ledger, RunMetrics(), delivered.append)
    async with anyio.create_task_group() as tg:
        tg.start_soon(settler.run)
        settler.agree(Agreement(5, 0, 1, 2, Terms("energy", 1000, 200_000, 0, 1), 3), 0.0)
        with anyio.fail_after(5):
            while not delivered:
                await anyio.sleep(0.001)
        settler.pay(Pay(5, 1, delivered[0].invoice))
        assert await settler.drain(5)
        tg.cancel_scope.cancel()
    assert ledger.state_of(5) == "settled"
    assert [fn.__name__ for fn in thread_calls] == ["record", "mark_settled"]
    ledger.close()
