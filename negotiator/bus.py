"""The message bus: point-to-point sends, publish/subscribe topics, request/reply with a timeout.

:class:`LocalBus` is the in-process implementation. Inboxes are bounded ``asyncio.Queue``s (anyio
memory object streams measured 2.5-3x slower on this path). A full inbox is never a silent drop: the
overflow is counted, logged (first time per address, then every 1,000th), and the message waits in a
spill queue that a bus task feeds into the inbox as it drains, which is the back-pressure. Several
addresses may share one inbox (the shard engine does this), so routing always uses the message's
receiver, or the address given explicitly.

Services (the mean-field service, say) register a synchronous handler with :meth:`LocalBus.serve`;
they then run as actors on their own inbox, answering :meth:`LocalBus.request` and consuming sends.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, Protocol

import anyio
import structlog

from negotiator.errors import RequestTimeout, UnknownAddress

_log = structlog.get_logger(__name__)

BusAddress = Hashable
"""Agents have integer addresses; services have string names."""
ServiceHandler = Callable[[Any], Any]
"""A service's handler: one message in, the reply out (None for plain sends)."""


class Bus(Protocol):
    """What the runtime, agents' effects and services need from a message bus."""

    def send_nowait(self, message: Any) -> bool:
        """Queue ``message`` for ``message.receiver`` without waiting; False if nobody is there."""
        ...

    def send_to_nowait(self, address: BusAddress, message: Any) -> bool:
        """Queue ``message`` for ``address`` without waiting; False if nobody is there."""
        ...

    async def send(self, address: BusAddress, message: Any) -> None:
        """Queue ``message`` for ``address``, waiting while its inbox is full."""
        ...

    def publish(self, topic: str, message: Any) -> int:
        """Send ``message`` to every subscriber of ``topic``; returns how many."""
        ...

    def subscribe(self, topic: str, address: BusAddress) -> None:
        """Deliver what is published on ``topic`` to ``address``'s inbox."""
        ...

    def unsubscribe(self, topic: str, address: BusAddress) -> None:
        """Stop delivering ``topic`` to ``address``."""
        ...

    async def request(self, address: BusAddress, message: Any, timeout: float) -> Any:
        """Send ``message`` to a service and wait at most ``timeout`` seconds for its reply."""
        ...


class Inbox(Protocol):
    """Where the bus puts messages for an address: ``asyncio.Queue`` or :class:`Mailbox`."""

    @property
    def maxsize(self) -> int:
        """Capacity; ``put_nowait`` raises ``asyncio.QueueFull`` beyond it."""
        ...

    def qsize(self) -> int:
        """Messages waiting."""
        ...

    def put_nowait(self, item: Any) -> None:
        """Queue ``item`` or raise ``asyncio.QueueFull``."""
        ...

    async def put(self, item: Any) -> None:
        """Queue ``item``, waiting while full."""
        ...


class Mailbox:
    """A bounded FIFO drained by one consumer that takes messages in batches (the shard engine).

    An ``asyncio.Queue`` wakes a getter and keeps task accounting on every put (~0.6 us per
    message); a dispatcher that drains everything at once needs only a deque append and one
    wake-up when it was idle (~0.06 us). Same contract for the bus: bounded, ``QueueFull`` when full.

    Messages whose type is in ``later`` wait in a second FIFO, :attr:`deferred`, that the consumer
    takes from only when :attr:`items` is empty: the shard engine defers the runtime's Start so
    that the negotiations under way finish before new ones begin (see ``ShardEngine``). Both
    count towards ``maxsize``.
    """

    __slots__ = ("_later", "_space", "_waiter", "deferred", "items", "maxsize")

    def __init__(self, maxsize: int, later: frozenset[type] = frozenset()) -> None:
        if maxsize < 1:
            raise ValueError("mailbox capacity must be at least 1")
        self.maxsize = maxsize
        self.items: deque[Any] = deque()
        """The consumer pops from the left, then calls :meth:`taken`."""
        self.deferred: deque[Any] = deque()
        """Messages of the ``later`` types, in arrival order."""
        self._later = later
        self._waiter: asyncio.Future[None] | None = None
        self._space: asyncio.Future[None] | None = None

    def qsize(self) -> int:
        """Messages waiting."""
        return len(self.items) + len(self.deferred)

    def put_nowait(self, item: Any) -> None:
        """Append ``item``, waking the consumer if it waits; ``asyncio.QueueFull`` when full."""
        if len(self.items) + len(self.deferred) >= self.maxsize:
            raise asyncio.QueueFull
        if type(item) in self._later:
            self.deferred.append(item)
        else:
            self.items.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def put(self, item: Any) -> None:
        """Append ``item``, waiting while the mailbox is full."""
        while self.qsize() >= self.maxsize:
            if self._space is None or self._space.done():
                self._space = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._space)
        self.put_nowait(item)

    async def wait(self) -> None:
        """Return when there is something to take (at once if there is)."""
        while not self.items and not self.deferred:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None

    def taken(self) -> None:
        """The consumer took messages: wake producers that wait for room."""
        space = self._space
        if space is not None and self.qsize() < self.maxsize:
            self._space = None
            if not space.done():
                space.set_result(None)


class _Request:
    __slots__ = ("future", "message")

    def __init__(self, message: Any, future: asyncio.Future[Any]) -> None:
        self.message = message
        self.future = future


class LocalBus:
    """In-process bus over bounded asyncio.Queue inboxes."""

    def __init__(self, default_capacity: int = 1024) -> None:
        if default_capacity < 1:
            raise ValueError("inbox capacity must be at least 1")
        self.default_capacity = default_capacity
        self._inboxes: dict[BusAddress, Inbox] = {}
        self._topics: dict[str, set[BusAddress]] = {}
        self._services: dict[BusAddress, ServiceHandler] = {}
        self._service_inboxes: dict[BusAddress, asyncio.Queue[Any]] = {}
        self._spill: deque[tuple[Inbox, Any]] = deque()
        self._spill_ready: asyncio.Event | None = None
        self.overflow = 0
        """Messages that found their inbox full (each was queued later, none dropped)."""
        self.undeliverable = 0
        """Messages addressed to nobody (logged, counted)."""
        self.service_errors = 0
        """Exceptions raised by service handlers on plain sends."""
        self._overflow_by_address: dict[BusAddress, int] = {}

    # -- registration -------------------------------------------------------------------------

    def inbox(self, address: BusAddress, capacity: int | None = None) -> asyncio.Queue[Any]:
        """Create and register a bounded inbox for ``address``."""
        queue: asyncio.Queue[Any] = asyncio.Queue(capacity or self.default_capacity)
        self.register(address, queue)
        return queue

    def register(self, address: BusAddress, inbox: Inbox) -> None:
        """Route messages for ``address`` to ``inbox`` (several addresses may share one)."""
        if address in self._inboxes:
            raise ValueError(f"address {address!r} is already registered")
        self._inboxes[address] = inbox

    def unregister(self, address: BusAddress) -> None:
        """Stop routing to ``address``; later messages for it are counted as undeliverable."""
        self._inboxes.pop(address, None)
        self._services.pop(address, None)
        self._service_inboxes.pop(address, None)
        for subscribers in self._topics.values():
            subscribers.discard(address)

    def serve(self, address: BusAddress, handler: ServiceHandler, capacity: int = 65536) -> None:
        """Run ``handler`` as a service at ``address`` (its loop runs inside :meth:`run`)."""
        self._service_inboxes[address] = self.inbox(address, capacity)
        self._services[address] = handler

    def queue_depth(self) -> int:
        """Messages waiting in all inboxes and the spill queue (each shared inbox counted once)."""
        seen = {id(q): q.qsize() for q in self._inboxes.values()}
        return sum(seen.values()) + len(self._spill)

    # -- sending ------------------------------------------------------------------------------

    def send_nowait(self, message: Any) -> bool:
        """Queue ``message`` for ``message.receiver``; see :meth:`send_to_nowait`."""
        address = message.receiver
        inbox = self._inboxes.get(address)
        if inbox is None:
            return self.send_to_nowait(address, message)  # counts and logs it
        try:
            inbox.put_nowait(message)
        except asyncio.QueueFull:
            self._overflowed(address, inbox, message)
        return True

    def send_to_nowait(self, address: BusAddress, message: Any) -> bool:
        """Queue ``message`` for ``address``: never blocks, never drops; False if nobody is there."""
        inbox = self._inboxes.get(address)
        if inbox is None:
            self.undeliverable += 1
            _log.warning("undeliverable", address=address, kind=type(message).__name__)
            return False
        try:
            inbox.put_nowait(message)
        except asyncio.QueueFull:
            self._overflowed(address, inbox, message)
        return True

    def _overflowed(self, address: BusAddress, inbox: Inbox, message: Any) -> None:
        self.overflow += 1
        count = self._overflow_by_address.get(address, 0) + 1
        self._overflow_by_address[address] = count
        if count == 1 or count % 1000 == 0:
            _log.warning("inbox_full", address=address, overflows=count, capacity=inbox.maxsize)
        self._spill.append((inbox, message))
        if self._spill_ready is not None:
            self._spill_ready.set()

    async def send(self, address: BusAddress, message: Any) -> None:
        """Queue ``message`` for ``address``, waiting while its inbox is full."""
        inbox = self._inboxes.get(address)
        if inbox is None:
            self.undeliverable += 1
            raise UnknownAddress(f"no inbox at {address!r}")
        await inbox.put(message)

    def publish(self, topic: str, message: Any) -> int:
        """Send ``message`` to every subscriber of ``topic``; returns how many got it."""
        subscribers = self._topics.get(topic, ())
        return sum(self.send_to_nowait(address, message) for address in tuple(subscribers))

    def subscribe(self, topic: str, address: BusAddress) -> None:
        """Deliver what is published on ``topic`` to ``address``'s inbox."""
        if address not in self._inboxes:
            raise UnknownAddress(f"cannot subscribe {address!r}: no inbox")
        self._topics.setdefault(topic, set()).add(address)

    def unsubscribe(self, topic: str, address: BusAddress) -> None:
        """Stop delivering ``topic`` to ``address``."""
        self._topics.get(topic, set()).discard(address)

    async def request(self, address: BusAddress, message: Any, timeout: float) -> Any:
        """Ask the service at ``address``; raise RequestTimeout after ``timeout`` seconds."""
        if address not in self._services:
            raise UnknownAddress(f"no service at {address!r}")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._inboxes[address].put(_Request(message, future))
        try:
            with anyio.fail_after(timeout):
                return await future
        except TimeoutError:
            future.cancel()
            raise RequestTimeout(f"{address!r} gave no reply within {timeout} s") from None

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Feed spilled messages and run the services until cancelled."""
        self._spill_ready = asyncio.Event()
        if self._spill:
            self._spill_ready.set()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._drain_spill)
            for address, handler in self._services.items():
                inbox = self._service_inboxes[address]
                tg.start_soon(self._serve, address, inbox, handler)

    async def _drain_spill(self) -> None:
        assert self._spill_ready is not None
        while True:
            await self._spill_ready.wait()
            while self._spill:
                inbox, message = self._spill.popleft()
                await inbox.put(message)
            self._spill_ready.clear()

    async def _serve(
        self, address: BusAddress, inbox: asyncio.Queue[Any], handler: ServiceHandler
    ) -> None:
        while True:
            item = await inbox.get()
            if type(item) is _Request:
                if item.future.done():  # the requester gave up
                    continue
                try:
                    item.future.set_result(handler(item.message))
                except Exception as exc:
                    item.future.set_exception(exc)
                continue
            try:
                handler(item)
            except Exception:
                self.service_errors += 1
                _log.exception("service_error", address=address, kind=type(item).__name__)
