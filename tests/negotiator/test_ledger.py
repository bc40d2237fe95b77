"""The ledger: idempotent journal, payment hash as key, preimage checked, canonical digest."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from negotiator.errors import LedgerError
from negotiator.ledger import Agreement, Ledger
from negotiator.messages import Terms


def agreement(nid: int, quantity: int = 1000, price: int = 200_000) -> Agreement:
    return Agreement(nid, 0, 1, 2, Terms("energy", quantity, price, 0, 1), 3)


def pre(nid: int) -> tuple[str, str]:
    preimage = hashlib.sha256(f"p{nid}".encode()).hexdigest()
    return preimage, hashlib.sha256(bytes.fromhex(preimage)).hexdigest()


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.sqlite")


def test_the_full_lifecycle_and_its_counts(ledger: Ledger) -> None:
    ledger.record([agreement(1), agreement(2), agreement(3)])
    p1, h1 = pre(1)
    _, h2 = pre(2)
    assert ledger.mark_settling([(1, h1), (2, h2)]) == 2
    assert ledger.mark_settled([(1, h1, p1, 5)]) == 1
    assert ledger.mark_failed([(2, "no_route")]) == 1
    assert ledger.counts() == {"accepted": 1, "settling": 0, "settled": 1, "failed": 1}
    assert ledger.settled_totals() == (1000, 200_000, 5)
    assert ledger.failure_reasons() == {"no_route": 1}
    assert ledger.unfinished() == [(3, "accepted", None)]


def test_every_write_is_idempotent(ledger: Ledger) -> None:
    p, h = pre(1)
    assert ledger.record([agreement(1)], [h]) == 1
    assert ledger.record([agreement(1)], [h]) == 0
    assert ledger.mark_settled([(1, h, p, 0)]) == 1
    assert ledger.mark_settled([(1, h, p, 0)]) == 0
    assert ledger.mark_failed([(1, "late")]) == 0  # a settled agreement is never failed
    assert ledger.state_of(1) == "settled"
    assert ledger.state_of(42) is None


def test_settled_without_a_journaled_hash_takes_the_hash_it_was_paid_with(
    ledger: Ledger,
) -> None:
    p1, h1 = pre(1)
    p2, h2 = pre(2)
    p3, h3 = pre(3)
    ledger.record([agreement(1), agreement(2)])  # accepted, no invoice journaled
    ledger.record([agreement(3)], [h3])
    assert ledger.mark_settled([(1, h1, p1, 0), (3, h3, p3, 0)]) == 2
    assert ledger.state_of(1) == ledger.state_of(3) == "settled"
    assert ledger.unfinished() == [(2, "accepted", None)]
    with pytest.raises(LedgerError):  # a hash already journaled for agreement 1
        ledger.mark_settled([(2, h1, p1, 0)])
    assert ledger.mark_settled([(2, h2, p2, 0)]) == 1


def test_a_payment_hash_belongs_to_one_agreement(ledger: Ledger) -> None:
    _, h = pre(1)
    ledger.record([agreement(1)], [h])
    with pytest.raises(LedgerError):
        ledger.record([agreement(2)], [h])
    ledger.record([agreement(3)])
    with pytest.raises(LedgerError):
        ledger.mark_settling([(3, h)])


def test_a_preimage_must_hash_to_the_payment_hash(ledger: Ledger) -> None:
    _, h = pre(1)
    other, _ = pre(2)
    ledger.record([agreement(1)], [h])
    with pytest.raises(LedgerError):
        ledger.mark_settled([(1, h, other, 0)])
    assert ledger.state_of(1) == "settling"


def test_paid_with_another_hash_is_not_settled(ledger: Ledger) -> None:
    _, h1 = pre(1)
    p2, h2 = pre(2)
    ledger.record([agreement(1)], [h1])
    assert ledger.mark_settled([(1, h2, p2, 0)]) == 0


def test_large_batches_are_chunked_in_one_transaction(ledger: Ledger) -> None:
    agreements = [agreement(i) for i in range(6000)]  # 13 columns: over 30,000 variables
    hashes = [pre(i)[1] for i in range(6000)]
    assert ledger.record(agreements, hashes) == 6000
    assert ledger.counts()["settling"] == 6000
    with pytest.raises(ValueError):
        ledger.record(agreements[:2], hashes[:1])


def test_digest_depends_only_on_settled_content_in_nid_order(tmp_path: Path) -> None:
    def run(order: list[int], path: Path) -> str:
        ledger = Ledger(path)
        for nid in order:
            p, h = pre(nid)
            ledger.record([agreement(nid)], [h])
            ledger.mark_settled([(nid, h, p, 0)])
        ledger.record([agreement(99)])  # unsettled rows do not count
        return ledger.digest()

    assert run([1, 2, 3], tmp_path / "a.sqlite") == run([3, 1, 2], tmp_path / "b.sqlite")
    assert run([1, 2], tmp_path / "c.sqlite") != run([1, 2, 3], tmp_path / "d.sqlite")


def test_the_digest_is_sha256_of_each_settled_row_joined_by_bars(tmp_path: Path) -> None:
    """The canonical form, written out: a run's digest must not change with how it is computed."""
    ledger = Ledger(tmp_path / "l.sqlite")
    lines = []
    for nid in (2, 1):
        p, h = pre(nid)
        a = agreement(nid)
        ledger.record([a], [h])
        ledger.mark_settled([(nid, h, p, 0)])
        t = a.terms
        row = (nid, a.slot, a.buyer, a.seller, t.resource, t.quantity, t.price, t.start, t.end)
        lines.insert(0, "|".join(map(str, (*row, t.amount_msat(), h, p))) + "\n")
    assert ledger.digest() == hashlib.sha256("".join(lines).encode()).hexdigest()


def test_the_journal_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    first = Ledger(path)
    first.record([agreement(1)])
    first.close()
    assert Ledger(path).unfinished() == [(1, "accepted", None)]
