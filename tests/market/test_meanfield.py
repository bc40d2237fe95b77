"""The mean-field service: correct statistics, cached snapshots, guidance from trades."""

from __future__ import annotations

import numpy as np
import pytest

from market import MeanFieldService
from negotiator.messages import PopulationReport, SnapshotQuery, TradeReport


def test_statistics_per_type_match_numpy() -> None:
    rng = np.random.default_rng(0)
    net = rng.integers(-3000, 3000, 500)
    types = rng.integers(0, 2, 500)
    reservation = rng.integers(80_000, 300_000, 500)
    service = MeanFieldService(bins=10, span=3000)
    service.handle(
        PopulationReport.of(
            2, ["consumer", "prosumer"], types.tolist(), net.tolist(), reservation.tolist()
        )
    )
    snap = service.handle(SnapshotQuery(2))
    assert snap is not None and snap.slot == 2
    for code, name in enumerate(["consumer", "prosumer"]):
        x = net[types == code]
        stats = snap.types[name]
        assert stats.count == x.size and sum(stats.histogram) == x.size
        assert stats.mean == pytest.approx(x.mean()) and stats.std == pytest.approx(x.std())
        assert (stats.buyers, stats.sellers) == ((x > 0).sum(), (x < 0).sum())
        assert stats.histogram == np.histogram(x, np.linspace(-3000, 3000, 11))[0].tolist()
        assert stats.reservation_mean == pytest.approx(reservation[types == code].mean())


def test_queries_reuse_the_snapshot_until_something_is_reported() -> None:
    service = MeanFieldService()
    service.handle(PopulationReport.of(0, ["c"], [0, 0], [5, 7], [1, 1]))
    first = service.handle(SnapshotQuery(0))
    for _ in range(100):
        assert service.handle(SnapshotQuery(0)) is first
    assert service.recomputations == 1
    service.handle(TradeReport(0, [100], [10]))
    assert service.handle(SnapshotQuery(0)) is not first
    assert service.recomputations == 2


def test_guidance_is_the_volume_weighted_price_of_the_recent_window() -> None:
    service = MeanFieldService(price_window=2)
    assert service.snapshot().guidance_price is None
    service.handle(TradeReport(0, [100], [1]))
    service.handle(TradeReport(1, [200, 300], [1, 2]))
    assert service.snapshot().guidance_price == round((100 + 200 + 600) / 4)
    snap = service.snapshot()
    assert snap.prices is not None and snap.prices.trades == 3
    service.handle(TradeReport(2, [400], [1]))  # slot 0 leaves the window
    snap = service.snapshot()
    assert snap.prices is not None and snap.prices.trades == 3
    assert snap.guidance_price == round((200 + 600 + 400) / 4)


def test_unknown_messages_are_refused() -> None:
    with pytest.raises(TypeError):
        MeanFieldService().handle(object())
    with pytest.raises(ValueError):
        MeanFieldService(bins=0)


def test_drift_is_the_wasserstein_distance_between_consecutive_slots() -> None:
    service = MeanFieldService(bins=10, span=1000.0)  # bins 200 wide over [-1000, 1000]
    width = 200.0
    service.handle(PopulationReport.of(0, ["consumer"], [0, 0], [100, 100], [1, 1]))
    assert service.snapshot().types["consumer"].drift == 0.0  # nothing to compare with yet
    service.handle(PopulationReport.of(1, ["consumer"], [0, 0], [500, 500], [1, 1]))
    # all the mass moved two bins up: W1 = 2 bin widths
    assert service.snapshot().types["consumer"].drift == pytest.approx(2 * width)
    service.handle(TradeReport(1, [200_000], [1000]))  # prices change, the population does not
    assert service.snapshot().types["consumer"].drift == pytest.approx(2 * width)
    gauges = service.gauges()
    assert gauges["drift"] == {"consumer": pytest.approx(400.0)}
    assert gauges["agents"] == {("consumer", "buyer"): 2, ("consumer", "seller"): 0}
    assert gauges["guidance_price"] == 200_000


BID, ASK = 280_000, 80_000  # the buyers' and the sellers' reservations (import, export)


def _reservations(net: list[int] | np.ndarray) -> list[int]:
    return [BID if x > 0 else ASK for x in np.asarray(net).tolist()]


def test_guidance_splits_the_gains_by_the_imbalance_and_shrinks_positions() -> None:
    def guidance(net: list[int]) -> dict[str, object]:
        service = MeanFieldService()
        types = [0] * 3 + [1] * 2
        report = PopulationReport.of(0, ["consumer", "prosumer"], types, net, _reservations(net))
        service.handle(report)
        snapshot = service.snapshot()
        assert snapshot.board is not None
        assert snapshot.board.demand == sum(x for x in net if x > 0)
        assert (snapshot.board.bid, snapshot.board.ask) == (BID, ASK)
        return dict(snapshot.guidance)

    buyers = guidance([800, 600, 700, -500, -300])  # the population is net buying
    sellers = guidance([100, 50, 80, -900, -1200])  # net selling
    balanced = guidance([500, 500, 500, -750, -750])
    mid = (BID + ASK) / 2
    assert BID > buyers["consumer"].price > mid > sellers["consumer"].price > ASK  # type: ignore[attr-defined]
    assert balanced["consumer"].price == pytest.approx(mid)  # type: ignore[attr-defined]
    assert buyers["consumer"].price == buyers["prosumer"].price  # type: ignore[attr-defined]
    for advice, mean in ((buyers["consumer"], 700.0), (buyers["prosumer"], -400.0)):
        assert 0 < advice.position / mean < 1  # type: ignore[attr-defined]
        assert 0 < advice.traded_share < 1  # type: ignore[attr-defined]
    assert MeanFieldService().snapshot().guidance == {}  # nothing reported yet: no guidance
    one_sided = MeanFieldService()
    one_sided.handle(PopulationReport.of(0, ["c"], [0, 0], [500, 300], [BID, BID]))
    assert one_sided.snapshot().guidance == {}  # nobody to trade with: no price to expect


def test_guidance_can_be_switched_off() -> None:
    service = MeanFieldService(guidance=False)
    service.handle(PopulationReport.of(0, ["consumer"], [0, 0], [500, 300], [1, 1]))
    service.handle(TradeReport(0, [150_000], [1000]))
    snapshot = service.snapshot()
    assert snapshot.guidance == {} and snapshot.guidance_price == 150_000


def test_quantiles_from_the_histogram_are_exact_to_a_bin() -> None:
    rng = np.random.default_rng(3)
    net = np.round(rng.normal(300, 900, 20_000)).astype(np.int64)
    service = MeanFieldService(bins=64, span=5000)  # bins 156.25 wide
    service.handle(PopulationReport.of(0, ["c"], np.zeros_like(net), net, np.ones_like(net)))
    stats = service.snapshot().types["c"]
    for name, value in stats.quantiles.items():
        assert abs(value - np.quantile(net, int(name[1:]) / 100)) < 10_000 / 64
    inner = np.sort(net)[5_000:15_000]  # between the quartiles
    assert stats.trimmed_mean == pytest.approx(inner.mean(), abs=5)


@pytest.mark.parametrize("location", ["median", "trimmed"])
def test_a_fifth_of_lying_agents_cannot_steer_a_robust_location(location: str) -> None:
    rng = np.random.default_rng(4)
    honest = rng.normal(400, 200, 800).round().astype(np.int64)
    honest[:300] = -rng.uniform(100, 900, 300).round()  # some sellers, so there is a price
    liars = np.full(200, 10**9)  # claim to need a thousand megawatt-hours at any price
    net = np.concatenate([honest, liars])
    reservation = np.array(_reservations(honest) + [10**9] * 200)

    def guidance(location: str, net: np.ndarray, reservation: np.ndarray) -> tuple[float, float]:
        service = MeanFieldService(location=location)  # type: ignore[arg-type]
        service.handle(PopulationReport.of(0, ["c"], np.zeros_like(net), net, reservation))
        snapshot = service.snapshot()
        return snapshot.types["c"].center, snapshot.guidance["c"].price

    clean_center, clean_price = guidance(location, honest, np.array(_reservations(honest)))
    center, price = guidance(location, net, reservation)
    assert abs(center - clean_center) < 300  # within about one honest standard deviation
    assert ASK < price < BID
    assert abs(price - clean_price) < 0.2 * (BID - ASK)
    mean_center, mean_price = guidance("mean", net, reservation)
    assert mean_center > 10**8 and mean_price > BID  # the plain mean follows the liars


def test_a_bad_location_or_trim_is_refused() -> None:
    with pytest.raises(ValueError, match="location"):
        MeanFieldService(location="mode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="trim"):
        MeanFieldService(trim=0.5)
