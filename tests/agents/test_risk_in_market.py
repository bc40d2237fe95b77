"""Traders who decide on forecasts: risk aversion lowers the CVaR of their cost in a live run."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from agents import Trader, linear
from agents.risk import cvar
from market import board_matcher
from negotiator.ledger import Ledger
from negotiator.runtime import Runtime, RuntimeConfig
from payments import InProcessRail

pytestmark = pytest.mark.anyio

TARIFF = (280_000, 80_000)
SLOTS, PAIRS = 40, 30


def _member(address: int, mean: float, gamma: float, seed: int) -> Trader:
    """A member whose need each slot is drawn around ``mean`` (sd 40%), known only as a forecast
    of 300 draws from the same distribution until gate closure."""
    sd = 0.4 * abs(mean)
    realised = np.rint(np.random.default_rng(seed).normal(mean, sd, SLOTS)).astype(int).tolist()

    def forecast(slot: int) -> np.ndarray:
        return np.random.default_rng([seed, slot]).normal(mean, sd, 300)

    return Trader(
        address,
        "averse" if gamma else "neutral",
        realised.__getitem__,
        lambda slot: TARIFF,
        linear(),
        forecast=forecast,
        risk_aversion=gamma,
    )


async def test_risk_averse_traders_have_a_lower_cvar_of_cost_than_risk_neutral_ones(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(5)
    traders = []
    group: dict[tuple[int, float], list[int]] = {}
    for pair in range(PAIRS):  # the same need for a neutral and an averse member, per role
        for sign in (1, -1):
            mean = sign * float(rng.uniform(500, 1500))
            for gamma in (0.0, 0.9):
                group.setdefault((sign, gamma), []).append(len(traders))
                traders.append(_member(len(traders), mean, gamma, seed=10 * pair + 1 + sign))
    ledger = Ledger(tmp_path / "ledger.sqlite")
    runtime = Runtime(
        traders,
        rail=InProcessRail({t.address: 10**10 for t in traders}),
        ledger=ledger,
        matcher=board_matcher(),
        rng=np.random.default_rng(0),
        config=RuntimeConfig(),
    )
    report = await runtime.run(SLOTS)
    assert report.settled == report.agreements > SLOTS * PAIRS
    ledger.close()
    paid = np.zeros((len(traders), SLOTS))
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        rows = db.execute(
            "SELECT slot, buyer, seller, amount_msat FROM agreements WHERE state = 'settled'"
        ).fetchall()
    for slot, buyer, seller, amount in rows:
        paid[buyer, slot] += amount
        paid[seller, slot] -= amount
    cost = paid.copy()
    for t in traders:  # each slot's position left to the grid, at the tariff
        left = np.asarray(t._after, np.float64)
        cost[t.address] += np.where(left > 0, left * TARIFF[0], left * TARIFF[1]) / 1000
    for sign in (1, -1):  # buyers, then sellers
        neutral, averse = cost[group[sign, 0.0]].ravel(), cost[group[sign, 0.9]].ravel()
        assert float(cvar(averse, 0.1)) < float(cvar(neutral, 0.1)), sign
