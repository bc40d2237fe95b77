"""Blocking calls in worker threads that a saturated event loop cannot starve.

A worker thread needs the GIL to start, to go on after every call that released it (an SQLite
step, a socket read) and to hand its result back. CPython gives a waiting thread the GIL by
force only when the holder has kept it for a whole switch interval (5 ms) *without releasing it
once*. A busy event loop releases it on every iteration (the poll for I/O), takes it straight
back, and iterates far more often than every 5 ms: the waiting thread's clock restarts each time
and it gets the GIL only by winning a race it mostly loses. Measured on this project's loop
(1 ms dispatch slices, uvloop): one ledger write of a single row took 0.9 to 30 s to come back
from its thread, so settlement sat seconds behind negotiation and finished after the slot.

:func:`run_sync` is ``anyio.to_thread.run_sync`` plus a hand-off: while any such call is in
flight, a timer on the loop sleeps for :data:`HANDOFF_S` every :data:`PERIOD_S`, outside the GIL,
so a waiting worker takes it then (and keeps it until it releases it or the loop claims it back
a switch interval later). The same write comes back in about 8 ms under the same load. The loop
pays for it only while a call is in flight: the sleep, and the wait while the worker runs Python
with the GIL it took, which is the worker's own work (measured in
``benchmarks/negotiation_throughput.py``, shard engine: 1,922 hand-offs of 188 us on average, 7%
of the run). An idle loop sleeps in its poll anyway, so the hand-off costs nothing there.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread

T = TypeVar("T")

PERIOD_S = 0.001
"""How often the loop offers the GIL to a waiting worker while a call is in flight."""

HANDOFF_S = 0.00005
"""How long the loop sleeps outside the GIL each time (time enough for a waiting thread to wake
and take it)."""


class _Handoff:
    """The calls in flight on one loop and the timer that hands the GIL over while there are any."""

    __slots__ = ("handle", "in_flight", "offered")

    def __init__(self) -> None:
        self.in_flight = 0
        self.offered = 0
        """Hand-offs made so far (for tests and diagnostics)."""
        self.handle: asyncio.TimerHandle | None = None

    def enter(self, loop: asyncio.AbstractEventLoop) -> None:
        self.in_flight += 1
        if self.handle is None:
            self.handle = loop.call_later(PERIOD_S, self._tick, loop)

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        time.sleep(HANDOFF_S)  # releases the GIL: a worker waiting for it takes it now
        self.offered += 1
        self.handle = loop.call_later(PERIOD_S, self._tick, loop)


_handoffs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Handoff] = (
    weakref.WeakKeyDictionary()
)


def handoff() -> _Handoff:
    """The running loop's hand-off (created on first use; it lives as long as the loop)."""
    loop = asyncio.get_running_loop()
    state = _handoffs.get(loop)
    if state is None:
        state = _handoffs[loop] = _Handoff()
    return state


async def run_sync(
    fn: Callable[..., T],
    *args: Any,
    limiter: anyio.CapacityLimiter | None = None,
    abandon_on_cancel: bool = False,
) -> T:
    """Run ``fn(*args)`` in a worker thread (``anyio.to_thread.run_sync``), handing the GIL to
    the worker while the loop is busy (see the module's docstring)."""
    state = handoff()
    state.enter(asyncio.get_running_loop())
    try:
        return await anyio.to_thread.run_sync(
            fn, *args, limiter=limiter, abandon_on_cancel=abandon_on_cancel
        )
    finally:
        state.leave()
