"""The population: communities and tariffs, matching, and the mean-field service."""

from market.community import Community, CommunitySpec
from market.lq import LQSolution, LQType
from market.matching import board_matcher
from market.meanfield import MeanFieldService, PriceStats, Snapshot, TypeStats
from market.tariff import TimeOfUseTariff

__all__ = [
    "Community",
    "CommunitySpec",
    "LQSolution",
    "LQType",
    "MeanFieldService",
    "PriceStats",
    "Snapshot",
    "TimeOfUseTariff",
    "TypeStats",
    "board_matcher",
]
