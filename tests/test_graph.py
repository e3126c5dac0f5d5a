"""The vectorised graph builder against a naive per-session reference, on fresh random batches."""

from __future__ import annotations

import os

import pytest
import torch

from recbole_srgnn.graph import build_session_graphs
from graph_reference import random_batch, session_graph


def fresh_seeds(count: int) -> list[int]:
    """New seeds on every run (printed in failures so a failing batch can be replayed)."""
    return [int.from_bytes(os.urandom(4), "little") for _ in range(count)]


def check_against_reference(seq: torch.Tensor, lengths: torch.Tensor, graphs, context: str) -> None:
    batch_size, max_len = seq.shape
    node_item = graphs.node_item.tolist()
    node_session = graphs.node_session.tolist()
    src, dst = graphs.edge_index.tolist()
    assert graphs.edge_index.shape[1] == len(set(zip(src, dst))), f"duplicate edges {context}"
    total_positions = int(lengths.sum())
    assert graphs.position_node.numel() == total_positions, context
    assert graphs.alias.shape == (batch_size, max_len), context
    seen_nodes = 0
    for row in range(batch_size):
        items = seq[row, : lengths[row]].tolist()
        nodes, index, edges, a_in, a_out = session_graph(items)
        mine = [k for k, s in enumerate(node_session) if s == row]
        seen_nodes += len(mine)
        # nodes: exactly the session's distinct items, each once
        assert sorted(node_item[k] for k in mine) == nodes, f"row {row} nodes {context}"
        local = {k: index[node_item[k]] for k in mine}
        # alias: every valid position points at the node of its item; padding is -1
        alias = graphs.alias[row].tolist()
        for pos in range(max_len):
            if pos < lengths[row]:
                assert alias[pos] in local and node_item[alias[pos]] == items[pos], f"row {row} alias {context}"
            else:
                assert alias[pos] == -1, f"row {row} padding alias {context}"
        # last node
        last = int(graphs.last_node[row])
        assert node_session[last] == row and node_item[last] == items[-1], f"row {row} last {context}"
        # edges with their weights equal the dense reference matrices
        got = {}
        for e, (u, v) in enumerate(zip(src, dst)):
            if node_session[u] == row:
                assert node_session[v] == row, f"edge across sessions {context}"
                got[(local[u], local[v])] = (float(graphs.in_weight[e]), float(graphs.out_weight[e]))
        assert set(got) == edges, f"row {row} edges {context}"
        for (u, v), (w_in, w_out) in got.items():
            assert w_in == pytest.approx(float(a_in[v, u])), f"row {row} in-weight {context}"
            assert w_out == pytest.approx(float(a_out[u, v])), f"row {row} out-weight {context}"
    assert seen_nodes == graphs.num_nodes, context
    # packed positions are row-major valid positions
    mask = torch.arange(max_len).unsqueeze(0) < lengths.unsqueeze(1)
    assert torch.equal(graphs.position_session, torch.nonzero(mask)[:, 0]), context
    assert torch.equal(graphs.position_node, graphs.alias[mask]), context


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (32, 12), (64, 50)])
def test_builder_matches_naive_reference_on_random_batches(shape):
    batch_size, max_len = shape
    for seed in fresh_seeds(3):
        generator = torch.Generator().manual_seed(seed)
        seq, lengths = random_batch(generator, batch_size, max_len, num_items=12)
        graphs = build_session_graphs(seq, lengths, num_items=12)
        check_against_reference(seq, lengths, graphs, f"(seed {seed}, shape {shape})")
        # the bound on item ids is optional
        again = build_session_graphs(seq, lengths)
        for a, b in zip(graphs, again):
            assert torch.equal(a, b), f"num_items=None differs (seed {seed})"


def test_known_small_example():
    # session 0: 5 -> 7 -> 5 -> 9 -> 5 (repeats); session 1: a single item; session 2: 3 -> 3
    seq = torch.tensor([[5, 7, 5, 9, 5], [4, 0, 0, 0, 0], [3, 3, 0, 0, 0]])
    lengths = torch.tensor([5, 1, 2])
    g = build_session_graphs(seq, lengths, num_items=10)
    assert g.node_item.tolist() == [5, 7, 9, 4, 3]
    assert g.node_session.tolist() == [0, 0, 0, 1, 2]
    assert g.alias.tolist() == [[0, 1, 0, 2, 0], [3, -1, -1, -1, -1], [4, 4, -1, -1, -1]]
    edges = {(u, v): (wi, wo) for u, v, wi, wo in zip(*g.edge_index.tolist(), g.in_weight.tolist(), g.out_weight.tolist())}
    # 5->7, 7->5, 5->9, 9->5 (5 has out-degree 2, in-degree 2), and the self-loop 3->3
    assert edges == {
        (0, 1): (1.0, 0.5),
        (1, 0): (0.5, 1.0),
        (0, 2): (1.0, 0.5),
        (2, 0): (0.5, 1.0),
        (4, 4): (1.0, 1.0),
    }
    assert g.last_node.tolist() == [0, 3, 4]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_builder_on_cuda_equals_cpu():
    generator = torch.Generator().manual_seed(fresh_seeds(1)[0])
    seq, lengths = random_batch(generator, 256, 50, num_items=40)
    cpu = build_session_graphs(seq, lengths, num_items=40)
    gpu = build_session_graphs(seq.cuda(), lengths.cuda(), num_items=40)
    for a, b in zip(cpu, gpu):
        assert b.device.type == "cuda"
        assert torch.allclose(a, b.cpu())
