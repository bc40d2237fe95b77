"""The in-process rail: all-or-nothing payments, idempotent invoices, the preimage as proof."""

from __future__ import annotations

import hashlib

import pytest

from negotiator.errors import AlreadyPaid, InvoiceError, PaymentFailed
from negotiator.settlement import PaymentStatus
from payments import InProcessRail

pytestmark = pytest.mark.anyio


async def test_a_payment_moves_money_and_proves_itself() -> None:
    rail = InProcessRail({1: 10_000, 2: 0})
    invoice = await rail.create_invoice(2, 4_000, "agreement-1", "energy")
    assert await rail.lookup(invoice.payment_hash) is PaymentStatus.PENDING
    result = await rail.pay(1, invoice)
    assert hashlib.sha256(bytes.fromhex(result.preimage)).hexdigest() == invoice.payment_hash
    assert (await rail.balance(1), await rail.balance(2)) == (6_000, 4_000)
    assert await rail.lookup(invoice.payment_hash) is PaymentStatus.COMPLETE
    assert rail.total_msat == 10_000


async def test_paying_twice_is_refused() -> None:
    rail = InProcessRail({1: 10_000, 2: 0})
    invoice = await rail.create_invoice(2, 4_000, "a", "")
    await rail.pay(1, invoice)
    with pytest.raises(AlreadyPaid):
        await rail.pay(1, invoice)
    assert await rail.balance(1) == 6_000


async def test_insufficient_funds_move_nothing() -> None:
    rail = InProcessRail({1: 100, 2: 0})
    invoice = await rail.create_invoice(2, 4_000, "a", "")
    with pytest.raises(PaymentFailed) as info:
        await rail.pay(1, invoice)
    assert info.value.reason == "insufficient_funds"
    assert (await rail.balance(1), await rail.balance(2)) == (100, 0)


async def test_invoices_are_idempotent_by_label_and_deterministic_by_seed() -> None:
    rail = InProcessRail({1: 0, 2: 0}, seed=7)
    first = await rail.create_invoice(2, 500, "agreement-9", "")
    assert await rail.create_invoice(2, 500, "agreement-9", "") == first
    with pytest.raises(InvoiceError):
        await rail.create_invoice(2, 501, "agreement-9", "")
    again = await InProcessRail({2: 0}, seed=7).create_invoice(2, 500, "agreement-9", "")
    other = await InProcessRail({2: 0}, seed=8).create_invoice(2, 500, "agreement-9", "")
    assert again.payment_hash == first.payment_hash != other.payment_hash


async def test_bad_invoices_and_counterfeits_are_refused() -> None:
    now = [0.0]
    rail = InProcessRail({1: 10_000, 2: 0}, invoice_expiry_s=10, clock=lambda: now[0])
    with pytest.raises(InvoiceError):
        await rail.create_invoice(3, 10, "x", "")
    with pytest.raises(InvoiceError):
        await rail.create_invoice(2, 0, "y", "")
    invoice = await rail.create_invoice(2, 100, "z", "")
    forged = type(invoice)(1, 100, invoice.payment_hash, "z", invoice.request, invoice.expires_at)
    with pytest.raises(PaymentFailed):
        await rail.pay(1, forged)
    with pytest.raises(PaymentFailed):
        await rail.pay(9, invoice)
    now[0] = 11.0
    with pytest.raises(PaymentFailed) as info:
        await rail.pay(1, invoice)
    assert info.value.reason == "expired"
    assert await rail.lookup("00" * 32) is PaymentStatus.UNKNOWN
    with pytest.raises(ValueError):
        InProcessRail({1: -1})
