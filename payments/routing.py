"""Route finding: the paper's edge weight, capacity pruning, Yen's k shortest paths, learning.

Edge weight for sending ``amount`` over a directed channel edge e (the paper's heuristic):

    w_e = alpha * fee_e(amount) + beta * (1 - capacity_e / max_capacity) + gamma * latency_e

with fee_e(amount) = base_e + ppm_e * amount / 10^6 in msat and latency in ms, so the weight is in
msat-equivalents. Edges whose channel capacity is below ``theta * amount`` are pruned, as are
closed channels, directions the sender does not forward on, and directions that recently failed
to carry an amount this large (mission control: what a sender learns from a failed HTLC, forgotten
after ``memory_s``).

Speed: a shortest-path tree per (source, amount class) from scipy's Dijkstra (C) is cached until
the graph changes; a payment reads its path off the tree and checks it against what the sender
has learned since. Only when that check fails does it search again (scipy, with exclusions). The
tree is optimal for the top of its amount class (classes are a factor of 8 wide), so under the
ppm term its path can cost a little more than the exact optimum for a smaller amount; every
search after a failure, and every path Yen's algorithm returns, is exact for the amount.
"""

from __future__ import annotations

import heapq
import math
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from payments.graph import ChannelGraph

Path = list[int]
"""A route as the directed edges it takes, first hop first."""


@dataclass(frozen=True, slots=True)
class RoutingParams:
    """Route-finding parameters (defaults documented in the README's payments section)."""

    alpha: float = 1.0
    """Weight of one msat of routing fee."""
    beta: float = 10.0
    """msat-equivalent cost of a channel of tiny capacity relative to the largest one."""
    gamma: float = 0.1
    """msat-equivalent cost of one millisecond of hop latency."""
    theta: float = 1.0
    """Prune channels whose capacity is below theta * amount."""
    k: int = 3
    """Paths Yen's algorithm offers for one part before the part is split."""
    max_parts: int = 16
    """Most parts one multi-part payment may use."""
    min_part_msat: int = 1_000
    """Smallest part a payment is split into."""
    max_attempts: int = 64
    """HTLC attempts per payment before giving up."""
    memory_s: float = 60.0
    """How long a failed edge stays excluded for amounts at least as large."""
    max_fee_ppm: int = 10_000
    """Fee budget: at most 1% of the amount ..."""
    max_fee_base_msat: int = 5_000
    """... plus this much (small payments pay base fees)."""
    max_tree_entries: int = 1 << 25
    """Memory bound of the route cache: trees x nodes (4 bytes each, 128 MiB)."""

    def __post_init__(self) -> None:
        if min(self.alpha, self.beta, self.gamma) < 0 or self.theta < 0:
            raise ValueError("routing weights cannot be negative")
        if self.k < 1 or self.max_parts < 1 or self.max_attempts < 1:
            raise ValueError("k, max_parts and max_attempts must be at least 1")


class PathFinder:
    """Finds routes on one graph, learning from failures."""

    def __init__(
        self,
        graph: ChannelGraph,
        params: RoutingParams | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.graph = graph
        self.params = params or RoutingParams()
        self.clock = clock
        self._version = -1
        self._trees: OrderedDict[tuple[int, int], tuple[int, float, Sequence[int]]] = OrderedDict()
        """(source, amount class) -> (what had been learned when it was built, when the first
        failure it avoids will be forgotten, predecessors)."""
        self._bans_expire = math.inf
        self._learned = 0
        """Bumped with every failure learned."""
        self.tree_builds = 0
        self.searches = 0
        self._failed_amount = np.zeros(0)
        """Mission control: per edge, the smallest amount that failed on it (inf: none) ..."""
        self._failed_at = np.zeros(0)
        """... and when."""

    # -- weights -------------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Rebuild the arrays (and drop the cached trees) when the graph has changed."""
        g = self.graph
        if self._version == g.version:
            return
        p = self.params
        n_edges = len(g.source)
        capacity = np.repeat(np.asarray(g.capacity, dtype=np.float64), 2)
        is_open = np.repeat(np.asarray(g.open, dtype=bool), 2)
        max_cap = float(capacity[is_open].max()) if is_open.any() else 1.0
        self._src = np.asarray(g.source, dtype=np.int64)
        self._dst = np.asarray(g.target, dtype=np.int64)
        self._cap = capacity
        self._static = is_open & np.asarray(g.enabled, dtype=bool)
        self._w0 = (
            p.alpha * np.asarray(g.base_fee, dtype=np.float64)
            + p.beta * (1.0 - capacity / max_cap)
            + p.gamma * np.asarray(g.latency_ms, dtype=np.float64)
        )
        self._w1 = p.alpha * np.asarray(g.fee_ppm, dtype=np.float64) / 1e6
        order = np.argsort(self._src, kind="stable")
        self._order = order
        self._s_src = self._src[order]
        self._s_dst = self._dst[order].astype(np.int32)
        self._s_w0 = self._w0[order]
        self._s_w1 = self._w1[order]
        self._w0_list: list[float] = self._w0.tolist()
        self._w1_list: list[float] = self._w1.tolist()
        pairs: dict[tuple[int, int], list[int]] = {}
        for e in np.flatnonzero(self._static).tolist():
            pairs.setdefault((g.source[e], g.target[e]), []).append(e)
        self._pairs = pairs
        self._parallel = any(len(v) > 1 for v in pairs.values())
        old = len(self._failed_amount)
        if old < n_edges:
            self._failed_amount = np.concatenate(
                [self._failed_amount, np.full(n_edges - old, np.inf)]
            )
            self._failed_at = np.concatenate([self._failed_at, np.zeros(n_edges - old)])
        self._trees.clear()
        self._version = g.version

    def weight(self, e: int, amount: int) -> float:
        """w_e for ``amount`` (see the module docstring), never below a tiny positive floor."""
        self._refresh()
        return max(self._w0_list[e] + self._w1_list[e] * amount, 1e-9)

    def usable(self, e: int, amount: int) -> bool:
        """Whether a route for ``amount`` may take edge ``e`` (static pruning and learning)."""
        self._refresh()
        g = self.graph
        c = e >> 1
        if not (g.open[c] and g.enabled[e]) or g.capacity[c] < self.params.theta * amount:
            return False
        failed = self._failed_amount[e]
        if amount >= failed:
            if self.clock() - self._failed_at[e] < self.params.memory_s:
                return False
            self._failed_amount[e] = np.inf
        return True

    # -- learning ------------------------------------------------------------------------------

    def learn_failure(self, e: int, amount: int) -> None:
        """An HTLC of ``amount`` could not pass edge ``e``: avoid it for as much or more."""
        self._refresh()
        if amount <= self._failed_amount[e] or self.clock() - self._failed_at[e] >= (
            self.params.memory_s
        ):
            self._failed_amount[e] = amount
            self._failed_at[e] = self.clock()
            self._learned += 1

    def forget(self) -> None:
        """Drop everything learned (e.g. after rebalancing or splicing)."""
        self._failed_amount[:] = np.inf
        self._learned += 1

    # -- searching -----------------------------------------------------------------------------

    def best(self, src: int, dst: int, amount: int) -> Path | None:
        """The lowest-weight usable path, from the cached tree when it is still valid.

        A node with a single channel (an agent's node on its hub) takes that channel and then
        its peer's tree: one tree per hub serves every customer, not one per customer.
        """
        self._refresh()
        g = self.graph
        out = g.adjacency[src]
        if len(out) == 1 and src != dst:
            first = out[0]
            peer = g.target[first]
            rest = [] if peer == dst else self._tree_path(peer, dst, amount)
            if rest is not None and self.usable(first, amount) and g.spendable(first) >= amount:
                return [first, *rest]
            return self.shortest(src, dst, amount)
        path = self._tree_path(src, dst, amount)
        if path is not None and g.spendable(path[0]) >= amount:
            return path
        return self.shortest(src, dst, amount)

    def _tree_path(self, src: int, dst: int, amount: int) -> Path | None:
        """The cached tree's path, if every edge on it is usable for ``amount``; the tree is
        rebuilt once if the sender has learned a failure since it was built."""
        bucket = -(-max(amount, 1).bit_length() // 3)  # amount classes a factor of 8 wide
        key = (src, bucket)
        trees = self._trees
        cached = trees.get(key)
        if cached is None or self.clock() >= cached[1]:
            cached = self._cache(key)
        else:
            trees.move_to_end(key)
        path = self._path(cached[2], src, dst, amount, (), first_hop=False)
        if path is not None and all(self.usable(e, amount) for e in path):
            return path
        if cached[0] != self._learned:  # learned something since: rebuild this source's tree
            cached = self._cache(key)
            path = self._path(cached[2], src, dst, amount, (), first_hop=False)
            if path is not None and all(self.usable(e, amount) for e in path):
                return path
        return None

    def _cache(self, key: tuple[int, int]) -> tuple[int, float, Sequence[int]]:
        """Build the tree for ``key`` and keep it, dropping the least recently used beyond the
        memory bound (``max_tree_entries`` node entries, 4 bytes each)."""
        cached = self._tree(*key)
        trees = self._trees
        trees[key] = cached
        trees.move_to_end(key)
        limit = max(16, self.params.max_tree_entries // max(len(self.graph.nodes), 1))
        while len(trees) > limit:
            trees.popitem(last=False)
        return cached

    def _tree(self, src: int, bucket: int) -> tuple[int, float, Sequence[int]]:
        """Shortest-path tree for an amount class, pruned and weighted for the top of the class:
        a path read off it suits every amount in the class (checked again for the exact one),
        at the price of sometimes avoiding an edge a smaller amount could have used.

        (Pruning at the bottom of the class instead was measured slower: 7.3k against 11.3k
        payments/s on 1,000 nodes, as more tree paths failed the exact check.)"""
        self.tree_builds += 1
        learned = self._learned
        pred = self._search(src, 1 << (3 * bucket), first_hop=False)
        return learned, self._bans_expire, pred

    def _search(
        self,
        src: int,
        amount: int,
        *,
        learned: bool = True,
        first_hop: bool = True,
        banned_edges: Iterable[int] = (),
        banned_nodes: Iterable[int] = (),
    ) -> Sequence[int]:
        """Predecessor node of every node on the shortest-path tree from ``src`` (scipy, in C)."""
        g = self.graph
        self.searches += 1
        n = len(g.nodes)
        mask = self._static & (self._cap >= self.params.theta * amount)
        self._bans_expire = math.inf
        if learned:
            recent = self.clock() - self._failed_at < self.params.memory_s
            banned_now = (self._failed_amount <= amount) & recent
            if banned_now.any():
                mask &= ~banned_now
                self._bans_expire = float(self._failed_at[banned_now].min()) + self.params.memory_s
        if first_hop:  # the sender knows its own balances
            for e in g.adjacency[src]:
                if g.spendable(e) < amount:
                    mask[e] = False
        bad = list(banned_edges)
        if bad:
            mask[bad] = False
        nodes = list(banned_nodes)
        if nodes:
            banned = np.zeros(n, dtype=bool)
            banned[nodes] = True
            mask &= ~(banned[self._src] | banned[self._dst])
        m = mask[self._order]
        if not m.any():
            return array("i", [-9999]) * n
        w = np.maximum(self._s_w0[m] + self._s_w1[m] * amount, 1e-9)
        rows, cols = self._s_src[m], self._s_dst[m]
        if self._parallel:  # keep the cheapest of parallel edges
            order = np.lexsort((w, cols, rows))
            rows, cols, w = rows[order], cols[order], w[order]
            first = np.ones(len(w), dtype=bool)
            first[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
            rows, cols, w = rows[first], cols[first], w[first]
        indptr = np.zeros(n + 1, dtype=np.int32)  # rows are sorted: build the CSR arrays directly
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        matrix = csr_matrix((w, cols, indptr), shape=(n, n))
        _, pred = dijkstra(matrix, indices=src, return_predecessors=True)
        return array("i", pred.astype(np.int32).tobytes())

    def _path(
        self,
        pred: Sequence[int],
        src: int,
        dst: int,
        amount: int,
        banned: Iterable[int],
        *,
        first_hop: bool = True,
    ) -> Path | None:
        """The edges of the tree path to ``dst`` (the cheapest usable edge per node pair)."""
        g = self.graph
        bad = set(banned)
        path: Path = []
        node = dst
        while node != src:
            u = pred[node]
            if u < 0 or len(path) > len(pred):
                return None
            choices = self._pairs.get((u, node), ())
            if len(choices) == 1:
                e = choices[0]
            else:
                ok = [e for e in choices if e not in bad and self.usable(e, amount)]
                if u == src and first_hop:
                    ok = [e for e in ok if g.spendable(e) >= amount] or ok
                if not ok:
                    return None
                e = min(ok, key=lambda x: self.weight(x, amount))
            path.append(e)
            node = u
        path.reverse()
        return path

    def shortest(
        self,
        src: int,
        dst: int,
        amount: int,
        *,
        banned_edges: Iterable[int] = (),
        banned_nodes: Iterable[int] = (),
        first_hop_liquidity: bool = True,
    ) -> Path | None:
        """Lowest-weight usable path avoiding the banned edges and nodes; None when unreachable."""
        self._refresh()
        nodes = set(banned_nodes)
        if src == dst or src in nodes or dst in nodes:
            return None
        edges = list(banned_edges)
        pred = self._search(
            src,
            amount,
            first_hop=first_hop_liquidity,
            banned_edges=edges,
            banned_nodes=nodes,
        )
        return self._path(pred, src, dst, amount, edges, first_hop=first_hop_liquidity)

    def cost(self, path: Path, amount: int) -> float:
        """Total weight of ``path`` for ``amount``."""
        return sum(self.weight(e, amount) for e in path)

    def k_shortest(self, src: int, dst: int, amount: int, k: int | None = None) -> list[Path]:
        """Yen's algorithm: up to k loopless paths in increasing weight."""
        k = k or self.params.k
        first = self.shortest(src, dst, amount)
        if first is None:
            return []
        g = self.graph
        found: list[Path] = [first]
        candidates: list[tuple[float, list[int]]] = []
        seen = {tuple(first)}
        while len(found) < k:
            last = found[-1]
            for i in range(len(last)):
                spur = g.source[last[i]]
                root = last[:i]
                banned_edges = {p[i] for p in found if len(p) > i and p[:i] == root}
                banned_nodes = {g.source[e] for e in root}
                tail = self.shortest(
                    spur,
                    dst,
                    amount,
                    banned_edges=banned_edges,
                    banned_nodes=banned_nodes,
                    first_hop_liquidity=(i == 0),
                )
                if tail is None:
                    continue
                path = root + tail
                key = tuple(path)
                if key not in seen:
                    seen.add(key)
                    heapq.heappush(candidates, (self.cost(path, amount), path))
            if not candidates:
                break
            found.append(heapq.heappop(candidates)[1])
        return found
