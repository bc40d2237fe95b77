"""The population: communities and tariffs, matching, and the mean-field service."""

from market.community import Community, CommunitySpec
from market.devices import BatteryFleet, FlexibleFleet
from market.dispatch import (
    Dispatch,
    demand_shares,
    dispatch,
    efficiency,
    grid_cost,
    jain_index,
    optimum,
)
from market.lq import LQSolution, LQType
from market.matching import board_matcher
from market.meanfield import Board, Guidance, MeanFieldService, PriceStats, Snapshot, TypeStats
from market.optimum import Optimum, solve_optimum
from market.scenario import NAMED, EnergyCommunity, Scenario
from market.tariff import TimeOfUseTariff

__all__ = [
    "NAMED",
    "BatteryFleet",
    "Board",
    "Community",
    "CommunitySpec",
    "Dispatch",
    "EnergyCommunity",
    "FlexibleFleet",
    "Guidance",
    "LQSolution",
    "LQType",
    "MeanFieldService",
    "Optimum",
    "PriceStats",
    "Scenario",
    "Snapshot",
    "TimeOfUseTariff",
    "TypeStats",
    "board_matcher",
    "demand_shares",
    "dispatch",
    "efficiency",
    "grid_cost",
    "jain_index",
    "optimum",
    "solve_optimum",
]
