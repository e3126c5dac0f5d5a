"""Session graphs for a whole batch, built on the device with tensor operations only.

SR-GNN (Wu et al., AAAI 2019, https://arxiv.org/abs/1811.00855) turns each session
``s = [v_1, ..., v_n]`` into a directed graph whose nodes are the session's distinct items and
whose edges are the consecutive clicks ``v_i -> v_{i+1}`` (each pair once). Messages travel along
the edges with two normalisations:

* incoming (``A_in``): an edge ``u -> v`` carries ``1 / in_degree(v)``,
* outgoing (``A_out``): the same edge, read backwards, carries ``1 / out_degree(u)``,

degrees counted after de-duplication.

:func:`build_session_graphs` builds the graphs of a RecBole batch (``item_seq [B, L]``
left-aligned and zero-padded, ``item_seq_len [B]``) as one disjoint union, PyG style: a flat
node list, an ``edge_index`` and per-edge weights. There is no Python loop over sessions, no
copy to the host, and no padding node: work later scales with the real nodes and the valid
positions, not with ``B x L``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor


class SessionGraphs(NamedTuple):
    """The batch's session graphs as one disjoint graph.

    Nodes are ``(session, item)`` pairs, sorted by session then item id. Valid positions are
    the real (non-padding) entries of ``item_seq`` in row-major order ("packed" positions).
    """

    node_item: Tensor  #: [N] item id of each node
    node_session: Tensor  #: [N] batch row (session) of each node
    edge_index: Tensor  #: [2, E] de-duplicated directed edges ``src -> dst`` between nodes
    in_weight: Tensor  #: [E] ``1 / in_degree(dst)`` (float)
    out_weight: Tensor  #: [E] ``1 / out_degree(src)`` (float)
    alias: Tensor  #: [B, L] node of each position, ``-1`` at padding
    position_node: Tensor  #: [P] node of each valid position (packed, row-major)
    position_session: Tensor  #: [P] batch row of each valid position
    last_node: Tensor  #: [B] node of each session's last item

    @property
    def num_nodes(self) -> int:
        return self.node_item.numel()


def build_session_graphs(
    item_seq: Tensor,
    item_seq_len: Tensor,
    num_items: Optional[int] = None,
    dtype: torch.dtype = torch.float32,
) -> SessionGraphs:
    """Build the SR-GNN session graphs of a padded batch.

    Args:
        item_seq: ``[B, L]`` item ids, each row's ``item_seq_len`` items first (oldest first),
            then padding.
        item_seq_len: ``[B]`` number of valid items per row, each at least 1.
        num_items: an upper bound (exclusive) on the item ids; pass it to avoid reading the
            batch maximum back from the device.
        dtype: floating type of the edge weights.

    Returns:
        The batch's :class:`SessionGraphs`.
    """
    if item_seq.dim() != 2:
        raise ValueError(f"item_seq must be [B, L], got shape {tuple(item_seq.shape)}")
    batch_size, max_len = item_seq.shape
    device = item_seq.device
    item_seq = item_seq.long()
    item_seq_len = item_seq_len.long().view(-1)
    if num_items is None:
        num_items = int(item_seq.max().item()) + 1 if item_seq.numel() else 1

    valid = torch.arange(max_len, device=device).unsqueeze(0) < item_seq_len.unsqueeze(1)
    flat_valid = valid.reshape(-1)
    rows = torch.arange(batch_size, device=device)
    position_session = rows.repeat_interleave(max_len)[flat_valid]
    position_item = item_seq.reshape(-1)[flat_valid]

    # One node per distinct (session, item): a single unique over a combined key.
    keys = position_session * num_items + position_item
    node_keys, position_node = torch.unique(keys, sorted=True, return_inverse=True)
    node_session = torch.div(node_keys, num_items, rounding_mode="floor")
    node_item = node_keys - node_session * num_items
    num_nodes = node_keys.numel()

    alias = torch.full((batch_size, max_len), -1, dtype=torch.long, device=device)
    alias.masked_scatter_(valid, position_node)

    # Consecutive valid positions of the same session give the edges; de-duplicate them.
    same_session = position_session[1:] == position_session[:-1]
    src = position_node[:-1][same_session]
    dst = position_node[1:][same_session]
    edge_keys = torch.unique(src * num_nodes + dst, sorted=True)
    src = torch.div(edge_keys, num_nodes, rounding_mode="floor")
    dst = edge_keys - src * num_nodes
    edge_index = torch.stack([src, dst])

    out_degree = torch.bincount(src, minlength=num_nodes).to(dtype)
    in_degree = torch.bincount(dst, minlength=num_nodes).to(dtype)
    out_weight = out_degree[src].reciprocal()
    in_weight = in_degree[dst].reciprocal()

    last_position = torch.cumsum(item_seq_len, 0) - 1
    last_node = position_node[last_position]

    return SessionGraphs(
        node_item=node_item,
        node_session=node_session,
        edge_index=edge_index,
        in_weight=in_weight,
        out_weight=out_weight,
        alias=alias,
        position_node=position_node,
        position_session=position_session,
        last_node=last_node,
    )
