"""BOLT11: our encoder writes what the bolt11 library writes, and any decoder reads it back."""

from __future__ import annotations

import hashlib

import bolt11
import pytest
from bolt11.models.tags import TagChar, Tags
from coincurve import PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from negotiator.errors import InvoiceError
from payments import invoices

KEY = PrivateKey(hashlib.sha256(b"payee").digest())
HASH = hashlib.sha256(b"preimage").hexdigest()
SECRET = hashlib.sha256(b"secret").hexdigest()


def fields(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "currency": "bcrt",
        "amount_msat": 250_000,
        "timestamp": 1_795_316_809,
        "payment_hash": HASH,
        "payment_secret": SECRET,
        "description": "energy slot 13",
        "expiry": 3600,
        "min_final_cltv": 18,
    }
    base.update(over)
    return base


@settings(max_examples=40, deadline=None)
@given(
    amount=st.integers(1, 21_000_000 * 10**11),
    timestamp=st.integers(0, 2**35 - 1),
    description=st.text(max_size=120),
    expiry=st.integers(1, 2**32),
    cltv=st.integers(1, 2**16),
)
def test_encoding_is_byte_for_byte_the_bolt11_librarys(
    amount: int, timestamp: int, description: str, expiry: int, cltv: int
) -> None:
    ours = invoices.encode(
        KEY,
        currency="bcrt",
        amount_msat=amount,
        timestamp=timestamp,
        payment_hash=HASH,
        payment_secret=SECRET,
        description=description,
        expiry=expiry,
        min_final_cltv=cltv,
    )
    tags = Tags()
    tags.add(TagChar.payment_hash, HASH)
    tags.add(TagChar.payment_secret, SECRET)
    tags.add(TagChar.description, description)
    tags.add(TagChar.expire_time, expiry)
    tags.add(TagChar.min_final_cltv_expiry, cltv)
    invoice = bolt11.Bolt11(
        currency="bcrt", amount_msat=bolt11.MilliSatoshi(amount), date=timestamp, tags=tags
    )
    assert ours == bolt11.encode(invoice, KEY.to_hex())


def test_decoding_recovers_every_field_and_the_payee_node_id() -> None:
    request = invoices.encode(KEY, **fields())  # type: ignore[arg-type]
    assert request.startswith("lnbcrt2500n1")
    decoded = invoices.decode(request)
    assert decoded.payee == KEY.public_key.format(compressed=True).hex()
    assert (decoded.amount_msat, decoded.payment_hash, decoded.payment_secret) == (
        250_000,
        HASH,
        SECRET,
    )
    assert (decoded.expiry, decoded.min_final_cltv, decoded.description) == (
        3600,
        18,
        "energy slot 13",
    )


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"amount_msat": 0}, "bad_amount"),
        ({"payment_hash": "zz"}, "bad_hash"),
        ({"payment_secret": "ab" * 16}, "bad_hash"),
        ({"timestamp": -1}, "bad_timestamp"),
        ({"description": "x" * 700}, "bad_description"),
    ],
)
def test_bad_fields_raise_a_typed_error(over: dict[str, object], reason: str) -> None:
    with pytest.raises(InvoiceError) as info:
        invoices.encode(KEY, **fields(**over))  # type: ignore[arg-type]
    assert info.value.reason == reason


def test_a_tampered_or_garbage_request_does_not_decode() -> None:
    request = invoices.encode(KEY, **fields())  # type: ignore[arg-type]
    flipped = request[:20] + ("q" if request[20] != "q" else "p") + request[21:]
    for bad in ("lnbcrt1garbage", flipped, ""):
        with pytest.raises(InvoiceError):
            invoices.decode(bad)
