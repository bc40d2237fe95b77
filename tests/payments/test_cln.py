"""ClnRail's own duties on the socket double: reconciliation, no second payment, netting."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from negotiator.errors import PaymentFailed
from negotiator.settlement import PaymentStatus
from payments.cln import ClnNode, ClnRail
from tests.payments.cln_double import ClnDouble

pytestmark = pytest.mark.anyio

FUNDS = 1_000_000_000
PLACEMENT = {agent: agent % 3 for agent in range(30)}


@pytest.fixture
def double() -> Iterator[ClnDouble]:
    with ClnDouble(Path(tempfile.mkdtemp(prefix="cln"))) as d:
        yield d


def rail(double: ClnDouble, **kw: object) -> ClnRail:
    nodes = [ClnNode(n.name, double.socket(n.name)) for n in double.nodes]
    accounts = dict.fromkeys(PLACEMENT, FUNDS)
    return ClnRail(nodes, PLACEMENT, accounts=accounts, **kw)  # type: ignore[arg-type]


def xpays(double: ClnDouble) -> int:
    return sum(1 for _, method in double.calls if method == "xpay")


async def test_a_lost_answer_is_reconciled_by_payment_hash(double: ClnDouble) -> None:
    r = rail(double, timeout_s=5)
    invoice = await r.create_invoice(2, 500_000, "agreement-1", "")
    double.hang_up_after_xpay("alice")  # the payment goes through, the answer never comes
    result = await r.pay(0, invoice)
    assert hashlib.sha256(bytes.fromhex(result.preimage)).hexdigest() == invoice.payment_hash
    assert result.fee_msat == 1 + 500_000 * 10 // 1_000_000  # bob: base 1 msat + 10 ppm
    assert xpays(double) == 1 and r.stats.events()["reconciled"] == 1
    assert len(double.node("alice").pays) == 1


async def test_a_retry_after_a_crash_finds_the_invoice_and_never_pays_twice(
    double: ClnDouble,
) -> None:
    first = rail(double, namespace="run-7")
    invoice = await first.create_invoice(2, 500_000, "agreement-1", "")
    await first.pay(0, invoice)
    again = rail(double, namespace="run-7")  # a resumed run: same namespace, fresh memory
    same = await again.create_invoice(2, 500_000, "agreement-1", "")
    assert same.payment_hash == invoice.payment_hash  # duplicate label: the existing invoice
    result = await again.pay(0, same)  # xpay answers 219: the earlier payment is looked up
    assert hashlib.sha256(bytes.fromhex(result.preimage)).hexdigest() == invoice.payment_hash
    assert len(double.node("alice").pays) == 1
    other = rail(double)  # another run against the same nodes: its own labels
    fresh = await other.create_invoice(2, 500_000, "agreement-1", "")
    assert fresh.payment_hash != invoice.payment_hash


async def test_xpay_errors_map_to_reasons(double: ClnDouble) -> None:
    r = rail(double, max_fee_ppm=0, max_fee_base_msat=0)
    invoice = await r.create_invoice(2, 500_000, "agreement-1", "")
    with pytest.raises(PaymentFailed) as info:
        await r.pay(0, invoice)
    assert info.value.reason == "fee_too_high"  # 206: bob charges 1 msat + 10 ppm
    assert await r.lookup(invoice.payment_hash) is not PaymentStatus.COMPLETE
    assert r.stats.outcomes == {"fee_too_high": 1}


async def test_a_node_killed_during_a_batch_leaves_nothing_paid_twice_or_unexplained(
    double: ClnDouble,
) -> None:
    r = rail(double, timeout_s=1.5, concurrency=4)
    double.delay_s = 0.05
    invoices = [await r.create_invoice(2, 100_000, f"agreement-{i}", "") for i in range(12)]
    outcomes: dict[str, str] = {}

    async def pay(i: int) -> None:
        try:
            await r.pay(0 if i % 2 else 3, invoices[i])  # agents 0 and 3 are on alice
            outcomes[invoices[i].payment_hash] = "settled"
        except PaymentFailed as exc:
            outcomes[invoices[i].payment_hash] = exc.reason

    async with anyio.create_task_group() as tg:
        for i in range(12):
            tg.start_soon(pay, i)
        with anyio.fail_after(10):
            while len(outcomes) < 3:  # a few have gone through: now alice dies
                await anyio.sleep(0.005)
        double.kill("alice")
    assert len(outcomes) == 12
    values = list(outcomes.values())
    assert set(values) <= {"settled", "unreconciled", "not_sent", "payment_failed"}
    assert values.count("settled") >= 3 and values.count("settled") < 12
    double.revive("alice")
    paid = {p["payment_hash"] for p in double.node("alice").pays}
    assert len(paid) == len(double.node("alice").pays)  # nothing paid twice
    for h, outcome in outcomes.items():
        if outcome == "settled":
            assert h in paid
        if h in paid:  # what a failed reconciliation missed shows up once the node is back
            assert await r.lookup(h) is PaymentStatus.COMPLETE


async def test_concurrency_is_bounded_by_the_limiter(double: ClnDouble) -> None:
    r = rail(double, concurrency=2)
    double.delay_s = 0.1
    invoices = [await r.create_invoice(2, 1_000, f"a-{i}", "") for i in range(6)]
    started = anyio.current_time()
    async with anyio.create_task_group() as tg:
        for i, invoice in enumerate(invoices):
            tg.start_soon(r.pay, 0 if i % 2 else 3, invoice)
    assert anyio.current_time() - started >= 0.3  # 6 payments, 2 at a time, 0.1 s each


async def test_netting_settles_many_agreements_with_one_payment_per_node_pair(
    double: ClnDouble,
) -> None:
    r = rail(double, mode="netted", net_window_s=0.05)
    plan = [(0, 2, 100_000), (3, 5, 250_000), (2, 0, 50_000), (1, 2, 70_000), (0, 3, 5_000)]
    invoices = [
        await r.create_invoice(payee, amount, f"n-{i}", "")
        for i, (_, payee, amount) in enumerate(plan)
    ]
    assert xpays(double) == 0 and all(i.request.startswith("netted:") for i in invoices)
    results = {}

    async def pay(i: int) -> None:
        results[i] = await r.pay(plan[i][0], invoices[i])

    async with anyio.create_task_group() as tg:
        for i in range(len(plan)):
            tg.start_soon(pay, i)
    for i, invoice in enumerate(invoices):
        assert (
            hashlib.sha256(bytes.fromhex(results[i].preimage)).hexdigest() == invoice.payment_hash
        )
    # alice -> carol nets 100k + 250k - 50k; bob -> carol 70k; 0 -> 3 stays on alice
    assert xpays(double) == 2
    sent = sorted(p["amount_msat"] for n in double.nodes for p in n.pays)
    assert sent == [70_000, 300_000]
    assert r.accounts[2] == FUNDS + 100_000 - 50_000 + 70_000
    assert r.stats.events()["net_payments"] == 2


@pytest.mark.parametrize("settlement", ["per_trade", "netted"])
def test_simulate_settles_every_agreement_through_core_lightning(
    tmp_path: Path, settlement: str
) -> None:
    import json

    from typer.testing import CliRunner

    from negotiator.cli import app

    root = Path(tempfile.mkdtemp(prefix="cln"))
    with ClnDouble(root, capacity_msat=50_000_000_000, push_msat=25_000_000_000) as d:
        out = tmp_path / "cln.json"
        args = ["simulate", "--agents", "60", "--slots", "14", "--quiet", "--json", str(out)]
        nodes = [f"--cln={n.name}={d.socket(n.name)}" for n in d.nodes]
        result = CliRunner().invoke(
            app, [*args, "--rail", "cln", *nodes, "--settlement", settlement]
        )
        assert result.exit_code == 0, result.output
        data = json.loads(out.read_text())
        assert data["rail"] == "cln" and data["settled"] == data["agreements"] > 50
        assert data["failed_settlements"] == 0
        lightning = sum(len(n.pays) for n in d.nodes)
        if settlement == "per_trade":  # every agreement across nodes is its own payment
            assert data["payments"]["events"]["internal"] + lightning == data["settled"]
        else:
            assert 0 < lightning < data["settled"] // 5  # far fewer payments than agreements


def test_simulate_with_cln_needs_its_nodes() -> None:
    from typer.testing import CliRunner

    from negotiator.cli import app

    result = CliRunner().invoke(app, ["simulate", "--quiet", "--rail", "cln"])
    assert result.exit_code == 2 and "--cln" in result.output
    result = CliRunner().invoke(app, ["simulate", "--quiet", "--rail", "cln", "--cln", "x"])
    assert result.exit_code == 2 and "NAME=SOCKET" in result.output


async def test_node_calls_go_through_the_gil_hand_off(
    double: ClnDouble, thread_calls: list[Any]
) -> None:
    # pyln-client blocks, so each call runs in a worker thread; through negotiator.threads so
    # that a saturated negotiation loop cannot starve it of the GIL.
    r = rail(double, timeout_s=5)
    invoice = await r.create_invoice(2, 500_000, "agreement-1", "")
    await r.pay(0, invoice)
    methods = [fn.args[0] for fn in thread_calls]  # functools.partial(rpc.call, method, params)
    assert "invoice" in methods and "xpay" in methods
    assert len(methods) == len(double.calls)  # every call the nodes saw
