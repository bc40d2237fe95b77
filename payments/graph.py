"""The channel graph: nodes with secp256k1 keys, channels with two balances, and their builders.

Layout, for the payment hot path: channels are numbered ``c``; each has two directed edges
``e = 2c`` (from its first node to its second) and ``e = 2c + 1`` (back). Per-edge lists hold what
belongs to one direction (the sender side's balance, and the fee policy and CLTV delta the
sending node charges for forwarding over it); per-channel lists hold capacity, reserve, the
amount locked in HTLCs in flight, and the commitment number. ``e ^ 1`` is the reverse edge and
``e >> 1`` its channel. Amounts are integer millisatoshi.

Builders: :func:`community_graph` (agents on a few hub nodes, like customers of Lightning service
providers), :func:`scale_free_graph` (Barabasi-Albert preferential attachment, the shape of the
public Lightning graph) and :func:`from_cln` (Core Lightning's ``listchannels`` /
``listpeerchannels`` JSON).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np
from coincurve import PrivateKey


@dataclass(slots=True)
class Node:
    """A Lightning node: its index in the graph, its alias, and (for nodes we run) its key."""

    index: int
    alias: str
    secret: bytes | None = None
    """32-byte secp256k1 secret; None for nodes only known from gossip."""
    known_id: str | None = None
    _key: PrivateKey | None = field(default=None, repr=False)
    _id: str | None = field(default=None, repr=False)

    @property
    def key(self) -> PrivateKey:
        """The node's private key (derived on first use: 10k keys cost ~0.3 s up front)."""
        if self._key is None:
            if self.secret is None:
                raise ValueError(f"node {self.alias} is not ours: it has no key")
            self._key = PrivateKey(self.secret)
        return self._key

    @property
    def node_id(self) -> str:
        """Compressed public key, hex (what Core Lightning calls the node id)."""
        if self._id is None:
            self._id = self.known_id or self.key.public_key.format(compressed=True).hex()
        return self._id

    def __getstate__(self) -> tuple[object, ...]:
        """Pickled without the derived key (a C object holding a lock): it is derived again."""
        return (self.index, self.alias, self.secret, self.known_id, None, self._id)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        for name, value in zip(
            ("index", "alias", "secret", "known_id", "_key", "_id"), state, strict=True
        ):
            object.__setattr__(self, name, value)


@dataclass(frozen=True, slots=True)
class Policy:
    """What a node charges to forward over one of its channels, and how fast it is."""

    base_fee_msat: int = 1
    fee_ppm: int = 10
    cltv_delta: int = 6
    latency_ms: float = 20.0

    def __post_init__(self) -> None:
        if self.base_fee_msat < 0 or self.fee_ppm < 0 or self.cltv_delta < 0:
            raise ValueError("fees and CLTV delta cannot be negative")
        if self.latency_ms < 0:
            raise ValueError("latency cannot be negative")


DEFAULT_POLICY = Policy()
"""Core Lightning's defaults (base 1 msat, 10 ppm, as in the recorded regtest network)."""


class ChannelGraph:
    """Nodes and channels, with every balance in flat lists (see the module docstring)."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.adjacency: list[list[int]] = []
        """Per node, its outgoing edges."""
        self.by_id: dict[str, int] = {}
        # per channel
        self.ends: list[tuple[int, int]] = []
        self.capacity: list[int] = []
        self.reserve: list[int] = []
        self.locked: list[int] = []
        self.commitment: list[int] = []
        self.open: list[bool] = []
        self.scid: list[str] = []
        # per directed edge
        self.source: list[int] = []
        self.target: list[int] = []
        self.balance: list[int] = []
        self.peak: list[int] = []
        """Highest balance this side ever held: what a cheater would broadcast."""
        self.base_fee: list[int] = []
        self.fee_ppm: list[int] = []
        self.cltv: list[int] = []
        self.latency_ms: list[float] = []
        self.forwarded: list[int] = []
        """msat that left over this edge in fulfilled HTLCs."""
        self.enabled: list[bool] = []
        """Whether the sending node forwards over this edge (gossip can disable a direction)."""
        self.version = 0
        """Bumped whenever something a route depends on changes (channels, capacity, fees)."""

    # -- building ---------------------------------------------------------------------------

    def add_node(
        self, alias: str, *, secret: bytes | None = None, node_id: str | None = None
    ) -> int:
        """Add a node; returns its index."""
        index = len(self.nodes)
        node = Node(index, alias, secret, node_id)
        self.nodes.append(node)
        self.adjacency.append([])
        if node_id is not None:
            self.by_id[node_id] = index
        return index

    def open_channel(
        self,
        a: int,
        b: int,
        balance_a: int,
        balance_b: int = 0,
        *,
        policy_a: Policy = DEFAULT_POLICY,
        policy_b: Policy = DEFAULT_POLICY,
        reserve_ppm: int = 10_000,
        scid: str | None = None,
    ) -> int:
        """Open a channel funded with ``balance_a`` on a's side and ``balance_b`` on b's.

        The reserve is ``reserve_ppm`` of the capacity on each side (1%, as Core Lightning sets
        it); a side can only spend what it holds above it.
        """
        if a == b:
            raise ValueError("a channel joins two different nodes")
        if not (0 <= a < len(self.nodes) and 0 <= b < len(self.nodes)):
            raise ValueError("unknown node")
        if balance_a < 0 or balance_b < 0 or balance_a + balance_b <= 0:
            raise ValueError("a channel needs a positive capacity and no negative balance")
        c = len(self.ends)
        capacity = balance_a + balance_b
        self.ends.append((a, b))
        self.capacity.append(capacity)
        self.reserve.append(capacity * reserve_ppm // 1_000_000)
        self.locked.append(0)
        self.commitment.append(0)
        self.open.append(True)
        self.scid.append(scid or f"1x{c}x0")
        for src, dst, bal, pol in ((a, b, balance_a, policy_a), (b, a, balance_b, policy_b)):
            e = len(self.source)
            self.source.append(src)
            self.target.append(dst)
            self.balance.append(bal)
            self.peak.append(bal)
            self.base_fee.append(pol.base_fee_msat)
            self.fee_ppm.append(pol.fee_ppm)
            self.cltv.append(pol.cltv_delta)
            self.latency_ms.append(pol.latency_ms)
            self.forwarded.append(0)
            self.enabled.append(True)
            self.adjacency[src].append(e)
        self.version += 1
        return c

    # -- reading ----------------------------------------------------------------------------

    @property
    def channel_count(self) -> int:
        """Channels ever opened (closed ones keep their number)."""
        return len(self.ends)

    def spendable(self, e: int) -> int:
        """What the sender side of edge ``e`` can still send (balance above its reserve)."""
        return max(0, self.balance[e] - self.reserve[e >> 1])

    def channel_msat(self) -> int:
        """All money inside open channels: both balances plus HTLCs in flight."""
        total = 0
        for c in range(len(self.ends)):
            if self.open[c]:
                total += self.balance[2 * c] + self.balance[2 * c + 1] + self.locked[c]
        return total

    def outbound(self, node: int) -> int:
        """What ``node`` can send over all its open channels."""
        return sum(self.spendable(e) for e in self.adjacency[node] if self.open[e >> 1])

    def inbound(self, node: int) -> int:
        """What ``node`` can receive over all its open channels."""
        return sum(self.spendable(e ^ 1) for e in self.adjacency[node] if self.open[e >> 1])

    def channels_of(self, node: int) -> list[int]:
        """Open channels of ``node``."""
        return [e >> 1 for e in self.adjacency[node] if self.open[e >> 1]]

    def utilization(self) -> dict[str, float]:
        """How the liquidity sits: imbalance, depletion, turnover, HTLC locks (open channels)."""
        channels = [c for c in range(len(self.ends)) if self.open[c]]
        if not channels:
            return {"imbalance": 0.0, "depleted_share": 0.0, "turnover": 0.0, "locked_share": 0.0}
        imbalance = depleted = 0.0
        capacity = forwarded = locked = 0
        for c in channels:
            cap = self.capacity[c]
            a, b = self.balance[2 * c], self.balance[2 * c + 1]
            imbalance += abs(a - b) / cap
            depleted += min(a, b) < cap // 10
            capacity += cap
            forwarded += self.forwarded[2 * c] + self.forwarded[2 * c + 1]
            locked += self.locked[c]
        n = len(channels)
        return {
            "imbalance": round(imbalance / n, 4),
            "depleted_share": round(depleted / n, 4),
            "turnover": round(forwarded / capacity, 6),
            "locked_share": round(locked / capacity, 6),
        }


def node_secret(seed: int, name: str) -> bytes:
    """A deterministic 32-byte node secret (same seed, same node ids, same invoices)."""
    return hashlib.sha256(f"negotiator-node/{seed}/{name}".encode()).digest()


@dataclass(frozen=True, slots=True)
class Placement:
    """Where agents live: agent address -> node index; agents sharing a node have accounts there."""

    node_of: Mapping[int, int]
    hubs: Sequence[int]


def community_graph(
    funding: Mapping[int, int],
    *,
    inbound: Mapping[int, int] | None = None,
    hubs: int = 4,
    own_nodes: bool = True,
    hub_channel_msat: int | None = None,
    seed: int = 0,
    rng: np.random.Generator | None = None,
) -> tuple[ChannelGraph, Placement]:
    """An energy community on ``hubs`` Lightning service providers.

    ``funding``: msat each agent brings. With ``own_nodes`` every agent runs a node with one
    channel to its hub, funded with its money on its side and ``inbound[agent]`` (default: as
    much again) on the hub's side: the provider sells inbound liquidity so sellers can be paid;
    otherwise
    agents are internal accounts on their hub's node (the hub's channels carry their money).
    Hubs are joined in a full mesh of channels of ``hub_channel_msat`` (default: a quarter of
    all funding, split evenly), with latencies drawn per channel.
    """
    if hubs < 1:
        raise ValueError("hubs must be at least 1")
    if not funding:
        raise ValueError("a community needs agents")
    rng = rng or np.random.default_rng(seed)
    graph = ChannelGraph()
    hub_nodes = [
        graph.add_node(f"hub-{h}", secret=node_secret(seed, f"hub-{h}")) for h in range(hubs)
    ]
    total = sum(funding.values())
    mesh = hub_channel_msat or max(total // 4 // max(hubs - 1, 1), 10_000_000)
    for i, a in enumerate(hub_nodes):
        for b in hub_nodes[i + 1 :]:
            latency = float(rng.uniform(10.0, 40.0))
            policy = Policy(latency_ms=latency)
            graph.open_channel(a, b, mesh, mesh, policy_a=policy, policy_b=policy)
    node_of: dict[int, int] = {}
    for k, (agent, money) in enumerate(sorted(funding.items())):
        hub = hub_nodes[k % hubs]
        if not own_nodes:
            node_of[agent] = hub
            continue
        node = graph.add_node(f"agent-{agent}", secret=node_secret(seed, f"agent-{agent}"))
        hub_side = max(int((inbound or funding).get(agent, money)), 1_000_000)
        latency = float(rng.uniform(5.0, 15.0))
        graph.open_channel(
            node,
            hub,
            max(money, 1),
            hub_side,
            policy_a=Policy(base_fee_msat=0, fee_ppm=0, latency_ms=latency),
            policy_b=Policy(latency_ms=latency),
        )
        node_of[agent] = node
    return graph, Placement(node_of, hub_nodes)


def scale_free_graph(
    nodes: int,
    *,
    attach: int = 2,
    capacity_msat: tuple[int, int] = (1_000_000_000, 10_000_000_000),
    seed: int = 0,
) -> ChannelGraph:
    """Barabasi-Albert graph (networkx) with log-uniform capacities split at a random point.

    Fees and latencies vary per direction (base 0-1000 msat, 1-1000 ppm, 5-100 ms), as on the
    public network.
    """
    if nodes < attach + 1:
        raise ValueError("need more nodes than attachments per node")
    rng = np.random.default_rng(seed)
    shape = nx.barabasi_albert_graph(nodes, attach, seed=int(rng.integers(2**31)))
    graph = ChannelGraph()
    for i in range(nodes):
        graph.add_node(f"node-{i}", secret=node_secret(seed, f"node-{i}"))
    lo, hi = np.log(capacity_msat[0]), np.log(capacity_msat[1])
    for a, b in sorted(shape.edges()):
        capacity = int(np.exp(rng.uniform(lo, hi)))
        split = int(capacity * rng.uniform(0.2, 0.8))
        policies = [
            Policy(
                base_fee_msat=int(rng.integers(0, 1001)),
                fee_ppm=int(rng.integers(1, 1001)),
                cltv_delta=int(rng.choice([6, 18, 34, 40, 80])),
                latency_ms=float(rng.uniform(5.0, 100.0)),
            )
            for _ in range(2)
        ]
        graph.open_channel(
            int(a), int(b), split, capacity - split, policy_a=policies[0], policy_b=policies[1]
        )
    return graph


def from_cln(
    listchannels: Mapping[str, Any],
    listpeerchannels: Mapping[str, Any] | None = None,
    *,
    local_id: str | None = None,
) -> ChannelGraph:
    """A graph from Core Lightning's JSON (``listchannels`` result, as recorded in the transcripts).

    Gossip tells capacities and fee policies, not balances: each channel starts split evenly. With
    the local node's ``listpeerchannels`` (and its id), its own channels take their real balances
    (``to_us_msat``) and short channel ids, and gossip for its channels that are not in that list
    is dropped as stale (after a splice, gossip shows the old and the new id side by side).
    """
    entries = _result(listchannels, "channels")
    graph = ChannelGraph()

    def node(node_id: str) -> int:
        index = graph.by_id.get(node_id)
        if index is None:
            index = graph.add_node(node_id[:12], node_id=node_id)
        return index

    own: dict[str, tuple[str, int, int]] = {}
    if listpeerchannels is not None:
        if local_id is None:
            raise ValueError("listpeerchannels needs the local node's id")
        for ch in _result(listpeerchannels, "channels"):
            scid = ch.get("short_channel_id")
            if scid and ch.get("state") in ("CHANNELD_NORMAL", "CHANNELD_AWAITING_SPLICE"):
                own[scid] = (str(ch["peer_id"]), int(ch["to_us_msat"]), int(ch["total_msat"]))
    halves: dict[str, dict[int, Mapping[str, Any]]] = {}
    for entry in entries:
        halves.setdefault(str(entry["short_channel_id"]), {})[int(entry["direction"])] = entry
    for scid in sorted(halves):
        sides = halves[scid]
        first = sides.get(0) or sides[1]
        a_id, b_id = (
            (first["source"], first["destination"])
            if 0 in sides
            else (first["destination"], first["source"])
        )
        mine = local_id in (a_id, b_id) and listpeerchannels is not None
        if mine and scid not in own:
            continue  # spliced away or closed: stale gossip
        a, b = node(str(a_id)), node(str(b_id))
        capacity = int(first["amount_msat"])
        if mine:
            _peer, to_us, total = own[scid]
            capacity = total
            bal_a = to_us if a_id == local_id else total - to_us
        else:
            bal_a = capacity // 2
        policies = [_policy(sides.get(d)) for d in (0, 1)]
        c = graph.open_channel(
            a, b, bal_a, capacity - bal_a, policy_a=policies[0], policy_b=policies[1], scid=scid
        )
        for d in (0, 1):  # a direction gossip does not announce, or marks inactive, is unusable
            half = sides.get(d)
            graph.enabled[2 * c + d] = half is not None and bool(half.get("active", True))
    return graph


def _policy(entry: Mapping[str, Any] | None) -> Policy:
    if entry is None:
        return DEFAULT_POLICY
    return Policy(
        base_fee_msat=int(entry["base_fee_millisatoshi"]),
        fee_ppm=int(entry["fee_per_millionth"]),
        cltv_delta=int(entry["delay"]),
    )


def _result(data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    """The list under ``key``, from a bare result or a whole JSON-RPC response."""
    body = data.get("result", data)
    if not isinstance(body, Mapping) or key not in body:
        raise ValueError(f"expected a Core Lightning result with {key!r}")
    items = body[key]
    if not isinstance(items, list):
        raise ValueError(f"{key!r} is not a list")
    return items
