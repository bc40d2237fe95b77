"""The in-process bus: delivery, back-pressure without loss, topics, request/reply."""

from __future__ import annotations

import asyncio

import anyio
import msgspec
import pytest

from negotiator.bus import LocalBus, Mailbox
from negotiator.errors import RequestTimeout, UnknownAddress

pytestmark = pytest.mark.anyio


class Note(msgspec.Struct, frozen=True):
    receiver: int
    n: int


async def test_send_routes_by_receiver_and_shared_inboxes_work() -> None:
    bus = LocalBus()
    shared = bus.inbox(1)
    bus.register(2, shared)
    assert bus.send_nowait(Note(1, 1)) and bus.send_nowait(Note(2, 2))
    assert [shared.get_nowait().n for _ in range(2)] == [1, 2]


async def test_a_full_inbox_is_counted_and_nothing_is_lost() -> None:
    bus = LocalBus(default_capacity=2)
    inbox = bus.inbox(1)
    received: list[int] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(bus.run)
        for i in range(10):
            bus.send_nowait(Note(1, i))
        assert bus.overflow == 8
        while len(received) < 10:
            received.append((await inbox.get()).n)
        tg.cancel_scope.cancel()
    assert received == list(range(10))  # in order, none dropped


async def test_unknown_addresses_are_counted_not_raised_on_the_hot_path() -> None:
    bus = LocalBus()
    assert not bus.send_nowait(Note(99, 0))
    assert bus.undeliverable == 1
    with pytest.raises(UnknownAddress):
        await bus.send(99, Note(99, 0))


async def test_publish_reaches_every_subscriber() -> None:
    bus = LocalBus()
    a, b = bus.inbox(1), bus.inbox(2)
    bus.subscribe("prices", 1)
    bus.subscribe("prices", 2)
    assert bus.publish("prices", Note(0, 5)) == 2
    bus.unsubscribe("prices", 2)
    assert bus.publish("prices", Note(0, 6)) == 1
    assert [a.get_nowait().n, a.get_nowait().n, b.get_nowait().n] == [5, 6, 5]
    with pytest.raises(UnknownAddress):
        bus.subscribe("prices", 3)


async def test_request_reply_and_sends_to_a_service() -> None:
    bus = LocalBus()
    seen: list[int] = []

    def service(message: Note) -> int | None:
        seen.append(message.n)
        return message.n * 2 if message.n > 0 else None

    bus.serve("svc", service)
    async with anyio.create_task_group() as tg:
        tg.start_soon(bus.run)
        bus.send_to_nowait("svc", Note(0, 0))
        assert await bus.request("svc", Note(0, 21), timeout=1) == 42
        tg.cancel_scope.cancel()
    assert seen == [0, 21]


async def test_request_times_out_with_a_typed_error() -> None:
    bus = LocalBus()
    bus.serve("slow", lambda m: m)  # never runs: the bus is not running
    with pytest.raises(RequestTimeout):
        await bus.request("slow", Note(0, 1), timeout=0.05)
    with pytest.raises(UnknownAddress):
        await bus.request("nobody", Note(0, 1), timeout=0.05)


async def test_service_errors_reach_the_requester() -> None:
    bus = LocalBus()

    def broken(message: Note) -> None:
        raise ValueError("boom")

    bus.serve("broken", broken)
    async with anyio.create_task_group() as tg:
        tg.start_soon(bus.run)
        with pytest.raises(ValueError, match="boom"):
            await bus.request("broken", Note(0, 1), timeout=1)
        bus.send_to_nowait("broken", Note(0, 2))
        await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert bus.service_errors == 1


def test_addresses_register_once() -> None:
    bus = LocalBus()
    bus.inbox(1)
    with pytest.raises(ValueError, match="already registered"):
        bus.inbox(1)
    with pytest.raises(ValueError):
        LocalBus(0)


async def test_a_full_mailbox_spills_and_the_dispatcher_gets_everything_in_order() -> None:
    bus = LocalBus()
    mailbox = Mailbox(3)
    bus.register(1, mailbox)
    bus.register(2, mailbox)
    received: list[int] = []

    async def dispatcher() -> None:
        while True:
            await mailbox.wait()
            while mailbox.items:
                received.append(mailbox.items.popleft().n)
            mailbox.taken()

    async with anyio.create_task_group() as tg:
        tg.start_soon(bus.run)
        tg.start_soon(dispatcher)
        for i in range(20):
            bus.send_nowait(Note(1 + i % 2, i))
        assert bus.overflow == 17 and mailbox.qsize() == 3
        with anyio.fail_after(5):
            while len(received) < 20:
                await anyio.sleep(0.001)
        tg.cancel_scope.cancel()
    assert received == list(range(20))


async def test_mailbox_put_waits_for_room_and_wait_returns_at_once_when_not_empty() -> None:
    mailbox = Mailbox(1)
    mailbox.put_nowait("a")
    with pytest.raises(asyncio.QueueFull):
        mailbox.put_nowait("b")
    async with anyio.create_task_group() as tg:
        tg.start_soon(mailbox.put, "b")
        await anyio.sleep(0.01)
        assert list(mailbox.items) == ["a"]  # still waiting for room
        await mailbox.wait()  # something is there: no wait
        mailbox.items.popleft()
        mailbox.taken()
        with anyio.fail_after(1):
            while not mailbox.items:
                await anyio.sleep(0.001)
    assert list(mailbox.items) == ["b"]
    with pytest.raises(ValueError):
        Mailbox(0)


class Opening(msgspec.Struct, frozen=True):
    receiver: int
    n: int


async def test_a_mailbox_keeps_later_kinds_apart_in_order_within_one_bound() -> None:
    mailbox = Mailbox(4, later=frozenset({Opening}))
    mailbox.put_nowait(Opening(1, 0))
    mailbox.put_nowait(Note(1, 1))
    mailbox.put_nowait(Opening(1, 2))
    mailbox.put_nowait(Note(1, 3))
    assert [m.n for m in mailbox.items] == [1, 3]
    assert [m.n for m in mailbox.deferred] == [0, 2]
    assert mailbox.qsize() == 4
    with pytest.raises(asyncio.QueueFull):  # both kinds count towards the bound
        mailbox.put_nowait(Opening(1, 4))
    mailbox.items.clear()
    with anyio.fail_after(1):
        await mailbox.wait()  # only deferred messages wait: still something to take
    mailbox.deferred.popleft()
    mailbox.deferred.popleft()
    mailbox.taken()
    woken: list[int] = []

    async def consumer() -> None:
        await mailbox.wait()
        woken.append(mailbox.deferred.popleft().n)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer)
        await anyio.sleep(0.01)
        assert woken == []  # empty: it waits
        mailbox.put_nowait(Opening(1, 5))  # a deferred kind wakes it too
    assert woken == [5]
