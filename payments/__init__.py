"""Settlement rails: the simulated Lightning network (the default) and a minimal in-process rail."""

from payments.chain import Chain, Watchtower
from payments.graph import (
    ChannelGraph,
    Placement,
    Policy,
    community_graph,
    from_cln,
    scale_free_graph,
)
from payments.inprocess import InProcessRail
from payments.lightning import SimulatedLightning
from payments.network import LightningNetwork
from payments.routing import PathFinder, RoutingParams

__all__ = [
    "Chain",
    "ChannelGraph",
    "InProcessRail",
    "LightningNetwork",
    "PathFinder",
    "Placement",
    "Policy",
    "RoutingParams",
    "SimulatedLightning",
    "Watchtower",
    "community_graph",
    "from_cln",
    "scale_free_graph",
]
