"""What a learning trader observes: its own position, the tariff, the time of day, the mean field.

One function builds the observation for the training environment (:mod:`agents.env`, all members
at once) and for a learned trader in the live runtime (:mod:`agents.learned`, one member), from
the same inputs the live runtime hands a trader when a slot opens: the mean-field service's
snapshot as it stood after the previous slot's reports (the runtime's view), the slot's tariff and
the member's net position. A policy trained in the environment therefore sees in the live runtime
exactly the features it was trained on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

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
    "side",
    "imbalance",
)
"""The features, in order: the member's own net position (kWh, + needs), the tariff (sat per kWh
/ 1000), the time of day, and the mean field as the service last reported it: the share of
reporting members buying, their demand and supply per reporting member (kWh), the guidance price
for the member's type and the recent volume-weighted trade price (both as a share of the way
from the export to the import price; 0.5 when there is none); then two of these restated where a
small network finds them at once: the member's side (+1 buying, -1 selling, 0 neither) and the
reported imbalance (supply - demand) / (supply + demand), 0 when nothing was reported."""


def features(
    view: object,
    type_names: Sequence[str],
    codes: np.ndarray,
    net_wh: np.ndarray,
    import_price: float,
    export_price: float,
    slot: int,
    slots_per_day: int,
) -> np.ndarray:
    """Members x len(OBSERVATION), float32: member i has type ``type_names[codes[i]]`` and net
    position ``net_wh[i]``. ``view`` is a :class:`market.Snapshot`, or None before any (read
    by attribute, as traders read the runtime's view)."""
    span = max(import_price - export_price, 1.0)
    angle = 2 * math.pi * (slot % slots_per_day) / slots_per_day
    types = getattr(view, "types", None) or {}
    count = sum(t.count for t in types.values())
    buyers = sum(t.buyers for t in types.values())
    board = getattr(view, "board", None)
    demand, supply = (board.demand, board.supply) if board is not None and count else (0, 0)
    prices = getattr(view, "prices", None)
    last = 0.5 if prices is None else (prices.vwap - export_price) / span
    advice = getattr(view, "guidance", None) or {}
    guidance = np.array(
        [(advice[n].price - export_price) / span if n in advice else 0.5 for n in type_names],
        np.float32,
    )
    out = np.empty((len(net_wh), len(OBSERVATION)), np.float32)
    out[:, 0] = np.asarray(net_wh, np.float64) / 1000
    out[:, 1] = import_price / 1e6
    out[:, 2] = export_price / 1e6
    out[:, 3] = math.sin(angle)
    out[:, 4] = math.cos(angle)
    out[:, 5] = buyers / count if count else 0.0
    out[:, 6] = demand / 1000 / count if count else 0.0
    out[:, 7] = supply / 1000 / count if count else 0.0
    out[:, 8] = guidance[np.asarray(codes, np.intp)] if len(type_names) else 0.5
    out[:, 9] = last
    out[:, 10] = np.sign(out[:, 0])
    out[:, 11] = (supply - demand) / (supply + demand) if supply + demand > 0 else 0.0
    return out


ACTION_MARGIN = 0.05
"""Actions within this of 0 or 1 mean exactly 0 or 1 (:func:`decode`)."""


def decode(actions: np.ndarray) -> np.ndarray:
    """A policy's actions (in [0, 1]) as the market reads them: stretched so that the last
    ``ACTION_MARGIN`` at each end means exactly 0 or 1. A sigmoid never reaches its ends, and
    at the ends sit the classic choices: a limit at one's own reservation (in price priority,
    a buyer 1% below the import price queues behind every buyer at it) and the whole
    position offered."""
    a = np.asarray(actions, np.float64)
    out: np.ndarray = np.clip((a - ACTION_MARGIN) / (1 - 2 * ACTION_MARGIN), 0.0, 1.0)
    return out


def anchors(view: object, type_names: Sequence[str], codes: np.ndarray) -> np.ndarray:
    """Per member, the price a trader anchors its opening offer on (as
    :class:`agents.Trader` does): its type's guidance price, else the recent volume-weighted
    price, else NaN (no anchor: it opens at the other side's outside option)."""
    advice = getattr(view, "guidance", None) or {}
    vwap = getattr(view, "guidance_price", None)
    fallback = np.nan if vwap is None else float(vwap)
    per_type = np.array(
        [float(advice[n].price) if n in advice else fallback for n in type_names] or [np.nan]
    )
    out: np.ndarray = per_type[np.asarray(codes, np.intp)]
    return out
