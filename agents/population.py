"""Who trades how: each member's concession strategy and, in learned runs, its pricing rule."""

from __future__ import annotations

import numpy as np

from agents.strategies import STRATEGIES, TimeDependent, boulware, strategy
from agents.trader import Limit

LEARNED = "learned:"
"""The strategy name's prefix for a trained policy: ``learned:POLICY.pt``."""


def policy_path(name: str) -> str | None:
    """The policy file of a ``learned:PATH`` strategy name, else None."""
    return name[len(LEARNED) :] if name.startswith(LEARNED) else None


def member_strategies(
    name: str,
    members: int,
    rng: np.random.Generator,
    *,
    patience: np.ndarray | None = None,
    risk_aversion: np.ndarray | None = None,
) -> list[TimeDependent]:
    """One strategy per member. ``mixed``: with the members' patience and risk aversion (a
    scenario's), patient and risk-tolerant members hold firm (Boulware, beta down to 1/4),
    impatient or risk-averse ones concede early (Conceder, beta up to 4); without them, a named
    strategy drawn at random per member. A learned run's members concede along Boulware (the
    policy sets where they stop); a named strategy is everyone's."""
    if policy_path(name) is not None:
        return [boulware()] * members
    if name != "mixed":
        return [strategy(name)] * members
    if patience is not None and risk_aversion is not None:
        eagerness = 0.5 * (1 - patience) + 0.5 * risk_aversion
        beta = np.exp(np.log(0.25) + np.log(16.0) * eagerness)
        return [TimeDependent(float(b), name="member") for b in beta]
    names = sorted(STRATEGIES)
    return [strategy(names[int(rng.integers(len(names)))]) for _ in range(members)]


def member_policies(
    name: str, members: int, share: float | None, slots_per_day: int, rng: np.random.Generator
) -> list[Limit | None]:
    """A learned run's pricing rule for a random ``share`` of the members (None: the share it
    was trained at; the others trade with truthful limits and their whole position); None for
    everyone in other runs."""
    path = policy_path(name)
    if path is None:
        return [None] * members
    from agents.learned import LearnedPolicy  # torch: loaded only for learned runs

    policy = LearnedPolicy.load(path)
    rule = policy.rule(slots_per_day)
    count = round((policy.share if share is None else share) * members)
    chosen = set(rng.permutation(members)[:count].tolist())
    return [rule if i in chosen else None for i in range(members)]
