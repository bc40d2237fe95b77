"""The logistics adapter: delivery slots traded by shippers and carriers on the same kernel."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import anyio
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from agents import strategy
from agents.strategies import TimeDependent
from domains.logistics import (
    Carrier,
    LogisticsDay,
    LogisticsDomain,
    LogisticsScenario,
    Shipper,
    optimum,
)
from market import board_matcher
from negotiator.domain import TimeValue, Trade
from negotiator.ledger import Ledger
from negotiator.runtime import Runtime
from payments import InProcessRail


def test_a_parcel_loses_value_per_slot_of_delay_until_its_deadline() -> None:
    v = TimeValue(1000, ready=2, deadline=5, decay=0.1)
    assert [v.at(t) for t in range(7)] == [1000, 1000, 1000, 900, 800, 700, 700]
    assert [a > b for a, b in pairwise(v.at(t) for t in range(2, 6))] == [True] * 3
    with pytest.raises(ValueError, match="before ready"):
        TimeValue(1000, ready=3, deadline=2)
    with pytest.raises(ValueError, match="decay"):
        TimeValue(1000, ready=0, deadline=20, decay=0.1)


def test_bad_scenarios_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="less than the spot courier"):
        LogisticsScenario(cost_sat=(300, 2000), spot_sat=1500)
    with pytest.raises(ValueError, match="low <= high"):
        LogisticsScenario(capacity=(9, 3))
    with pytest.raises(ValueError, match="named ones: logistics"):
        LogisticsScenario.load("nowhere")
    assert LogisticsScenario.load("logistics").shippers == 400


def _brute_force(day: LogisticsDay) -> float:
    """The best assignment by the Hungarian method, one row per parcel and one column per
    unit of a carrier's slot capacity (exact, for small days)."""
    rows = [j for j, n in enumerate(day.shipper_parcels) for _ in range(int(n))]
    cols = [
        (c, t)
        for c in range(len(day.carrier_zone))
        for t in range(int(day.carrier_start[c]), int(day.carrier_end[c]))
        for _ in range(int(day.carrier_capacity[c]))
    ]
    gain = np.zeros((len(rows), len(cols)))
    for r, j in enumerate(rows):
        v = day.value(j)
        for k, (c, t) in enumerate(cols):
            if day.carrier_zone[c] == day.shipper_zone[j] and v.ready <= t <= v.deadline:
                gain[r, k] = max(0.0, day.gain_msat(j, c, t))
    r, k = linear_sum_assignment(gain, maximize=True)
    return float(gain[r, k].sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_benchmark_is_the_best_assignment(seed: int) -> None:
    spec = LogisticsScenario(slots=5, zones=2, carriers=3, shippers=8, capacity=(1, 3))
    day = LogisticsDay.generate(spec, np.random.default_rng(seed))
    best = optimum(day)
    assert best.gain_msat == pytest.approx(_brute_force(day), rel=1e-9)
    assert 0 < best.delivered <= int(day.shipper_parcels.sum())


def test_a_shipper_carries_unbooked_parcels_and_sends_the_rest_by_spot_courier() -> None:
    value = TimeValue(3_000_000, ready=1, deadline=3, decay=0.05)
    shipper = Shipper(0, 2, 5, value, 1_500_000, 300_000, _linear())
    assert shipper.open_slot(0, None) is None  # not ready yet
    position = shipper.open_slot(1, None)
    assert position is not None and position.quantity == 5
    assert position.resource == "delivery:2"
    # booking now instead of the spot courier at the deadline is worth spot + V(1) - V(3)
    assert position.reservation == (1_500_000 + 300_000) * 1000
    shipper.close_slot(1)
    assert shipper.spot_parcels == 0 and shipper.cost_msat == 0  # carried, not sent
    later = shipper.open_slot(3, None)
    assert later is not None and later.reservation == 1_500_000 * 1000  # the spot price
    shipper.close_slot(3)
    assert shipper.spot_parcels == 5 and shipper.cost_msat == 5 * 1_500_000
    assert shipper.open_slot(4, None) is None


def _linear() -> TimeDependent:
    return strategy("linear")


def test_the_logistics_day_trades_on_the_kernel_near_its_benchmark(tmp_path: Path) -> None:
    market = LogisticsDomain().market(
        "logistics", np.random.default_rng(1), strategy="mixed", max_rounds=10
    )
    ledger = Ledger(tmp_path / "ledger.sqlite")
    runtime = Runtime(
        market.agents,
        rail=InProcessRail(market.funding_msat),
        ledger=ledger,
        matcher=board_matcher(),
        rng=np.random.default_rng(1),
    )
    report = anyio.run(runtime.run, market.slots)
    runtime.close()
    trades = [Trade(*row) for row in ledger.settled()]
    ledger.close()
    quality = market.quality(trades)
    assert report.agreement_rate > 0.95 and report.failed_settlements == 0
    assert quality["efficiency"] >= 0.9  # the target
    shippers = [a for a in market.agents if isinstance(a, Shipper)]
    carriers = [a for a in market.agents if isinstance(a, Carrier)]
    assert len(shippers) == 400 and len(carriers) == 40
    for s in shippers:  # every parcel went: booked with a carrier or by spot courier
        booked = sum(t.quantity for t in trades if t.buyer == s.address)
        assert booked == s.bought_wh and booked + s.spot_parcels == s.parcels
        assert s.cost_msat == s.peer_paid_msat + s.spot_parcels * 1_500_000
    for c in carriers:  # no slot over the vehicle's capacity; idle capacity earns nothing
        per_slot: dict[int, int] = {}
        for t in trades:
            if t.seller == c.address:
                per_slot[t.slot] = per_slot.get(t.slot, 0) + t.quantity
        assert all(q <= -c._net(slot) for slot, q in per_slot.items())
        assert c.revenue_msat == c.peer_received_msat
    assert quality["delivered_by_carriers"] + quality["spot_parcels"] == quality["parcels"]
