"""Naive, per-session references built straight from the SR-GNN paper's definitions (tests only)."""

from __future__ import annotations

import torch


def random_batch(generator: torch.Generator, batch_size: int, max_len: int, num_items: int):
    """Left-aligned, zero-padded sessions with repeats, length-1 rows and full-length rows."""
    lengths = torch.randint(1, max_len + 1, (batch_size,), generator=generator)
    lengths[0] = 1
    lengths[-1] = max_len
    seq = torch.zeros(batch_size, max_len, dtype=torch.long)
    for row, length in enumerate(lengths.tolist()):
        # few distinct items per row so that repeats and repeated transitions are common
        pool = torch.randint(1, num_items, (max(1, length // 2),), generator=generator)
        seq[row, :length] = pool[torch.randint(0, pool.numel(), (length,), generator=generator)]
    return seq, lengths


def session_graph(items: list[int]):
    """Nodes (sorted distinct items), dense A_in and A_out of one session, as in the paper.

    A_in[v, u] = 1 / in_degree(v) for each distinct edge u -> v;
    A_out[u, v] = 1 / out_degree(u) for each distinct edge u -> v.
    """
    nodes = sorted(set(items))
    index = {item: k for k, item in enumerate(nodes)}
    edges = {(index[a], index[b]) for a, b in zip(items, items[1:])}
    n = len(nodes)
    adjacency = torch.zeros(n, n, dtype=torch.float64)
    for u, v in edges:
        adjacency[u, v] = 1.0
    in_degree = adjacency.sum(0)
    out_degree = adjacency.sum(1)
    a_in = torch.zeros(n, n, dtype=torch.float64)
    a_out = torch.zeros(n, n, dtype=torch.float64)
    for u, v in edges:
        a_in[v, u] = 1.0 / in_degree[v]
        a_out[u, v] = 1.0 / out_degree[u]
    return nodes, index, edges, a_in, a_out
