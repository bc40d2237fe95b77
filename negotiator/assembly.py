"""Parts of a simulated run that come from the other packages: the settlement rail and the
Byzantine members (a composition root, with simulation and domain_run)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agents import Trader
from agents.adversaries import adversary
from negotiator.runtime_types import RuntimeConfig
from negotiator.settlement import Rail
from payments import Chain, InProcessRail, LightningNetwork, SimulatedLightning, community_graph
from payments.cln import ClnNode, ClnRail

if TYPE_CHECKING:
    from negotiator.simulation import SimulationConfig


def byzantine(
    config: SimulationConfig, agents: int, rng: np.random.Generator
) -> dict[int, type[Trader]]:
    """Which members are Byzantine, and with what behaviour (``config.byzantine``)."""
    if config.byzantine is None:
        return {}
    count = round(config.byzantine_share * agents)
    chosen = sorted(int(i) for i in rng.choice(agents, size=count, replace=False))
    return {i: adversary(config.byzantine, k) for k, i in enumerate(chosen)}


MEANFIELD = "meanfield"
"""Bus address of the mean-field service."""


class RunSettings(BaseModel):
    """How any run trades and settles, whatever its domain (the energy community's
    :class:`SimulationConfig` and a domain's :class:`negotiator.domain_run.DomainConfig` add
    what they simulate)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(0, ge=0, description="seed of every random choice in the run")
    max_rounds: int = Field(10, ge=1, description="offers per negotiation, at most")
    max_partners: int = Field(12, ge=1, description="sellers each buyer negotiates with per slot")
    ledger: str | None = Field(None, description="SQLite ledger path; a temp file when None")
    rail: Literal["lightning", "inprocess", "cln"] = Field(
        "lightning",
        description="simulated Lightning network, plain in-process balances, or real Core"
        " Lightning nodes",
    )
    cln_nodes: dict[str, str] = Field(
        default_factory=dict,
        description="Core Lightning nodes for --rail cln: name -> JSON-RPC socket path",
    )
    settlement: Literal["per_trade", "netted"] = Field(
        "per_trade",
        description="cln: one payment per agreement, or one per node pair per netting window",
    )
    hubs: int = Field(4, ge=1, description="Lightning service providers the agents are spread over")
    placement: Literal["node", "hub"] = Field(
        "node",
        description="node: every agent runs a node with a channel to its hub;"
        " hub: agents are internal accounts on their hub's node",
    )
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    def model_post_init(self, context: Any) -> None:
        """cln needs its nodes."""
        if self.rail == "cln" and not self.cln_nodes:
            raise ValueError("--rail cln needs nodes: --cln NAME=SOCKET (repeat) or --cln-dir")


def rail(config: RunSettings, funding: dict[int, int], inbound: dict[int, int]) -> Rail:
    """The settlement rail: a simulated Lightning community on hubs (default), real Core
    Lightning nodes with the agents spread over them, or plain balances."""
    if config.rail == "inprocess":
        return InProcessRail(funding, seed=config.seed)
    if config.rail == "cln":
        nodes = [ClnNode(name, path) for name, path in sorted(config.cln_nodes.items())]
        node_of = {agent: agent % len(nodes) for agent in funding}  # many agents per node
        return ClnRail(nodes, node_of, accounts=funding, mode=config.settlement, seed=config.seed)
    graph, placement = community_graph(
        funding,
        inbound=inbound,
        hubs=config.hubs,
        own_nodes=config.placement == "node",
        seed=config.seed,
    )
    chain = Chain()
    hubs = set(placement.hubs)
    for node in range(len(graph.nodes)):  # on-chain savings for splices and fallback payments
        chain.fund(node, 1_000_000_000 if node in hubs else 100_000_000)
    network = LightningNetwork(graph, chain)
    accounts = funding if config.placement == "hub" else None
    return SimulatedLightning(network, placement, accounts=accounts, seed=config.seed)


def members(agents: int, shard: tuple[int, int] | None) -> range:
    """The members of ``shard`` (i, n): the i-th of n contiguous blocks of addresses, its
    neighbourhood (every member when None)."""
    if shard is None:
        return range(agents)
    i, n = shard
    if not 0 <= i < n or n > agents:
        raise ValueError(f"shard {i}/{n} does not exist for {agents} members")
    return range(i * agents // n, (i + 1) * agents // n)


def row(values: np.ndarray) -> Callable[[int], int]:
    row: list[int] = values.tolist()
    return row.__getitem__
