"""Domain adapters: what the kernel's generic resource means in a market (see
:mod:`negotiator.domain`). ``energy`` is the community of :mod:`market`; ``logistics`` trades
delivery slots between shippers and carriers.

A composition root picks an adapter by name with :func:`adapter`; adding a domain is adding its
module and one line to :data:`ADAPTERS` (the README has a worked example).
"""

from __future__ import annotations

import importlib

from negotiator.domain import Domain

ADAPTERS: dict[str, str] = {
    "energy": "domains.energy:EnergyDomain",
    "logistics": "domains.logistics:LogisticsDomain",
}
"""Domain name -> ``module:class`` of its adapter (imported when picked)."""


def adapter(name: str) -> Domain:
    """The adapter of domain ``name``; a clear error naming the known ones otherwise."""
    if name not in ADAPTERS:
        raise ValueError(f"no domain {name!r}; known domains: {', '.join(sorted(ADAPTERS))}")
    module, cls = ADAPTERS[name].split(":")
    domain: Domain = getattr(importlib.import_module(module), cls)()
    return domain


__all__ = ["ADAPTERS", "adapter"]
