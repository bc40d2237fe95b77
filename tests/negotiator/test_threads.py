"""Worker threads get the GIL while the event loop is saturated (negotiator.threads)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread
import pytest

from negotiator import threads

RELEASES = 100
"""Times the worker gives the GIL up and must get it back (an SQLite step, a socket read)."""


def _worker() -> int:
    for _ in range(RELEASES):
        time.sleep(0.0001)  # releases the GIL, then needs it back
    return RELEASES


async def _while_saturated(call: Callable[[], Awaitable[Any]], budget_s: float) -> float | None:
    """Keep the loop busy (1 ms slices of Python, as the shard engine dispatches) while ``call``
    runs; the seconds it took, or None if it had not come back within ``budget_s``."""
    result: list[float] = []
    started = time.perf_counter()

    async def run_call() -> None:
        await call()
        result.append(time.perf_counter() - started)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_call)
        while not result and time.perf_counter() - started < budget_s:
            end = time.perf_counter() + 0.001
            while time.perf_counter() < end:
                pass
            await asyncio.sleep(0)
        tg.cancel_scope.cancel()
    return result[0] if result else None


@pytest.mark.parametrize("uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_a_worker_thread_comes_back_while_the_loop_is_saturated(uvloop: bool) -> None:
    # Without the hand-off each of the worker's 100 returns to Python waits for a race it
    # mostly loses (measured: single calls of a few releases took 0.9-30 s); with it, each waits
    # about a millisecond. The budget is two orders of magnitude above what the hand-off needs.
    async def main() -> float | None:
        return await _while_saturated(
            lambda: threads.run_sync(_worker, abandon_on_cancel=True), budget_s=20.0
        )

    took = anyio.run(main, backend_options={"use_uvloop": uvloop})
    assert took is not None, "the worker was starved for the whole budget"


def test_the_loop_hands_over_only_while_a_call_is_in_flight() -> None:
    async def main() -> tuple[int, int, int, bool]:
        state = threads.handoff()
        before = state.offered
        result = await threads.run_sync(time.sleep, 0.02)
        during = state.offered - before
        await asyncio.sleep(0.01)
        after = state.offered - before
        return during, after, state.in_flight, state.handle is None and result is None

    during, after, in_flight, stopped = anyio.run(main)
    assert during >= 1  # 20 ms in flight: the timer ran
    assert after == during  # and stopped with the last call
    assert in_flight == 0 and stopped


def test_errors_and_cancellation_pass_through() -> None:
    def boom() -> None:
        raise ValueError("from the worker")

    async def main() -> int:
        with pytest.raises(ValueError, match="from the worker"):
            await threads.run_sync(boom)
        with anyio.move_on_after(0.01):
            await threads.run_sync(time.sleep, 0.2, abandon_on_cancel=True)
        return threads.handoff().in_flight

    assert anyio.run(main) == 0
