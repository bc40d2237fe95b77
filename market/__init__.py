"""The population: communities and tariffs, matching, and the mean-field service."""

from market.community import Community, CommunitySpec
from market.matching import board_matcher
from market.meanfield import MeanFieldService, PriceStats, Snapshot, TypeStats
from market.tariff import TimeOfUseTariff

__all__ = [
    "Community",
    "CommunitySpec",
    "MeanFieldService",
    "PriceStats",
    "Snapshot",
    "TimeOfUseTariff",
    "TypeStats",
    "board_matcher",
]
