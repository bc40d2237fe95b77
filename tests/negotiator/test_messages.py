"""Wire messages: round trips, strict validation on decode, one typed error for bad input."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from negotiator.errors import MessageDecodeError
from negotiator.messages import (
    Accept,
    Counter,
    Invoice,
    InvoiceIssued,
    Paid,
    PopulationReport,
    Propose,
    Reject,
    SettlementFailed,
    Side,
    SnapshotQuery,
    Start,
    Terms,
    Timeout,
    TradeReport,
    Withdraw,
    decode,
    decode_json,
    encode,
    encode_json,
    kind_of,
)

T = Terms("energy", 1500, 250_000, 3, 4)
H = "ab" * 32
EXAMPLES = [
    Propose(1, 2, 3, 1, 1, Side.SELL, T),
    Counter(1, 3, 2, 2, 2, T),
    Accept(1, 2, 3, 2, 3, T),
    Reject(1, 2, 3, 2, 3, "no_agreement"),
    Withdraw(1, -1, 3, 0, 0, "agent_failure"),
    InvoiceIssued(1, 2, 3, 0, 4, Invoice(2, 375, H, "agreement-1", "lnbcrt1...", 1e9)),
    Paid(1, 3, 2, 0, 5, H, "cd" * 32, 2),
    SettlementFailed(1, -1, 2, 0, 0, "no_route"),
    Start(1, -1, 2, 0, 0, 3, Side.BUY, 1500, 3),
    Timeout(1, -1, 2, 0, 0),
    PopulationReport.of(3, ["consumer"], [0, 0], [120, -40], [280_000, 80_000]),
    TradeReport(3, [200_000], [1500]),
    SnapshotQuery(3),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_through_msgpack_and_json(message: msgspec.Struct) -> None:
    assert decode(encode(message)) == message
    assert decode_json(encode_json(message)) == message


def test_money_is_integer_and_rounds_down() -> None:
    assert Terms("energy", 1500, 250_000, 0, 1).amount_msat() == 375_000
    assert Terms("energy", 3, 333, 0, 1).amount_msat() == 0  # 0.999 msat rounds down


def test_kind_is_the_wire_tag() -> None:
    assert kind_of(EXAMPLES[0]) == "propose"
    assert msgspec.json.decode(encode_json(EXAMPLES[1]))["kind"] == "counter"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"garbage",
        b"\xc1",  # never used in msgpack
        encode({"kind": "propose"}),  # fields missing
        encode({"kind": "haggle", "nid": 1}),  # unknown kind
        encode([1, 2, 3]),  # not an object
        encode({"kind": "counter", "nid": "1", "sender": 1, "receiver": 2, "round": 1, "seq": 1}),
    ],
    ids=["empty", "text", "reserved-byte", "missing", "unknown-kind", "array", "wrong-type"],
)
def test_bad_bytes_raise_one_typed_error(raw: bytes) -> None:
    with pytest.raises(MessageDecodeError):
        decode(raw)


def _propose(**change: object) -> bytes:
    data = msgspec.to_builtins(EXAMPLES[0])
    for key, value in change.items():
        if key in data["terms"]:
            data["terms"][key] = value
        else:
            data[key] = value
    return msgspec.json.encode(data)


@pytest.mark.parametrize(
    "change",
    [
        {"quantity": 0},
        {"quantity": -5},
        {"price": -1},
        {"price": 1.5},
        {"nid": -1},
        {"sender": -2},
        {"seq": -1},
        {"side": 7},
        {"quantity": True},
    ],
    ids=lambda c: next(iter(c.items())).__repr__(),
)
def test_constraints_are_checked_on_decode(change: dict[str, object]) -> None:
    with pytest.raises(MessageDecodeError):
        decode_json(_propose(**change))


def test_a_payment_hash_must_be_64_hex_digits() -> None:
    data = msgspec.to_builtins(EXAMPLES[6])
    data["payment_hash"] = "XYZ"
    with pytest.raises(MessageDecodeError):
        decode_json(msgspec.json.encode(data))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_never_raise_anything_but_decode_error(raw: bytes) -> None:
    try:
        message = decode(raw)
    except MessageDecodeError:
        return
    assert decode(encode(message)) == message


_JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([msgspec.to_builtins(m) for m in EXAMPLES]),
    st.sampled_from(["nid", "sender", "round", "seq", "terms", "kind", "invoice", "slot"]),
    _JSONISH,
)
def test_mutated_fields_are_validated_or_rejected(
    base: dict[str, object], field: str, value: object
) -> None:
    data = dict(base)
    data[field] = value
    raw = msgspec.msgpack.encode(data)
    try:
        message = decode(raw)
    except MessageDecodeError:
        return
    assert decode(encode(message)) == message  # anything accepted is a valid message


def test_oversized_integers_are_rejected() -> None:
    with pytest.raises(MessageDecodeError):
        decode_json(_propose(nid=2**70))


def test_a_population_report_travels_as_packed_columns() -> None:
    report = PopulationReport.of(0, ["c", "p"], [0, 1, 1], [120, -40, 7], [280_000, 80_000, 1])
    received = decode(encode(report))
    assert isinstance(received, PopulationReport)
    codes, net, reservation = received.arrays()
    assert codes.tolist() == [0, 1, 1] and net.tolist() == [120, -40, 7]
    assert reservation.tolist() == [280_000, 80_000, 1] and len(received) == 3


@pytest.mark.parametrize(
    "columns",
    [
        {"types": b"\x00"},  # half an entry
        {"net": b"\x00" * 8},  # two types, one position
        {"types": b"\x02\x00\x00\x00"},  # type code 2 of 2 names
        {"reservation": (-1).to_bytes(8, "little", signed=True) + bytes(8)},
    ],
)
def test_a_population_report_with_bad_columns_is_rejected(columns: dict[str, bytes]) -> None:
    good = PopulationReport.of(0, ["c", "p"], [0, 1], [5, -5], [1, 1])
    fields = {f: getattr(good, f) for f in good.__struct_fields__} | columns
    with pytest.raises(MessageDecodeError):
        decode(msgspec.msgpack.encode({"kind": "population", **fields}))
    with pytest.raises(ValueError):
        PopulationReport(**fields)  # type: ignore[arg-type]


def test_invalid_utf8_in_a_string_field_is_a_decode_error() -> None:
    # found by the fuzzer: msgspec raised UnicodeDecodeError, not its own error
    data = encode(Reject(1, 0, 1, 1, 2, "ab"))
    broken = data.replace(b"ab", b"\xff\xfe")
    with pytest.raises(MessageDecodeError):
        decode(broken)
