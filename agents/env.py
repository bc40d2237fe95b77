"""The market as a training environment: vectorised, behind PettingZoo's ParallelEnv.

One episode is one realised day of an energy scenario; one step is one trading slot. The members'
positions come from the same device models and dispatch as the live runtime
(:func:`market.dispatch.dispatch`), the population statistics and the guidance price from the same
mean-field service (:class:`market.MeanFieldService`, fed the same ``PopulationReport``).

Each slot every member sends an action in [0, 1]^2: where its limit price sits between the
slot's export and import prices (a buyer's most, a seller's least), and the share of its position
it offers. The slot clears under the protocol's rules, vectorised: a sealed-bid double auction in
one round, price priority on both sides (ties in the order of the members), every admitted bid at
least every admitted ask, each matched unit at the midpoint of its bid and ask (the k = 1/2 double
auction, where two concession strategies of equal patience meet), quantities within positions,
and whatever is not traded settled with the grid at the tariff at gate closure. A member's reward
is what the slot saved it against the grid alone, in sat.

:class:`MarketCore` works on arrays (members x features), for training loops that want speed;
:class:`MarketEnv` wraps it with PettingZoo's per-agent dictionaries, for any RL library.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np
from pettingzoo import ParallelEnv

from market import MeanFieldService, dispatch
from market.dispatch import Mode
from market.scenario import EnergyCommunity, Scenario
from negotiator.messages import PopulationReport

OBSERVATION = (
    "position_kwh",
    "import_price",
    "export_price",
    "hour_sin",
    "hour_cos",
    "buyers_share",
    "demand_kwh",
    "supply_kwh",
    "guidance",
    "last_price",
)
"""What a member observes, in order: its own position, the tariff (sat per kWh / 1000), the time
of day, and the mean field: the share of members buying, the community's demand and supply per
member, the guidance price and the last clearing price (both as a share of the way from the
export to the import price)."""


def clear(
    bid_limit: np.ndarray,
    bid_quantity: np.ndarray,
    ask_limit: np.ndarray,
    ask_quantity: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Clear one slot: per bid and per ask, the quantity traded and its value (quantity x
    price / 1000, prices per 1,000 units). Bids in descending limit, asks in ascending, matched
    unit by unit while the bid covers the ask, each unit at the midpoint of the two limits."""
    bids = np.argsort(-bid_limit, kind="stable")
    asks = np.argsort(ask_limit, kind="stable")
    b_cum = np.cumsum(bid_quantity[bids])
    a_cum = np.cumsum(ask_quantity[asks])
    bought = np.zeros(bid_limit.shape)
    sold = np.zeros(ask_limit.shape)
    paid = np.zeros(bid_limit.shape)
    earned = np.zeros(ask_limit.shape)
    if b_cum.size == 0 or a_cum.size == 0:
        return bought, paid, sold, earned
    top = min(b_cum[-1], a_cum[-1])
    edges = np.unique(np.concatenate([[0.0], b_cum[b_cum < top], a_cum[a_cum < top], [top]]))
    lo, hi = edges[:-1], edges[1:]
    width = hi - lo
    i = np.searchsorted(b_cum, lo, side="right")  # the bid that holds (lo, hi]
    j = np.searchsorted(a_cum, lo, side="right")
    bid_price, ask_price = bid_limit[bids][i], ask_limit[asks][j]
    crossing = bid_price >= ask_price  # a prefix: bids fall and asks rise along the volume
    width, i, j = width[crossing], i[crossing], j[crossing]
    value = width * (bid_price[crossing] + ask_price[crossing]) / 2 / 1000
    np.add.at(bought, bids[i], width)
    np.add.at(paid, bids[i], value)
    np.add.at(sold, asks[j], width)
    np.add.at(earned, asks[j], value)
    return bought, paid, sold, earned


class MarketCore:
    """The vectorised market of one scenario day (see the module docstring)."""

    def __init__(self, community: EnergyCommunity, mode: Mode = "selfish") -> None:
        self.community = community
        self.positions = dispatch(community, mode).net_wh.astype(np.float64)
        self.import_price = community.import_price.astype(np.float64)
        self.export_price = community.export_price.astype(np.float64)
        self.slots = self.positions.shape[1]
        self.members = self.positions.shape[0]
        self.per_day = community.scenario.slots_per_day
        self.codes = np.asarray(community.type_code)
        self.slot = 0
        self.service = MeanFieldService()
        self.last_price = 0.5
        self.last_obs = np.zeros((self.members, len(OBSERVATION)), np.float32)
        """The observations handed out last (the slot's report is sent to the service once)."""

    def reset(self) -> np.ndarray:
        """Back to the first slot; the observations."""
        self.slot = 0
        self.service = MeanFieldService()
        self.last_price = 0.5
        return self.observe()

    def observe(self) -> np.ndarray:
        """Members x len(OBSERVATION), float32, for the current slot."""
        t = min(self.slot, self.slots - 1)
        net = self.positions[:, t]
        imp, exp = self.import_price[t], self.export_price[t]
        reservation = np.where(net > 0, imp, exp).astype(np.int64)
        report = PopulationReport.of(
            t, list(self.community.type_names), self.codes, net.astype(np.int64), reservation
        )
        self.service.handle(report)
        snapshot = self.service.snapshot()
        board = snapshot.board
        guidance = next(iter(snapshot.guidance.values())).price if snapshot.guidance else None
        span = max(imp - exp, 1.0)
        angle = 2 * np.pi * (t % self.per_day) / self.per_day
        n = self.members
        common = np.array(
            [
                imp / 1e6,
                exp / 1e6,
                np.sin(angle),
                np.cos(angle),
                float((net > 0).mean()),
                (board.demand if board else 0) / 1000 / n,
                (board.supply if board else 0) / 1000 / n,
                0.5 if guidance is None else (guidance - exp) / span,
                self.last_price,
            ],
            np.float32,
        )
        out = np.empty((n, len(OBSERVATION)), np.float32)
        out[:, 0] = net / 1000
        out[:, 1:] = common
        self.last_obs = out
        return out

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """Clear the slot with ``actions`` (members x 2 in [0, 1]); the next observations, the
        rewards (sat saved against the grid alone) and whether the day is over."""
        if self.slot >= self.slots:
            raise RuntimeError("the day is over: reset")
        a = np.clip(np.asarray(actions, np.float64), 0.0, 1.0)
        t = self.slot
        net = self.positions[:, t]
        imp, exp = self.import_price[t], self.export_price[t]
        limit = exp + a[:, 0] * (imp - exp)
        offered = np.floor(a[:, 1] * np.abs(net))
        buyers, sellers = np.flatnonzero(net > 0), np.flatnonzero(net < 0)
        bought, paid, sold, earned = clear(
            limit[buyers], offered[buyers], limit[sellers], offered[sellers]
        )
        cost = np.where(net > 0, net * imp, net * exp) / 1000  # the grid alone
        grid_only = cost.copy()
        left_b = net[buyers] - bought
        cost[buyers] = paid + left_b * imp / 1000
        left_s = net[sellers] + sold
        cost[sellers] = -earned + left_s * exp / 1000
        volume = bought.sum()
        if volume > 0:
            self.last_price = float((paid.sum() / volume * 1000 - exp) / max(imp - exp, 1.0))
        self.slot += 1
        done = self.slot >= self.slots
        return self.observe(), ((grid_only - cost) / 1000).astype(np.float32), done


def train_days(
    train_day: Callable[[MarketCore], float],
    scenario: Scenario,
    days: int,
    *,
    first_seed: int = 1000,
    on_day: Callable[[int, float], None] | None = None,
) -> None:
    """Run ``train_day`` on ``days`` fresh realisations of ``scenario`` (seeds ``first_seed``
    onwards: the same kind of community, other weather and behaviour each day)."""
    for k in range(days):
        reward = train_day(MarketCore(scenario.realise(np.random.default_rng(first_seed + k))))
        if on_day is not None:
            on_day(k, reward)


class MarketEnv(ParallelEnv[str, np.ndarray, np.ndarray]):  # type: ignore[misc]
    """PettingZoo ParallelEnv over :class:`MarketCore`: agents ``member_<i>``."""

    metadata = {"name": "negotiator_market_v0", "render_modes": []}  # noqa: RUF012

    def __init__(self, community: EnergyCommunity, mode: Mode = "selfish") -> None:
        self.core = MarketCore(community, mode)
        self.possible_agents = [f"member_{i}" for i in range(self.core.members)]
        self.agents: list[str] = []
        self._index = {name: i for i, name in enumerate(self.possible_agents)}
        # one space object per agent name, the same one every time (as PettingZoo asks)
        self._observation = gymnasium.spaces.Box(-np.inf, np.inf, (len(OBSERVATION),), np.float32)
        self._action = gymnasium.spaces.Box(0.0, 1.0, (2,), np.float32)

    def observation_space(self, agent: str) -> gymnasium.spaces.Box:
        return self._observation

    def action_space(self, agent: str) -> gymnasium.spaces.Box:
        return self._action

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        self.agents = list(self.possible_agents)
        obs = self.core.reset()
        return {a: obs[i] for i, a in enumerate(self.agents)}, {a: {} for a in self.agents}

    def step(
        self, actions: dict[str, np.ndarray]
    ) -> tuple[
        dict[str, np.ndarray],
        dict[str, float],
        dict[str, bool],
        dict[str, bool],
        dict[str, dict[str, Any]],
    ]:
        matrix = np.zeros((self.core.members, 2), np.float32)
        for name, action in actions.items():
            matrix[self._index[name]] = action
        obs, rewards, done = self.core.step(matrix)
        live = self.agents
        out: tuple[
            dict[str, np.ndarray],
            dict[str, float],
            dict[str, bool],
            dict[str, bool],
            dict[str, dict[str, Any]],
        ] = (
            {a: obs[self._index[a]] for a in live},
            {a: float(rewards[self._index[a]]) for a in live},
            {a: done for a in live},
            {a: False for a in live},
            {a: {} for a in live},
        )
        if done:
            self.agents = []
        return out

    def state(self) -> np.ndarray:
        """The global state for centralised critics: every member's observation, flattened."""
        return self.core.last_obs.ravel()
