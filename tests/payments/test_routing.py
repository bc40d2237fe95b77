"""Routing: the paper's weight, pruning, Yen's k shortest (against brute force), learning."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payments import (
    ChannelGraph,
    PathFinder,
    Policy,
    RoutingParams,
    community_graph,
    scale_free_graph,
)


def random_graph(seed: int, nodes: int, channels: int) -> ChannelGraph:
    rng = np.random.default_rng(seed)
    graph = ChannelGraph()
    for i in range(nodes):
        graph.add_node(f"n{i}")
    for _ in range(channels):
        a, b = rng.choice(nodes, 2, replace=False)
        capacity = int(rng.integers(1_000, 100_000))
        split = int(rng.integers(0, capacity + 1))
        policies = [
            Policy(
                base_fee_msat=int(rng.integers(0, 50)),
                fee_ppm=int(rng.integers(0, 5000)),
                latency_ms=float(rng.uniform(1, 100)),
            )
            for _ in range(2)
        ]
        graph.open_channel(
            int(a), int(b), split, capacity - split, policy_a=policies[0], policy_b=policies[1]
        )
    return graph


def brute_force(finder: PathFinder, src: int, dst: int, amount: int) -> list[float]:
    """Cost of every loopless usable path, by depth-first enumeration."""
    g = finder.graph
    costs: list[float] = []

    def walk(node: int, seen: set[int], path: list[int]) -> None:
        if node == dst:
            costs.append(finder.cost(path, amount))
            return
        for e in g.adjacency[node]:
            v = g.target[e]
            if v in seen or not finder.usable(e, amount):
                continue
            if node == src and g.spendable(e) < amount:
                continue
            walk(v, seen | {v}, [*path, e])

    walk(src, {src}, [])
    return sorted(costs)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), nodes=st.integers(3, 7), k=st.integers(1, 6))
def test_yen_finds_the_k_cheapest_loopless_paths(seed: int, nodes: int, k: int) -> None:
    graph = random_graph(seed, nodes, nodes * 2)
    finder = PathFinder(graph, RoutingParams(theta=1.0))
    amount = 500
    expected = brute_force(finder, 0, nodes - 1, amount)[:k]
    paths = finder.k_shortest(0, nodes - 1, amount, k)
    assert [round(finder.cost(p, amount), 6) for p in paths] == [round(c, 6) for c in expected]
    for p in paths:  # each one a real, connected, loopless path
        assert graph.source[p[0]] == 0 and graph.target[p[-1]] == nodes - 1
        assert all(graph.target[a] == graph.source[b] for a, b in itertools.pairwise(p))
        visited = [graph.source[e] for e in p] + [nodes - 1]
        assert len(set(visited)) == len(visited)
    assert len({tuple(p) for p in paths}) == len(paths)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), nodes=st.integers(3, 8))
def test_the_search_is_exact_and_the_cached_tree_gives_a_usable_path(seed: int, nodes: int) -> None:
    graph = random_graph(seed, nodes, nodes * 2)
    finder = PathFinder(graph)
    dst = nodes - 1
    for amount in (100, 5_000):
        expected = brute_force(finder, 0, dst, amount)
        exact = finder.shortest(0, dst, amount)
        best = finder.best(0, dst, amount)
        if not expected:
            assert exact is None and best is None
            continue
        assert exact is not None and best is not None
        assert finder.cost(exact, amount) == pytest.approx(expected[0])
        # the tree is the optimum for the top of the amount class: usable, close to the optimum
        assert all(finder.usable(e, amount) for e in best)
        assert graph.source[best[0]] == 0 and graph.target[best[-1]] == dst
        assert graph.spendable(best[0]) >= amount


def line(*capacities: int, policy: Policy | None = None) -> ChannelGraph:
    graph = ChannelGraph()
    for i in range(len(capacities) + 1):
        graph.add_node(f"n{i}")
    for i, cap in enumerate(capacities):
        graph.open_channel(i, i + 1, cap, cap, policy_a=policy or Policy(), policy_b=Policy())
    return graph


def test_the_weight_is_alpha_fee_plus_beta_capacity_plus_gamma_latency() -> None:
    graph = line(1_000_000, 4_000_000, policy=Policy(base_fee_msat=7, fee_ppm=300, latency_ms=12))
    finder = PathFinder(graph, RoutingParams(alpha=2.0, beta=5.0, gamma=0.5))
    amount = 100_000
    fee = 7 + 300 * amount / 1e6
    # channel 0 has a quarter of the largest channel's capacity (8M vs 2M msat in total)
    assert finder.weight(0, amount) == pytest.approx(2.0 * fee + 5.0 * (1 - 2 / 8) + 0.5 * 12)
    assert finder.weight(2, amount) == pytest.approx(2.0 * fee + 0.5 * 12)


def test_small_channels_are_pruned_below_theta_times_the_amount() -> None:
    graph = ChannelGraph()
    for i in range(3):
        graph.add_node(f"n{i}")
    graph.open_channel(0, 2, 500_000, 500_000, policy_a=Policy(latency_ms=1))  # cheap, small
    graph.open_channel(0, 1, 5_000_000, 5_000_000, policy_a=Policy(latency_ms=50))
    graph.open_channel(1, 2, 5_000_000, 5_000_000, policy_a=Policy(latency_ms=50))
    finder = PathFinder(graph, RoutingParams(theta=2.0))
    assert finder.best(0, 2, 100_000) == [0]  # 1M capacity >= 2 x 100k
    assert finder.best(0, 2, 600_000) == [2, 4]  # 1M < 2 x 600k: around it


def test_a_failed_edge_is_avoided_for_as_much_until_it_is_forgotten() -> None:
    graph = ChannelGraph()
    for i in range(3):
        graph.add_node(f"n{i}")
    graph.open_channel(0, 2, 5_000_000, 5_000_000, policy_a=Policy(latency_ms=1))
    graph.open_channel(0, 1, 5_000_000, 5_000_000, policy_a=Policy(latency_ms=50))
    graph.open_channel(1, 2, 5_000_000, 5_000_000, policy_a=Policy(latency_ms=50))
    now = [0.0]
    finder = PathFinder(graph, RoutingParams(memory_s=10.0), clock=lambda: now[0])
    assert finder.best(0, 2, 100_000) == [0]
    finder.learn_failure(0, 100_000)
    assert finder.best(0, 2, 100_000) == [2, 4]
    assert finder.shortest(0, 2, 50_000) == [0]  # smaller amounts may still pass
    now[0] = 11.0
    assert finder.best(0, 2, 100_000) == [0]
    assert finder.shortest(0, 2, 100_000) == [0]


def test_customers_of_a_hub_share_its_tree_and_the_cache_is_bounded() -> None:
    graph, placement = community_graph({i: 10_000_000 for i in range(60)}, hubs=3, seed=2)
    finder = PathFinder(graph)
    for agent in range(60):
        src, dst = placement.node_of[agent], placement.node_of[(agent + 1) % 60]
        path = finder.best(src, dst, 50_000)
        assert path is not None and path == finder.shortest(src, dst, 50_000)
    assert finder.tree_builds <= 3  # one per hub, not one per agent
    small = PathFinder(scale_free_graph(200, seed=1), RoutingParams(max_tree_entries=200 * 20))
    for src in range(100):
        small.best(src, (src + 50) % 200, 10_000)
    assert small.tree_builds == 100 and len(small._trees) == 20
