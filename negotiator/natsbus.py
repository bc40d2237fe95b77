"""The bus across processes: NATS (nats-py against a real nats-server).

:class:`NatsBus` is a :class:`~negotiator.bus.LocalBus` for the addresses that live in this
process, and NATS for the rest, behind the same interface (the runtime cannot tell):

- **Agents of other shards** (``owner(address)`` names the shard): their messages are encoded
  with msgspec msgpack, gathered per shard and published as one frame (a msgpack array of
  encoded messages) on ``PREFIX.shard.I`` when ``batch`` are waiting or at the next turn of the
  loop: one NATS message per frame, not per message (measured in DESIGN.md: ~7k negotiations/s
  unbatched against 25-35k batched across two processes). A received frame is decoded and every
  message validated one by one (:meth:`receive`, by default the runtime's ``receive_bytes``):
  bad bytes are refused and counted, the rest delivered.
- **Remote services** (``remote``: address -> subject and reply type): sends and requests go out
  in order through one outbox, each as a NATS request that the service acknowledges, retried
  with back-off until it is (at least once; the service side is idempotent per sender and slot,
  as :mod:`negotiator.cluster` is). A request waits for the sends queued before it, so a
  service sees a sender's reports before its query, across a nats-server restart too.
- **Authentication** (with a :class:`~negotiator.signing.Keyring`): every agent message in a
  frame carries its sender's signature, every report to a service its shard's; what does not
  verify is refused and counted.
- **Topics**: a publish reaches local subscribers and is published on ``PREFIX.topic.NAME`` for
  the other processes (the connection does not echo its own messages back).

The connection reconnects forever after a server restart, with exponential back-off and jitter
(0.05 s doubling to 2 s); publishes made while disconnected wait in nats-py's pending buffer.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
import nats
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

from negotiator.bus import BusAddress, LocalBus
from negotiator.errors import BusError, MessageDecodeError, RequestTimeout
from negotiator.messages import decode, encode
from negotiator.signing import Keyring

_log = structlog.get_logger(__name__)

_frame_decoder = msgspec.msgpack.Decoder(list[bytes])
_signed_frame_decoder = msgspec.msgpack.Decoder(list[tuple[bytes, bytes]])
_encoder = msgspec.msgpack.Encoder()


class Envelope(msgspec.Struct, frozen=True, array_like=True):
    """What a process sends a remote service: who sends (its shard), the encoded message, and
    with a keyring the shard's signature over it (:mod:`negotiator.signing`)."""

    shard: int
    body: bytes
    signature: bytes = b""


def shard_identity(shard: int) -> str:
    """The identity a shard signs its reports to services with."""
    return f"shard-{shard}"


envelope_decoder = msgspec.msgpack.Decoder(Envelope)


@dataclass(frozen=True)
class Remote:
    """A service in another process: its subject and the type of its answers (None: no body)."""

    subject: str
    reply_type: Any = None


async def subscribed(nc: Client) -> None:
    """Return once the server has every subscription made so far on ``nc``.

    One ``flush()`` is not enough with nats-py 2.16: it writes its PING straight to the socket
    while SUB commands wait in the pending buffer for the flusher task, so the PONG can come back
    before the server has the subscription (seen here: about one run in 30 lost the first frames
    sent to a shard that had just subscribed). By the time that PONG is back the flusher has
    written the SUBs, so a second round trip, queued behind them, proves they arrived.
    """
    await nc.flush()
    await nc.flush()


def backoff(attempt: int, base: float = 0.05, cap: float = 2.0) -> float:
    """Seconds to wait before reconnect or retry ``attempt`` (0, 1, ...): doubling, capped,
    with +-25% jitter so that many clients do not come back in step."""
    return float(min(cap, base * 2.0 ** min(attempt, 16)) * random.uniform(0.75, 1.25))


class _Outgoing:
    __slots__ = ("address", "future", "message")

    def __init__(self, address: BusAddress, message: Any, future: asyncio.Future[Any]) -> None:
        self.address = address
        self.message = message
        self.future = future


class NatsBus(LocalBus):
    """A LocalBus whose unknown addresses are reached over NATS."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        shard: int = 0,
        owner: Callable[[BusAddress], int | None] = lambda address: None,
        remote: Mapping[BusAddress, Remote] | None = None,
        batch: int = 256,
        try_timeout_s: float = 2.0,
        default_capacity: int = 1024,
        name: str | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        super().__init__(default_capacity)
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.url = url
        self.prefix = prefix
        self.shard = shard
        self.owner = owner
        self.remote = dict(remote or {})
        self.batch = batch
        self.try_timeout_s = try_timeout_s
        self.name = name or f"{prefix}.shard.{shard}"
        self.keyring = keyring
        """Signs what leaves (agents' messages, the shard's reports) and verifies what comes."""
        self.receive: Callable[[bytes], bool] = self._deliver
        """Takes one received encoded agent message (the runtime sets its ``receive_bytes``)."""
        self.nc: Client | None = None
        self._frames: dict[int, list[Any]] = {}
        self._flush_ready = asyncio.Event()
        self._outbox: deque[_Outgoing] = deque()
        self._outbox_ready = asyncio.Event()
        self.frames_sent = 0
        self.frames_received = 0
        self.remote_sent = 0
        """Agent messages sent to other shards."""
        self.refused = 0
        """Received frames or messages that did not decode (counted, logged, dropped)."""
        self.retries = 0
        """Service sends and requests tried again (no answer in time, or no connection)."""
        self.reconnects = 0
        self._closing = False

    # -- connection -----------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect to the server (retrying with back-off until it answers) and subscribe."""
        attempt = 0
        while True:
            try:
                self.nc = await nats.connect(
                    self.url,
                    name=self.name,
                    no_echo=True,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_to_server_handler=self._pick_server,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                    error_cb=self._error,
                    connect_timeout=2,
                )
                break
            except (OSError, nats.errors.Error) as exc:
                if attempt == 0:
                    _log.warning("nats_unavailable", url=self.url, error=str(exc))
                await anyio.sleep(backoff(attempt))
                attempt += 1
        await self.nc.subscribe(f"{self.prefix}.shard.{self.shard}", cb=self._on_frame)
        await self.nc.subscribe(f"{self.prefix}.topic.>", cb=self._on_topic)
        await subscribed(self.nc)

    def _pick_server(self, servers: list[Any], info: dict[str, Any]) -> tuple[Any, float]:
        server = min(servers, key=lambda s: s.reconnects)
        return server, backoff(server.reconnects)

    async def _disconnected(self) -> None:
        if not self._closing:
            _log.warning("nats_disconnected", name=self.name)

    async def _reconnected(self) -> None:
        self.reconnects += 1
        _log.warning("nats_reconnected", name=self.name, reconnects=self.reconnects)

    async def _error(self, exc: Exception) -> None:
        _log.debug("nats_error", name=self.name, error=str(exc))

    async def close(self) -> None:
        """Send what is waiting and close the connection."""
        self._closing = True
        if self.nc is not None and not self.nc.is_closed:
            await self._flush_frames()
            await self.nc.drain()

    # -- sending --------------------------------------------------------------------------------

    def send_to_nowait(self, address: BusAddress, message: Any) -> bool:
        """Queue ``message`` for ``address`` here, in another shard, or at a remote service
        (``send_nowait`` of a LocalBus comes here for receivers it has no inbox for, so the
        local path costs one lookup, as on a LocalBus)."""
        if address in self._inboxes:
            return super().send_to_nowait(address, message)
        if address in self.remote:
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(_log_failure)  # nobody awaits it: a failure is logged
            self._enqueue(_Outgoing(address, message, future))
            return True
        shard = self.owner(address)
        if shard is None or shard == self.shard:
            return super().send_to_nowait(address, message)  # counted as undeliverable
        frame = self._frames.setdefault(shard, [])
        data = encode(message)
        if self.keyring is None:
            frame.append(data)
        else:
            try:
                frame.append((data, self.keyring.sign(message.sender, data)))
            except KeyError:  # only this process's agents sign here
                return super().send_to_nowait(address, message)  # counted as undeliverable
        self.remote_sent += 1
        if len(frame) >= self.batch or len(frame) == 1:
            self._flush_ready.set()
        return True

    async def send(self, address: BusAddress, message: Any) -> None:
        """Queue ``message``; for a remote service, return once the service has it."""
        if address not in self.remote:
            if address in self._inboxes:
                await super().send(address, message)
            else:
                self.send_to_nowait(address, message)
            return
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._enqueue(_Outgoing(address, message, future))
        await future

    async def request(self, address: BusAddress, message: Any, timeout: float) -> Any:
        """Ask a local or remote service; RequestTimeout after ``timeout`` seconds in all."""
        if address not in self.remote:
            return await super().request(address, message, timeout)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._enqueue(_Outgoing(address, message, future))
        try:
            with anyio.fail_after(timeout):
                return await asyncio.shield(future)
        except TimeoutError:
            future.cancel()
            raise RequestTimeout(f"{address!r} gave no reply within {timeout} s") from None

    async def call(self, address: BusAddress, message: Any, timeout: float) -> Any:
        """Send ``message`` to a remote service now, outside the outbox (before :meth:`run` or
        after it), retrying until it answers; RequestTimeout after ``timeout`` seconds."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            with anyio.fail_after(timeout):
                await self._until_answered(_Outgoing(address, message, future))
        except TimeoutError:
            raise RequestTimeout(f"{address!r} gave no reply within {timeout} s") from None
        return future.result()

    def publish(self, topic: str, message: Any) -> int:
        """Local subscribers now; other processes through ``PREFIX.topic.TOPIC``."""
        count = super().publish(topic, message)
        if self.nc is not None:
            task = asyncio.get_running_loop().create_task(
                self.nc.publish(f"{self.prefix}.topic.{topic}", _encoder.encode(message))
            )
            task.add_done_callback(_log_failure)
        return count

    def _enqueue(self, item: _Outgoing) -> None:
        self._outbox.append(item)
        self._outbox_ready.set()

    def queue_depth(self) -> int:
        """Waiting here: local inboxes, frames not yet published, service sends not yet taken."""
        pending = sum(len(f) for f in self._frames.values())
        return super().queue_depth() + pending + len(self._outbox)

    # -- running --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Local services and the spill queue, the frame flusher and the service outbox."""
        if self.nc is None:
            await self.connect()
        async with anyio.create_task_group() as tg:
            tg.start_soon(super().run)
            tg.start_soon(self._flusher)
            tg.start_soon(self._deliver_outbox)

    async def _flusher(self) -> None:
        while True:
            await self._flush_ready.wait()
            self._flush_ready.clear()
            await asyncio.sleep(0)  # let this turn of the loop add to the frames
            await self._flush_frames()

    async def _flush_frames(self) -> None:
        assert self.nc is not None
        frames, self._frames = self._frames, {}
        for shard, messages in frames.items():
            for start in range(0, len(messages), self.batch):
                chunk = messages[start : start + self.batch]
                await self.nc.publish(f"{self.prefix}.shard.{shard}", _encoder.encode(chunk))
                self.frames_sent += 1

    async def _deliver_outbox(self) -> None:
        """Service sends and requests, one at a time in order, each until acknowledged."""
        while True:
            await self._outbox_ready.wait()
            while self._outbox:
                item = self._outbox[0]
                if not item.future.done():
                    await self._until_answered(item)
                self._outbox.popleft()
            self._outbox_ready.clear()

    async def _until_answered(self, item: _Outgoing) -> None:
        remote = self.remote[item.address]
        body = _encoder.encode(item.message)
        signature = b""
        if self.keyring is not None:
            signature = self.keyring.sign(shard_identity(self.shard), body)
        data = _encoder.encode(Envelope(self.shard, body, signature))
        attempt = 0
        while not item.future.done():
            assert self.nc is not None
            try:
                reply = await self.nc.request(remote.subject, data, timeout=self.try_timeout_s)
            except nats.errors.MaxPayloadError:  # no retry can help: say what to change
                limit = self.nc.max_payload
                item.future.set_exception(
                    BusError(
                        f"a {type(item.message).__name__} of {len(data):,} bytes is over the NATS"
                        f" server's max_payload ({limit:,}): raise max_payload in its"
                        " configuration, or run more, smaller shards"
                    )
                )
                return
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                self.retries += 1  # a slot barrier can outlast one try: not worth a warning
                level = _log.warning if attempt and attempt % 10 == 0 else _log.debug
                level("service_retry", subject=remote.subject, attempt=attempt, error=repr(exc))
                await anyio.sleep(backoff(attempt))
                attempt += 1
                continue
            if item.future.done():  # the requester gave up meanwhile
                return
            if not reply.data or remote.reply_type is None:
                item.future.set_result(None)
                return
            try:
                answer = msgspec.msgpack.decode(reply.data, type=remote.reply_type)
            except msgspec.MsgspecError as exc:
                item.future.set_exception(MessageDecodeError(str(exc)))
                return
            item.future.set_result(answer)

    # -- receiving ------------------------------------------------------------------------------

    async def _on_frame(self, msg: Msg) -> None:
        try:
            if self.keyring is None:
                messages = _frame_decoder.decode(msg.data)
            else:
                messages = self._verified(_signed_frame_decoder.decode(msg.data))
        except msgspec.MsgspecError as exc:
            self.refused += 1
            _log.warning("frame_refused", subject=msg.subject, error=str(exc))
            return
        self.frames_received += 1
        receive = self.receive
        for data in messages:
            if not receive(data):
                self.refused += 1

    def _verified(self, signed: list[tuple[bytes, bytes]]) -> list[bytes]:
        """The messages whose signature is their sender's (the rest refused and counted)."""
        assert self.keyring is not None
        out = []
        for data, signature in signed:
            try:
                sender = getattr(decode(data), "sender", None)
            except MessageDecodeError:
                sender = None
            if sender is None:
                out.append(data)  # not an agent message: refused, counted, logged by ``receive``
                continue
            if self.keyring.verify(sender, data, signature):
                out.append(data)
            else:
                self.refused += 1
                _log.warning("message_refused", reason="signature", sender=sender)
        return out

    def _deliver(self, data: bytes) -> bool:
        try:
            message = decode(data)
        except MessageDecodeError as exc:
            _log.warning("message_refused", reason="decode", error=str(exc))
            return False
        receiver = getattr(message, "receiver", None)
        if receiver is None or receiver not in self._inboxes:
            return False
        return super().send_to_nowait(receiver, message)

    async def _on_topic(self, msg: Msg) -> None:
        topic = msg.subject.removeprefix(f"{self.prefix}.topic.")
        try:
            message = decode(msg.data)
        except MessageDecodeError as exc:
            self.refused += 1
            _log.warning("topic_message_refused", topic=topic, error=str(exc))
            return
        super().publish(topic, message)


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        _log.error("send_failed", error=str(future.exception()))


__all__ = [
    "Envelope",
    "NatsBus",
    "Remote",
    "backoff",
    "envelope_decoder",
    "shard_identity",
    "subscribed",
]
