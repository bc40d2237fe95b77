"""NatsBus against a real nats-server: frames between shards, remote services, topics, restarts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec
import nats
import pytest

from negotiator.errors import RequestTimeout
from negotiator.messages import Propose, Side, SnapshotQuery, Terms, TradeReport, encode
from negotiator.natsbus import Envelope, NatsBus, Remote, backoff, envelope_decoder
from tests.natsserver import NatsServer

pytestmark = pytest.mark.anyio


def _propose(nid: int, sender: int, receiver: int) -> Propose:
    terms = Terms("energy", 100, 150_000, 0, 1)
    return Propose(nid, sender, receiver, 0, 0, Side.BUY, terms)


def _owner(address: Any) -> int | None:
    return address // 10 if isinstance(address, int) and 0 <= address < 20 else None


@asynccontextmanager
async def _running(*buses: NatsBus) -> AsyncIterator[None]:
    """Connect ``buses``, run them for the body, then close them."""
    for bus in buses:
        await bus.connect()
    async with anyio.create_task_group() as tg:
        for bus in buses:
            tg.start_soon(bus.run)
        yield
        tg.cancel_scope.cancel()
    for bus in buses:
        await bus.close()


async def _run_until(condition: Any, *buses: NatsBus, timeout: float = 20.0) -> None:
    """Wait for ``condition``; on timeout, fail with what the buses counted."""
    with anyio.move_on_after(timeout):
        while not condition():
            await anyio.sleep(0.005)
        return
    counts = [
        (b.name, b.remote_sent, b.frames_sent, b.frames_received, b.refused, b.queue_depth())
        for b in buses
    ]
    raise AssertionError(f"not within {timeout} s; (name, sent, frames out/in, refused): {counts}")


async def test_agent_messages_cross_shards_in_batched_frames(nats_server: NatsServer) -> None:
    a = NatsBus(nats_server.url, prefix="t", shard=0, owner=_owner, batch=64)
    b = NatsBus(nats_server.url, prefix="t", shard=1, owner=_owner, batch=64)
    inbox = b.inbox(15)
    async with _running(a, b):
        for nid in range(300):
            assert a.send_nowait(_propose(nid, 3, 15))
        await _run_until(lambda: inbox.qsize() == 300, a, b)
        got = [inbox.get_nowait() for _ in range(300)]
        assert [m.nid for m in got] == list(range(300))  # in order, decoded and validated
        assert got[7] == _propose(7, 3, 15)
        assert a.remote_sent == 300
        assert 5 <= a.frames_sent <= 20  # batched: ~64 per frame, never one per message
        # garbage on the shard's subject is refused and counted, the bus goes on
        assert a.nc is not None
        await a.nc.publish("t.shard.1", b"\xc1garbage")
        await a.nc.publish("t.shard.1", msgspec.msgpack.encode([b"\x93not a message"]))
        a.send_nowait(_propose(999, 3, 15))
        await _run_until(lambda: inbox.qsize() == 1, a, b)
        assert b.refused == 2
        # an address no shard owns stays undeliverable, as on a LocalBus
        assert not a.send_to_nowait(77, _propose(1, 3, 77))
        assert a.undeliverable == 1


async def _service(url: str, subject: str, seen: list[Any]) -> Any:
    """A remote service: records every message with its shard, answers queries with a report."""
    nc = await nats.connect(url)

    async def handle(msg: Any) -> None:
        envelope = envelope_decoder.decode(msg.data)
        message = msgspec.msgpack.decode(envelope.body, type=SnapshotQuery | TradeReport)
        seen.append((envelope.shard, message))
        reply = b""
        if isinstance(message, SnapshotQuery):
            reply = msgspec.msgpack.encode(TradeReport(message.slot, [len(seen)], [1]))
        await nc.publish(msg.reply, reply)

    await nc.subscribe("t.svc", cb=handle)
    await nc.flush()
    return nc


async def test_remote_service_sends_arrive_before_the_request(nats_server: NatsServer) -> None:
    seen: list[Any] = []
    service = await _service(nats_server.url, "t.svc", seen)
    bus = NatsBus(
        nats_server.url, prefix="t", shard=3, remote={"svc": Remote("t.svc", TradeReport)}
    )
    async with _running(bus):
        for slot in range(5):
            bus.send_to_nowait("svc", TradeReport(slot, [100], [1]))
        await bus.send("svc", TradeReport(5, [100], [1]))
        answer = await bus.request("svc", SnapshotQuery(6), timeout=5)
        assert isinstance(answer, TradeReport) and answer.prices == [7]  # it had seen all 7
        assert [m.slot for _, m in seen] == [0, 1, 2, 3, 4, 5, 6]
        assert {shard for shard, _ in seen} == {3}
    await service.drain()


async def test_request_to_a_service_nobody_runs_times_out(nats_server: NatsServer) -> None:
    bus = NatsBus(
        nats_server.url,
        prefix="t",
        remote={"svc": Remote("t.nobody")},
        try_timeout_s=0.1,
    )
    async with _running(bus):
        with pytest.raises(RequestTimeout):
            await bus.request("svc", SnapshotQuery(0), timeout=0.5)
        assert bus.retries >= 1


async def test_topics_reach_other_processes(nats_server: NatsServer) -> None:
    a = NatsBus(nats_server.url, prefix="t", shard=0)
    b = NatsBus(nats_server.url, prefix="t", shard=1)
    inbox_a, inbox_b = a.inbox(1), b.inbox(2)
    a.subscribe("prices", 1)
    b.subscribe("prices", 2)
    async with _running(a, b):
        report = TradeReport(4, [120_000], [500])
        assert a.publish("prices", report) == 1  # the local subscriber now
        await _run_until(lambda: inbox_b.qsize() == 1, a, b)
        assert inbox_b.get_nowait() == report
        await anyio.sleep(0.05)
        assert inbox_a.qsize() == 1  # once: the connection does not echo its own publish


async def test_a_request_survives_a_server_restart(nats_server: NatsServer) -> None:
    seen: list[Any] = []
    bus = NatsBus(
        nats_server.url,
        prefix="t",
        shard=1,
        remote={"svc": Remote("t.svc", TradeReport)},
        try_timeout_s=0.3,
    )
    await bus.connect()
    nats_server.stop()
    async with anyio.create_task_group() as tg:
        tg.start_soon(bus.run)
        bus.send_to_nowait("svc", TradeReport(0, [100], [1]))  # sent while the server is down
        await anyio.sleep(0.5)
        nats_server.start()
        service = await _service(nats_server.url, "t.svc", seen)
        answer = await bus.request("svc", SnapshotQuery(1), timeout=20)
        slots = [m.slot for _, m in seen]
        # at least once, in order: the report (perhaps twice, a retry racing the pending
        # buffer's flush on reconnect) before the query; services are idempotent per sender
        assert slots[-1] == 1 and set(slots[:-1]) == {0}
        assert answer.prices == [len(slots)]
        assert bus.retries >= 1
        tg.cancel_scope.cancel()
    await bus.close()
    await service.drain()


def test_backoff_doubles_up_to_its_cap() -> None:
    waits = [backoff(n) for n in range(12)]
    assert 0.0375 <= waits[0] <= 0.0625
    assert all(w <= 2.5 for w in waits)
    assert waits[10] >= 1.5  # capped at 2 s (+-25%)
    assert Envelope(1, b"x") == envelope_decoder.decode(msgspec.msgpack.encode(Envelope(1, b"x")))


def test_a_keyring_signs_for_its_own_and_verifies_everyone() -> None:
    from negotiator.sharded import keyring

    mine, theirs = keyring(1, [3]), keyring(1, [4])
    signature = mine.sign(3, b"offer")
    assert theirs.verify(3, b"offer", signature)
    assert not theirs.verify(3, b"offer!", signature)  # another message
    assert not theirs.verify(5, b"offer", signature)  # another signer
    assert not theirs.verify(3, b"offer", b"\x00" * 70)  # not a signature at all
    assert not keyring(2, []).verify(3, b"offer", signature)  # another network's node 3
    assert theirs.refused == 3
    with pytest.raises(KeyError, match="does not sign"):
        mine.sign(4, b"offer")


async def test_signed_frames_refuse_forged_senders(nats_server: NatsServer) -> None:
    from negotiator.sharded import keyring

    a = NatsBus(nats_server.url, prefix="s", shard=0, owner=_owner, keyring=keyring(9, range(10)))
    b = NatsBus(nats_server.url, prefix="s", shard=1, owner=_owner, keyring=keyring(9, []))
    inbox = b.inbox(15)
    async with _running(a, b):
        for nid in range(20):
            a.send_nowait(_propose(nid, 3, 15))
        await _run_until(lambda: inbox.qsize() == 20, a, b)
        assert [inbox.get_nowait().nid for _ in range(20)] == list(range(20))
        # someone who can reach the server but holds no agent's key
        assert a.nc is not None
        data = encode(_propose(50, 4, 15))
        await a.nc.publish("s.shard.1", msgspec.msgpack.encode([(data, b"\x30" * 70)]))
        forged = keyring(9, [3])  # agent 3's key, claiming to be agent 4
        frame = [(data, forged.sign(3, data))]
        await a.nc.publish("s.shard.1", msgspec.msgpack.encode(frame))
        await a.nc.publish("s.shard.1", msgspec.msgpack.encode([data]))  # unsigned
        a.send_nowait(_propose(51, 3, 15))
        await _run_until(lambda: inbox.qsize() == 1, a, b)
        assert inbox.get_nowait().nid == 51  # only the genuine one got through
        assert b.refused == 3


async def test_a_message_over_the_servers_payload_limit_fails_at_once(
    nats_server: NatsServer,
) -> None:
    from negotiator.errors import BusError

    bus = NatsBus(nats_server.url, prefix="t", remote={"svc": Remote("t.svc")})
    await bus.connect()
    assert bus.nc is not None
    huge = TradeReport(0, [1] * (bus.nc.max_payload // 2), [1] * (bus.nc.max_payload // 2))
    with pytest.raises(BusError, match="max_payload"):
        await bus.call("svc", huge, timeout=5)
    assert bus.retries == 0
    await bus.close()
