"""The decision makers: trader roles and negotiation strategies."""

from agents.strategies import STRATEGIES, TimeDependent, boulware, conceder, linear, strategy
from agents.trader import Trader

__all__ = [
    "STRATEGIES",
    "TimeDependent",
    "Trader",
    "boulware",
    "conceder",
    "linear",
    "strategy",
]
