"""The market as a training environment: vectorised, behind PettingZoo's ParallelEnv.

One episode is one realised day of an energy scenario; one step is one trading slot. The members'
positions come from the same device models and dispatch as the live runtime
(:func:`market.dispatch.dispatch`, the mean-field planner's by default, as in a live run), the
population statistics and the guidance price from the same mean-field service
(:class:`market.MeanFieldService`), told what the live runtime tells it and read when the live
runtime reads it: each slot the positions offered, with their limits as reservations, then the
slot's trades; a member observes (:mod:`agents.observe`) the snapshot taken after the previous
slot's positions, as a live trader sees its view when a slot opens.

Each slot every member sends an action in [0, 1]^2: where its limit price sits between the
slot's export and import prices (a buyer's most, a seller's least), and the share of its position
it offers (both read through :func:`agents.observe.decode`, whose ends are exact). The slot clears
under the protocol's rules, vectorised: price priority on both sides (ties in the order of the
members) as the live matcher admits, every admitted bid at least every admitted ask, each matched
unit at the price where the two traders' concession curves meet (:func:`meeting_price`), from
aspirations anchored on the guidance as live traders open, to their limits; quantities within
positions, and whatever is not traded settled with the grid at the tariff at gate closure. A member's reward
is what the slot saved it against the grid alone, in sat.

:class:`MarketCore` works on arrays (members x features), for training loops that want speed;
:class:`MarketEnv` wraps it with PettingZoo's per-agent dictionaries, for any RL library.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import gymnasium
import numpy as np
from pettingzoo import ParallelEnv

from agents.observe import OBSERVATION, anchors, decode, features
from agents.trader import GUIDANCE_MARGIN
from market import MeanFieldService, dispatch
from market.dispatch import Mode
from market.scenario import EnergyCommunity, Scenario
from negotiator.messages import PopulationReport, TradeReport


def clear(
    bid_limit: np.ndarray,
    bid_quantity: np.ndarray,
    ask_limit: np.ndarray,
    ask_quantity: np.ndarray,
    bid_aspiration: np.ndarray | None = None,
    ask_aspiration: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Clear one slot: per bid and per ask, the quantity traded and its value (quantity x
    price / 1000, prices per 1,000 units). Bids in descending limit, asks in ascending, matched
    unit by unit while the bid covers the ask. Each unit goes at the price where the two
    traders' concession curves meet (:func:`meeting_price`) when their aspirations are given,
    else at the midpoint of the two limits."""
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
    if bid_aspiration is None or ask_aspiration is None:
        price = (bid_price[crossing] + ask_price[crossing]) / 2
    else:
        price = meeting_price(
            bid_aspiration[bids][i],
            bid_limit[bids][i],
            ask_aspiration[asks][j],
            ask_limit[asks][j],
        )
    value = width * price / 1000
    np.add.at(bought, bids[i], width)
    np.add.at(paid, bids[i], value)
    np.add.at(sold, asks[j], width)
    np.add.at(earned, asks[j], value)
    return bought, paid, sold, earned


def meeting_price(
    bid_aspiration: np.ndarray,
    bid_limit: np.ndarray,
    ask_aspiration: np.ndarray,
    ask_limit: np.ndarray,
) -> np.ndarray:
    """Where a buyer and a seller conceding along the same curve alpha(t) meet: the buyer
    offers a_b + alpha (l_b - a_b), the seller a_s - alpha (a_s - l_s); they meet at
    alpha* = (a_s - a_b) / ((l_b - a_b) + (a_s - l_s)), whatever the curve (Boulware or
    Conceder alike), so the price depends only on the aspirations and the limits. Aspirations
    that already cross meet at their midpoint."""
    gap = ask_aspiration - bid_aspiration
    room = (bid_limit - bid_aspiration) + (ask_aspiration - ask_limit)
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = np.clip(np.where(room > 0, gap / room, 1.0), 0.0, 1.0)
    out: np.ndarray = np.where(
        gap <= 0,
        (bid_aspiration + ask_aspiration) / 2,
        bid_aspiration + alpha * (bid_limit - bid_aspiration),
    )
    return out


class MarketCore:
    """The vectorised market of one scenario day (see the module docstring)."""

    def __init__(self, community: EnergyCommunity, mode: Mode = "meanfield") -> None:
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
        self._view: object = None
        self.last_obs = np.zeros((self.members, len(OBSERVATION)), np.float32)
        """The observations handed out last."""

    def reset(self) -> np.ndarray:
        """Back to the first slot; the observations."""
        self.slot = 0
        self.service = MeanFieldService()
        self._view = None
        return self.observe()

    def observe(self) -> np.ndarray:
        """Members x len(OBSERVATION), float32, for the current slot: the mean field as the
        service stood after the previous slot (the live runtime's view when a slot opens)."""
        t = min(self.slot, self.slots - 1)
        self.last_obs = features(
            self._view,
            self.community.type_names,
            self.codes,
            self.positions[:, t],
            self.import_price[t],
            self.export_price[t],
            t,
            self.per_day,
        )
        return self.last_obs

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """Clear the slot with ``actions`` (members x 2 in [0, 1]); the next observations, the
        rewards (sat saved against the grid alone) and whether the day is over."""
        if self.slot >= self.slots:
            raise RuntimeError("the day is over: reset")
        a = decode(actions)
        t = self.slot
        net = self.positions[:, t]
        imp, exp = self.import_price[t], self.export_price[t]
        limit = exp + a[:, 0] * (imp - exp)
        offered = np.floor(a[:, 1] * np.abs(net))
        buyers, sellers = np.flatnonzero(net > 0), np.flatnonzero(net < 0)
        anchor = anchors(self._view, self.community.type_names, self.codes)
        # as a live trader opens: from the guidance pushed a little in its own favour (else the
        # other side's outside option), never past its own limit
        margin = GUIDANCE_MARGIN
        bid_open = np.clip(np.where(np.isnan(anchor), exp, anchor * (1 - margin)), exp, limit)
        ask_open = np.clip(np.where(np.isnan(anchor), imp, anchor * (1 + margin)), limit, imp)
        bought, paid, sold, earned = clear(
            limit[buyers],
            offered[buyers],
            limit[sellers],
            offered[sellers],
            bid_open[buyers],
            ask_open[sellers],
        )
        cost = np.where(net > 0, net * imp, net * exp) / 1000  # the grid alone
        grid_only = cost.copy()
        left_b = net[buyers] - bought
        cost[buyers] = paid + left_b * imp / 1000
        left_s = net[sellers] + sold
        cost[sellers] = -earned + left_s * exp / 1000
        self._report(t, net, limit, offered, paid.sum(), bought.sum())
        self.slot += 1
        done = self.slot >= self.slots
        return self.observe(), ((grid_only - cost) / 1000).astype(np.float32), done

    def _report(
        self,
        t: int,
        net: np.ndarray,
        limit: np.ndarray,
        offered: np.ndarray,
        paid: float,
        volume: float,
    ) -> None:
        """Tell the service what the live runtime would: the positions offered (with their
        limits as reservations), whose snapshot is the next slot's view, then the trades."""
        on = offered > 0
        self.service.handle(
            PopulationReport.of(
                t,
                list(self.community.type_names),
                self.codes[on],
                (np.sign(net[on]) * offered[on]).astype(np.int64),
                np.rint(limit[on]).astype(np.int64),
            )
        )
        self._view = self.service.snapshot()
        if volume > 0:
            vwap = round(paid / volume * 1000)
            self.service.handle(TradeReport(t, [vwap], [round(volume)]))


class Market(Protocol):
    """What a learner trains on: :class:`MarketCore`, or a :class:`Deviation` of it."""

    @property
    def members(self) -> int: ...

    @property
    def service(self) -> MeanFieldService: ...

    def reset(self) -> np.ndarray: ...

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]: ...


class Deviation:
    """The market as a group of members sees it while everyone else follows ``policy``: for
    training and scoring a best response to a population (its exploitability)."""

    def __init__(
        self,
        core: MarketCore,
        policy: Callable[[np.ndarray], np.ndarray],
        group: np.ndarray,
    ) -> None:
        self.core, self.policy = core, policy
        self.group = np.asarray(group, bool)
        if self.group.shape != (core.members,) or not self.group.any():
            raise ValueError("the group is a non-empty mask over the members")
        self.members = int(self.group.sum())
        self._obs = core.last_obs

    @property
    def service(self) -> MeanFieldService:
        return self.core.service

    def reset(self) -> np.ndarray:
        self._obs = self.core.reset()
        mine: np.ndarray = self._obs[self.group]
        return mine

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        everyone = np.array(self.policy(self._obs), np.float64)
        everyone[self.group] = actions
        self._obs, rewards, done = self.core.step(everyone)
        return self._obs[self.group], rewards[self.group], done


def truthful(obs: np.ndarray) -> np.ndarray:
    """The classic traders' actions: the limit at one's own reservation (a buyer the import
    price, a seller the export price), everything offered, as a Boulware trader reports them in
    the live runtime."""
    buyer = obs[:, 0] > 0
    return np.stack([buyer.astype(np.float64), np.ones(len(obs))], axis=1)


def learners(members: int, share: float, seed: int) -> np.ndarray:
    """Which members of a day's market learn (the others are classic traders): a random
    ``share`` of them, drawn from the day's seed."""
    if not 0 < share <= 1:
        raise ValueError("the learners' share is in (0, 1]")
    mask = np.zeros(members, bool)
    count = max(1, round(share * members))
    mask[np.random.default_rng([seed, 1]).permutation(members)[:count]] = True
    return mask


def learning_market(core: MarketCore, share: float, seed: int) -> Market:
    """The day's market as the learners see it: all of it, or their share among classic
    (:func:`truthful`) traders."""
    return core if share >= 1 else Deviation(core, truthful, learners(core.members, share, seed))


def train_days(
    train_day: Callable[[Market], float],
    scenario: Scenario,
    days: int,
    *,
    first_seed: int = 1000,
    on_day: Callable[[int, float], None] | None = None,
    share: float = 1.0,
) -> None:
    """Run ``train_day`` on ``days`` fresh realisations of ``scenario`` (seeds ``first_seed``
    onwards: the same kind of community, other weather and behaviour each day), a ``share`` of
    the members learning among classic traders."""
    for k in range(days):
        seed = first_seed + k
        core = MarketCore(scenario.realise(np.random.default_rng(seed)))
        reward = train_day(learning_market(core, share, seed))
        if on_day is not None:
            on_day(k, reward)


def classic_days(scenario: Scenario, seeds: list[int]) -> np.ndarray:
    """Every member's observations over days of classic trading (everyone :func:`truthful`):
    what a warm start imitates."""
    rows = []
    for seed in seeds:
        core = MarketCore(scenario.realise(np.random.default_rng(seed)))
        obs, done = core.reset(), False
        while not done:
            rows.append(obs)
            obs, _, done = core.step(truthful(obs))
    return np.concatenate(rows)


def evaluate(
    policy: Callable[[np.ndarray], np.ndarray],
    scenario: Scenario,
    seeds: list[int],
    share: float = 1.0,
) -> tuple[float, float]:
    """Mean and standard deviation over held-out days of the mean reward per member per day of
    the members following ``policy`` (a ``share`` of them, the others classic traders)."""
    scores = []
    for seed in seeds:
        core = MarketCore(scenario.realise(np.random.default_rng(seed)))
        day = learning_market(core, share, seed)
        obs, total, done = day.reset(), 0.0, False
        while not done:
            obs, reward, done = day.step(policy(obs))
            total += float(reward.mean())
        scores.append(total)
    return float(np.mean(scores)), float(np.std(scores)) if len(scores) > 1 else math.nan


class MarketEnv(ParallelEnv[str, np.ndarray, np.ndarray]):  # type: ignore[misc]
    """PettingZoo ParallelEnv over :class:`MarketCore`: agents ``member_<i>``."""

    metadata = {"name": "negotiator_market_v0", "render_modes": []}  # noqa: RUF012

    def __init__(self, community: EnergyCommunity, mode: Mode = "meanfield") -> None:
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
