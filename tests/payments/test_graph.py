"""Channel graphs: built from Core Lightning's recorded JSON, for a community, scale-free."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from payments import community_graph, from_cln, scale_free_graph

TRANSCRIPTS = Path(__file__).resolve().parents[3] / "shared" / "cln-transcripts" / "v26.06.6"


def _calls(name: str) -> list[dict[str, object]]:
    path = TRANSCRIPTS / name
    if not path.exists():
        pytest.skip(f"recorded transcripts not found at {TRANSCRIPTS}")
    calls: list[dict[str, object]] = json.loads(path.read_text())["calls"]
    return calls


def _response(name: str, method: str, seq: int | None = None) -> dict[str, object]:
    for call in _calls(name):
        if call["method"] == method and (seq is None or call["seq"] == seq):
            response: dict[str, object] = call["response"]  # type: ignore[assignment]
            return response
    raise LookupError(method)


def test_listchannels_gives_the_recorded_topology_and_fee_policies() -> None:
    graph = from_cln(_response("bootstrap.json", "listchannels"))
    assert len(graph.nodes) == 3 and graph.channel_count == 2
    assert sorted(graph.scid) == ["103x1x0", "103x2x0"]
    for c in range(graph.channel_count):
        assert graph.capacity[c] == 5_000_000_000
        assert graph.balance[2 * c] == graph.balance[2 * c + 1] == 2_500_000_000  # unknown: even
        assert graph.base_fee[2 * c] == 1 and graph.fee_ppm[2 * c] == 10 and graph.cltv[2 * c] == 6
    bob = graph.by_id["02e41683cdb03736d65611e114939c125124687683b89219bf5a090e971728de8d"]
    assert len(graph.adjacency[bob]) == 2  # bob is the middle of alice - bob - carol


def test_own_channels_take_real_balances_and_stale_splice_gossip_is_dropped() -> None:
    alice = "0230cf1c27d7f9fba361bd27c0b66eaa4c8b75a2e6c57fdda41da522465ca10953"
    gossip = _response("keysend_and_splice.json", "listchannels")  # old and new ids side by side
    peers = _response("keysend_and_splice.json", "listpeerchannels", seq=8)  # alice, after splice
    graph = from_cln(gossip, peers, local_id=alice)
    assert "103x1x0" not in graph.scid  # alice - bob before the splice
    c = graph.scid.index("109x1x1")
    a, _b = graph.ends[c]
    e = 2 * c if graph.nodes[a].node_id == alice else 2 * c + 1
    assert graph.capacity[c] == 5_100_000_000
    assert graph.balance[e] == 5_096_439_961
    assert not graph.enabled[e]  # gossip from bob's side only: alice's direction is unannounced
    with pytest.raises(ValueError, match="local node"):
        from_cln(gossip, peers)
    with pytest.raises(ValueError, match="channels"):
        from_cln({"result": {}})


def test_a_community_puts_agents_on_hubs_with_their_own_nodes_or_as_accounts() -> None:
    funding = {i: 1_000_000_000 for i in range(10)}
    graph, placement = community_graph(funding, hubs=3, seed=1)
    assert len(graph.nodes) == 13 and graph.channel_count == 3 + 10
    assert all(len(graph.adjacency[placement.node_of[i]]) == 1 for i in funding)
    node = placement.node_of[0]
    assert graph.outbound(node) == 1_000_000_000 - 20_000_000  # all but the 1% reserve
    assert graph.nodes[node].node_id.startswith(("02", "03"))
    shared, on_hubs = community_graph(funding, hubs=3, own_nodes=False, seed=1)
    assert len(shared.nodes) == 3 and set(on_hubs.node_of.values()) == set(on_hubs.hubs)
    again, _ = community_graph(funding, hubs=3, seed=1)
    assert again.nodes[node].node_id == graph.nodes[node].node_id  # same seed, same keys


def test_a_scale_free_graph_has_hubs_and_a_long_tail() -> None:
    graph = scale_free_graph(300, attach=2, seed=3)
    degrees = sorted(len(a) for a in graph.adjacency)
    assert graph.channel_count == (300 - 2) * 2
    assert degrees[0] == 2 and degrees[-1] > 20
    assert graph.channel_msat() == sum(graph.capacity)
