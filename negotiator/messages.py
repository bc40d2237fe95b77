"""Wire messages: a tagged union of immutable msgspec Structs.

Money is integer millisatoshi (msat), quantities are integer base units of the traded resource
(watt-hours for energy), prices are integer msat per 1,000 base units (msat/kWh for energy).
Nothing that is paid or delivered is ever a float.

Constructing a message inside the process trusts the caller (msgspec does not validate on
``__init__``, which keeps the hot path at ~0.2 us per message); every message that crosses a process
boundary goes through :func:`decode`, which validates types and constraints strictly and raises
:class:`~negotiator.errors.MessageDecodeError` on anything else.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Annotated, Final

import msgspec
import numpy as np

from negotiator.errors import MessageDecodeError

INT64_MAX: Final = 2**63 - 1
"""Every integer fits a signed 64-bit column (SQLite INTEGER, msgpack int)."""
NonNeg = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
Positive = Annotated[int, msgspec.Meta(gt=0, le=INT64_MAX)]
Signed = Annotated[int, msgspec.Meta(ge=-INT64_MAX, le=INT64_MAX)]
Address = Annotated[int, msgspec.Meta(ge=-1, le=INT64_MAX)]
"""An agent's address on the bus: a non-negative integer; :data:`SYSTEM` for the runtime itself."""
HexHash = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]

SYSTEM: Final = -1
PRICE_UNIT: Final = 1000
"""Prices are quoted per this many base units of quantity (msat per kWh when the unit is Wh)."""


class Side(enum.IntEnum):
    """Which side of a trade an agent is on."""

    BUY = 0
    SELL = 1


class Terms(msgspec.Struct, frozen=True, gc=False):
    """What is on the table: a quantity of a typed resource, delivered in a window, at a price."""

    resource: str
    quantity: Positive
    price: NonNeg
    start: NonNeg
    end: NonNeg

    def amount_msat(self) -> int:
        """The payment for these terms: quantity x price / PRICE_UNIT, rounded down to 1 msat."""
        return self.quantity * self.price // PRICE_UNIT


class Invoice(msgspec.Struct, frozen=True, gc=False):
    """A payment request issued by the payee's node; the payment hash is sha256(preimage)."""

    payee: Address
    amount_msat: Positive
    payment_hash: HexHash
    label: str
    request: str
    expires_at: float


class Message(msgspec.Struct, frozen=True, gc=False, tag_field="kind"):
    """Fields every message carries: negotiation id, parties, round and sequence number."""

    nid: NonNeg
    sender: Address
    receiver: Address
    round: NonNeg
    seq: NonNeg


class Propose(Message, frozen=True, gc=False, tag="propose"):
    """Open a negotiation: the sender offers ``terms`` on its ``side``."""

    side: Side
    terms: Terms


class Counter(Message, frozen=True, gc=False, tag="counter"):
    """Answer the offer on the table with other terms."""

    terms: Terms


class Accept(Message, frozen=True, gc=False, tag="accept"):
    """Take the offer on the table; ``terms`` must equal it exactly."""

    terms: Terms


class Reject(Message, frozen=True, gc=False, tag="reject"):
    """Turn down the offer on the table and end the negotiation."""

    reason: str = ""


class Withdraw(Message, frozen=True, gc=False, tag="withdraw"):
    """Leave an open negotiation, whoever's turn it is."""

    reason: str = ""


class InvoiceIssued(Message, frozen=True, gc=False, tag="invoice"):
    """The seller's node issued an invoice for the agreed amount; sent to the buyer."""

    invoice: Invoice


class Paid(Message, frozen=True, gc=False, tag="paid"):
    """The buyer's payment completed; the preimage proves it (sha256(preimage) == hash)."""

    payment_hash: HexHash
    preimage: HexHash
    fee_msat: NonNeg = 0


class SettlementFailed(Message, frozen=True, gc=False, tag="settlement_failed"):
    """Settlement of an agreement failed for good; ``reason`` is a short code."""

    reason: str


class Start(Message, frozen=True, gc=False, tag="start"):
    """Runtime -> initiator: open a negotiation with ``counterparty``, who advertised ``quantity``."""

    counterparty: Address
    side: Side
    quantity: Positive
    slot: NonNeg


class Timeout(Message, frozen=True, gc=False, tag="timeout"):
    """Runtime -> party: the negotiation's wall-clock deadline has passed."""


class PopulationReport(msgspec.Struct, frozen=True, gc=False, tag_field="kind", tag="population"):
    """A batch of agents' state for one slot, sent to the mean-field service.

    Columnar: three packed little-endian arrays, one entry per agent. ``types`` (uint16) indexes
    ``type_names``; ``net`` (int64) is the signed position in base units (positive: wants to buy);
    ``reservation`` (int64, non-negative) its reservation price. Packed bytes travel as one msgpack
    ``bin`` each and turn back into arrays without a copy (:meth:`arrays`): a list of 100k Python
    ints cost the service 2 ms per column to convert. Build one with :meth:`of`; the lengths and
    ranges are checked on construction and on decode.
    """

    slot: NonNeg
    type_names: list[str]
    types: bytes
    net: bytes
    reservation: bytes

    def __post_init__(self) -> None:
        n, extra = divmod(len(self.types), 2)
        if extra or len(self.net) != 8 * n or len(self.reservation) != 8 * n:
            raise ValueError("types (uint16), net and reservation (int64) must have one entry each")
        codes, _, reservation = self.arrays()
        if n and (int(codes.max()) >= len(self.type_names) or int(reservation.min()) < 0):
            raise ValueError("a type code beyond type_names or a negative reservation price")

    @classmethod
    def of(
        cls,
        slot: int,
        type_names: list[str],
        types: Sequence[int] | np.ndarray,
        net: Sequence[int] | np.ndarray,
        reservation: Sequence[int] | np.ndarray,
    ) -> PopulationReport:
        """Pack per-agent columns (sequences or arrays) into a report."""
        return cls(
            slot,
            type_names,
            np.asarray(types, "<u2").tobytes(),
            np.asarray(net, "<i8").tobytes(),
            np.asarray(reservation, "<i8").tobytes(),
        )

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The columns as read-only arrays over the message's bytes (no copy)."""
        return (
            np.frombuffer(self.types, "<u2"),
            np.frombuffer(self.net, "<i8"),
            np.frombuffer(self.reservation, "<i8"),
        )

    def __len__(self) -> int:
        return len(self.types) // 2


class TradeReport(msgspec.Struct, frozen=True, gc=False, tag_field="kind", tag="trades"):
    """Agreed prices and quantities of one slot, sent to the mean-field service."""

    slot: NonNeg
    prices: list[NonNeg]
    quantities: list[Positive]


class SnapshotQuery(msgspec.Struct, frozen=True, gc=False, tag_field="kind", tag="snapshot_query"):
    """Ask the mean-field service for its current snapshot."""

    slot: Annotated[int, msgspec.Meta(ge=-1, le=INT64_MAX)]
    """The slot about to open (-1: before the first, what the service knew before the run)."""


NegotiationMessage = Propose | Counter | Accept | Reject | Withdraw
SettlementMessage = InvoiceIssued | Paid | SettlementFailed
ControlMessage = Start | Timeout
AnyMessage = NegotiationMessage | SettlementMessage | ControlMessage
WireMessage = AnyMessage | PopulationReport | TradeReport | SnapshotQuery

OFFERS: Final = (Propose, Counter)
"""Message types that put terms on the table."""

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(WireMessage)
_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder(WireMessage)


def encode(message: msgspec.Struct) -> bytes:
    """Encode a message as msgpack for the wire."""
    return _encoder.encode(message)


def decode(data: bytes | bytearray | memoryview) -> WireMessage:
    """Decode and validate msgpack bytes; raise MessageDecodeError for anything but a valid message."""
    try:
        return _decoder.decode(data)  # type: ignore[no-any-return]
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        # msgspec lets a string field's invalid UTF-8 through as UnicodeDecodeError
        raise MessageDecodeError(str(exc)) from exc


def encode_json(message: msgspec.Struct) -> bytes:
    """Encode a message as JSON (for logs, debugging and text transports)."""
    return _json_encoder.encode(message)


def decode_json(data: bytes | str) -> WireMessage:
    """Decode and validate JSON; raise MessageDecodeError for anything but a valid message."""
    try:
        return _json_decoder.decode(data)  # type: ignore[no-any-return]
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise MessageDecodeError(str(exc)) from exc


def kind_of(message: msgspec.Struct) -> str:
    """The wire tag of a message type (``"propose"``, ``"counter"``, ...)."""
    tag = type(message).__struct_config__.tag
    return str(tag)
