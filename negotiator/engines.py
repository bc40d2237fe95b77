"""Two engines run the same agents; they differ only in how a message reaches its handler.

* :class:`TaskEngine` (default): every agent is its own coroutine reading its own bounded
  ``asyncio.Queue`` inbox, all in one anyio task group. The shape users expect from an actor runtime.
  At most ``max_under_way`` negotiations are begun at once; the Starts of the others in flight wait.
* :class:`ShardEngine`: one dispatcher coroutine per shard drains the shard's queue and calls the
  receiver's handler directly. No coroutine switch per message: measured 5-10x faster and about a
  third of the memory per idle agent; the engine for 100k+ agents and for NATS shards.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Iterator, Sequence
from typing import Any, Final, Protocol

import anyio
from anyio.abc import TaskStatus

from negotiator.actor import Agent
from negotiator.bus import LocalBus, Mailbox
from negotiator.messages import Start
from negotiator.router import Router

YOUNG_THRESHOLD = 50_000
"""Allocations between two collections of the youngest generation while an engine runs (Python's
default is 700; see :func:`fewer_collections`)."""

_running = 0
_saved: tuple[int, int, int] = gc.get_threshold()


@contextlib.contextmanager
def fewer_collections(young: int = YOUNG_THRESHOLD) -> Iterator[None]:
    """Collect the youngest generation every ``young`` allocations instead of every 700.

    Negotiating allocates a few tracked objects per message (the future each waiting agent's
    ``get`` leaves, the flight, the pending settlement), and at any moment thousands of them are
    alive: every collection of the two younger generations walks them, and they are promoted into
    the oldest one, whose full collections then walk them again. Measured with the task engine
    (``benchmarks/negotiation_throughput.py``, 10k agents): 1,345 collections took 1.3 s of an
    8.1 s run at Python's default; 12 took 0.24 s at 50,000, and settled agreements per second
    rose from 6.7k to 7.6k. Nothing is left uncollected: refcounting frees most garbage at once,
    and cycles wait at most ``young`` allocations. Python's thresholds are process-wide: they
    are set while the first engine runs and given back when the last one stops.
    """
    global _running, _saved
    if _running == 0:
        _saved = gc.get_threshold()
        gc.set_threshold(max(young, _saved[0]), _saved[1], _saved[2])
    _running += 1
    try:
        yield
    finally:
        _running -= 1
        if _running == 0:
            gc.set_threshold(*_saved)


class Engine(Protocol):
    """Runs agents' handlers as messages arrive."""

    name: str

    def attach(self, agents: Sequence[Agent]) -> None:
        """Register the agents' inboxes on the bus (before :meth:`run`)."""
        ...

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Deliver messages until cancelled; report started once every agent can receive."""
        ...


MAX_UNDER_WAY: Final = 16
"""The task engine's default limit on negotiations begun at once (see :class:`TaskEngine`)."""


class TaskEngine:
    """One coroutine and one bounded inbox per agent.

    The event loop runs ready coroutines in arrival order, so with every negotiation in flight
    begun at once each message waits behind one message of every other negotiation: at 500 in
    flight p95 propose to accept was 60-66 ms. The engine therefore has the router begin at most
    ``max_under_way`` negotiations at once (their Start sent); the Starts of the others wait in
    order, and each goes when a negotiation under way ends (void, counted late, if the runtime
    closed its negotiation meanwhile). Measured on the throughput benchmark at 500 in flight,
    three runs paired with no limit: p95 4.2-5.1 ms at 16, settlement p50 3.0-3.3 s -> 0.09-0.12 s
    (the settler's tasks are no longer one among 500 ready ones), 1-16% more settled agreements
    per second of the run. The wait moves before the first offer (``start_wait``); Little's law
    still binds open to close. ``max_under_way=0`` begins every Start at once (arrival order).
    """

    name = "task"

    def __init__(
        self,
        bus: LocalBus,
        router: Router,
        inbox_size: int = 1024,
        max_under_way: int = MAX_UNDER_WAY,
    ) -> None:
        if max_under_way < 0:
            raise ValueError("max_under_way must be at least 0 (0: no limit)")
        self._bus = bus
        self._router = router
        self._inbox_size = inbox_size
        router.max_under_way = max_under_way
        self._agents: list[tuple[Agent, asyncio.Queue[Any]]] = []

    def attach(self, agents: Sequence[Agent]) -> None:
        """Give every agent its inbox."""
        self._agents = [(a, self._bus.inbox(a.address, self._inbox_size)) for a in agents]

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run every agent's loop in one task group, nested in the runtime's anyio task group.

        ``asyncio.TaskGroup`` rather than anyio's here: anyio 4.16 gives every task a TaskHandle,
        its own CancelScope and an Event, and an extra frame on every resume (measured at 100k
        idle agents under uvloop: 4.0 KB per task against 1.3 KB; the task engine ran 1.4x
        faster without it in one benchmark run). The standard library's group is the same
        structured concurrency: children are cancelled and awaited with the runtime's scope.
        """
        with fewer_collections():
            async with asyncio.TaskGroup() as tg:
                loop = self._agent_loop
                for agent, inbox in self._agents:
                    tg.create_task(loop(agent, inbox))
                await asyncio.sleep(0)  # every loop has reached its first ``get``
                task_status.started()

    async def _agent_loop(self, agent: Agent, inbox: asyncio.Queue[Any]) -> None:
        handle = self._router.handle
        get = inbox.get
        while True:
            handle(agent, await get())


_LATER: Final = frozenset({Start})
"""What a shard's dispatcher takes only when nothing else waits: the start of a negotiation."""


class ShardEngine:
    """One dispatcher per shard; agents are assigned to shards in contiguous address blocks.

    The dispatcher finishes what it has started: the moves of negotiations under way and the
    settlement messages go first, and the runtime's Start of a new negotiation waits until none
    is left (:class:`~negotiator.bus.Mailbox` keeps Starts in a second FIFO). Each negotiation
    then runs from its first offer to its close in a few dispatches instead of sharing the
    dispatcher with every other one open: propose-to-accept latency is that of one negotiation
    whatever ``max_in_flight``, and the wait moves before the first offer, where the runtime
    measures it (``start_wait``). Little's law still binds open to close. Measured on the
    throughput benchmark at 500 in flight, four runs paired with plain FIFO: propose-to-accept
    p95 70-90 ms -> 0.03 ms; 11-33% more negotiations per second while negotiating and 17-26%
    end to end (a negotiation's two agents and its flight stay in the CPU's caches, and fewer
    negotiations hold state at once).
    """

    name = "shard"

    def __init__(
        self,
        bus: LocalBus,
        router: Router,
        shards: int = 1,
        inbox_size: int = 1024,
        slice_s: float = 0.001,
    ) -> None:
        if shards < 1:
            raise ValueError("shards must be at least 1")
        self._bus = bus
        self._router = router
        self._shards = shards
        self._inbox_size = inbox_size
        self._slice_s = slice_s
        """Dispatch for at most this long, then yield to the loop (time, not a message count)."""
        self._queues: list[tuple[Mailbox, dict[int, Agent]]] = []
        self.handled: list[int] = []
        """Messages each shard's dispatcher has handled (per-shard throughput)."""

    def attach(self, agents: Sequence[Agent]) -> None:
        """Split agents into shards (neighbours by address stay together) and share each queue."""
        per = -(-len(agents) // self._shards) if agents else 1
        for start in range(0, max(len(agents), 1), per):
            members = {a.address: a for a in agents[start : start + per]}
            queue = Mailbox(self._inbox_size * max(len(members), 1), later=_LATER)
            for address in members:
                self._bus.register(address, queue)
            self._queues.append((queue, members))
            self.handled.append(0)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run one dispatcher per shard."""
        with fewer_collections():
            async with anyio.create_task_group() as tg:
                for i, (queue, members) in enumerate(self._queues):
                    tg.start_soon(self._dispatch, queue, members, i, name=f"shard-{i}")
                task_status.started()

    async def _dispatch(self, mailbox: Mailbox, members: dict[int, Agent], shard: int) -> None:
        router = self._router
        handle = router.handle
        begin = router.begin
        items = mailbox.items
        deferred = mailbox.deferred
        popleft = items.popleft
        take_deferred = deferred.popleft
        clock = time.perf_counter
        slice_s = self._slice_s
        handled = self.handled
        while True:
            await mailbox.wait()
            slice_end = clock() + slice_s
            taken = 0
            while items or deferred:
                for _ in range(32):  # read the clock every 32 messages, not every one
                    if items:  # a negotiation under way, or a settlement
                        message = popleft()
                        handle(members[message.receiver], message)
                    elif deferred:  # nothing under way: begin the next negotiation
                        message = take_deferred()
                        begin(members[message.receiver], message)
                    else:
                        break
                    taken += 1
                if clock() > slice_end:
                    break
            mailbox.taken()
            handled[shard] += taken
            if items or deferred:
                await asyncio.sleep(0)  # slice used up: let the starter, settler and timers run


def make_engine(
    name: str,
    bus: LocalBus,
    router: Router,
    *,
    shards: int = 1,
    inbox_size: int = 1024,
    max_under_way: int = MAX_UNDER_WAY,
) -> Engine:
    """The engine called ``name`` (``task`` or ``shard``)."""
    if name == "task":
        return TaskEngine(bus, router, inbox_size, max_under_way)
    if name == "shard":
        return ShardEngine(bus, router, shards, inbox_size)
    raise ValueError(f"unknown engine {name!r}: choose 'task' or 'shard'")
