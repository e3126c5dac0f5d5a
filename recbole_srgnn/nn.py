r"""The session networks as plain ``torch.nn.Module``s: no RecBole Config, Dataset or loss.

:class:`SRGNN` is the whole SR-GNN network (Wu et al., AAAI 2019,
https://arxiv.org/abs/1811.00855) with this project's options; :class:`LastItem` is the floor
model. The RecBole classes in :mod:`recbole_srgnn.model` are thin adapters over these (they read
the Config and add the losses), and a model bundle (:mod:`recbole_srgnn.bundle`) rebuilds them
from its metadata alone. Item ids are the RecBole ones: ``0`` is padding, ``1 .. n_items - 1``
are items; sessions are ``[B, L]`` id tensors padded with 0 after the items, with ``[B]`` lengths.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch_geometric.utils import scatter

from .graph import SessionGraphs, build_session_graphs
from .layers import SoftAttentionReadout, SRGNNConv

READOUTS = ("hybrid", "global", "last")


def item_embedding_table(n_items: int, embedding_size: int) -> nn.Embedding:
    """The ``[n_items, d]`` item table, padding row 0."""
    return nn.Embedding(n_items, embedding_size, padding_idx=0)


def reset_item_embedding(table: nn.Embedding) -> None:
    """Uniform(-1/sqrt(d), 1/sqrt(d)) as in SR-GNN's code; the padding row is zero."""
    bound = 1.0 / math.sqrt(table.embedding_dim)
    nn.init.uniform_(table.weight, -bound, bound)
    with torch.no_grad():
        table.weight[0].zero_()


class SRGNN(nn.Module):
    r"""SR-GNN: session graph, gated graph propagation, attention readout, scores of all items.

    Each session becomes a graph of its distinct items
    (:func:`~recbole_srgnn.graph.build_session_graphs`);
    ``step`` rounds of :class:`~recbole_srgnn.layers.SRGNNConv` (shared weights, Eq. 1-5 of the
    paper) refine the node states :math:`\mathbf{v}_i`, initially the item embeddings
    :math:`\mathbf{e}_i`; :class:`~recbole_srgnn.layers.SoftAttentionReadout` (Eq. 6-7) gives the
    session vector :math:`\mathbf{s}_h`, and every item :math:`v` is scored (Eq. 8)

    .. math::
        \hat{z}_v = \mathbf{s}_h^\top \mathbf{e}_v .

    Options beyond the paper (0 = off):

    * ``norm_scale`` (NISER, https://arxiv.org/abs/1909.04276): item and session vectors are
      L2-normalised and :math:`\hat{z}_v = \sigma \cos(\mathbf{s}_h, \mathbf{e}_v)`,
      :math:`\sigma` = ``norm_scale``;
    * ``repeat_recency`` = K: learned biases :math:`b_0 .. b_{K-1}` (initially 0) added to the score
      of an item already in the session, :math:`b_r` for an item last seen ``r`` clicks ago
      (older ones share :math:`b_{K-1}`).

    ``embedding_dropout`` acts on the node inputs, ``hidden_dropout`` on the session vector (both
    only in training mode). The loss is not this module's concern.
    """

    def __init__(
        self,
        n_items: int,
        embedding_size: int = 100,
        step: int = 1,
        readout: str = "hybrid",
        embedding_dropout: float = 0.0,
        hidden_dropout: float = 0.0,
        norm_scale: float = 0.0,
        repeat_recency: int = 0,
        *,
        item_embedding: nn.Embedding | None = None,
    ) -> None:
        """``item_embedding``: an existing ``[n_items, embedding_size]`` table to use (the RecBole
        adapter passes its own, so that both share one); by default a new one is made."""
        super().__init__()
        if n_items < 2 or embedding_size < 1 or step < 0:
            raise ValueError("n_items must be >= 2, embedding_size >= 1 and step >= 0")
        if norm_scale < 0 or repeat_recency < 0:
            raise ValueError("norm_scale and repeat_recency must be >= 0 (0 = off)")
        self.n_items = int(n_items)
        self.embedding_size = int(embedding_size)
        self.step = int(step)
        self.norm_scale = float(norm_scale)
        self.repeat_recency = int(repeat_recency)
        if item_embedding is None:
            item_embedding = item_embedding_table(self.n_items, self.embedding_size)
        elif tuple(item_embedding.weight.shape) != (self.n_items, self.embedding_size):
            raise ValueError("item_embedding must be [n_items, embedding_size]")
        self.item_embedding = item_embedding
        self.embedding_dropout = nn.Dropout(float(embedding_dropout))
        self.hidden_dropout = nn.Dropout(float(hidden_dropout))
        self.gnn = SRGNNConv(self.embedding_size)
        self.readout = SoftAttentionReadout(self.embedding_size, readout)
        self.repeat_bias = (
            nn.Parameter(torch.zeros(self.repeat_recency)) if self.repeat_recency else None
        )
        self.reset_parameters()

    def options(self) -> dict:
        """The constructor arguments that rebuild this network (a bundle's ``config``)."""
        return {"n_items": self.n_items, "embedding_size": self.embedding_size,
                "step": self.step, "readout": self.readout.mode,
                "embedding_dropout": float(self.embedding_dropout.p),
                "hidden_dropout": float(self.hidden_dropout.p),
                "norm_scale": self.norm_scale, "repeat_recency": self.repeat_recency}

    def reset_parameters(self) -> None:
        reset_item_embedding(self.item_embedding)
        self.gnn.reset_parameters()
        self.readout.reset_parameters()
        if self.repeat_bias is not None:
            nn.init.zeros_(self.repeat_bias)

    def item_table(self) -> Tensor:
        """``[n_items, d]`` item vectors the session vectors are scored against."""
        table = self.item_embedding.weight
        return F.normalize(table, dim=-1) if self.norm_scale else table

    def encode_graphs(self, graphs: SessionGraphs) -> Tensor:
        """``[B, d]`` session vectors of packed session graphs."""
        nodes = self.item_embedding(graphs.node_item)
        if self.norm_scale:
            nodes = F.normalize(nodes, dim=-1)
        hidden = self.embedding_dropout(nodes)
        for _ in range(self.step):
            hidden = self.gnn(hidden, graphs.edge_index, graphs.in_weight, graphs.out_weight)
        session = self.readout(
            hidden[graphs.position_node], graphs.position_session, hidden[graphs.last_node]
        )
        session = self.hidden_dropout(session)
        return F.normalize(session, dim=-1) if self.norm_scale else session

    def encode(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        """``[B, L]`` padded sessions and ``[B]`` lengths -> ``[B, d]`` session vectors."""
        graphs = build_session_graphs(item_seq, item_seq_len, num_items=self.n_items)
        return self.encode_graphs(graphs)

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        """``[B, n_items]`` scores (logits) of every item, column 0 = padding included."""
        graphs = build_session_graphs(item_seq, item_seq_len, num_items=self.n_items)
        scores = self.encode_graphs(graphs) @ self.item_table().t()
        if self.norm_scale:
            scores = self.norm_scale * scores
        if self.repeat_bias is not None:
            scores = self.add_repeat_bias(scores, graphs, item_seq_len)
        return scores

    def score_items(self, item_seq: Tensor, item_seq_len: Tensor, items: Tensor) -> Tensor:
        """``[B, C]``: the columns ``items`` (``[C]`` ids, repeats allowed) of :meth:`forward`,
        from those items' rows of the table alone (the sampled softmax's candidates)."""
        graphs = build_session_graphs(item_seq, item_seq_len, num_items=self.n_items)
        rows = self.item_embedding(items)
        if self.norm_scale:
            rows = F.normalize(rows, dim=-1)
        scores = self.encode_graphs(graphs) @ rows.t()
        if self.norm_scale:
            scores = self.norm_scale * scores
        if self.repeat_bias is not None:
            scores = self.add_repeat_bias(scores, graphs, item_seq_len, items)
        return scores

    def node_bonus(self, graphs: SessionGraphs, item_seq_len: Tensor) -> Tensor:
        """``[num_nodes]`` repeat bias ``b_r`` of each (session, item) node."""
        lengths = item_seq_len.long().view(-1)
        row_start = torch.cumsum(lengths, 0) - lengths
        position = torch.arange(graphs.position_node.numel(), device=lengths.device)
        offset = position - row_start[graphs.position_session]
        recency = lengths[graphs.position_session] - 1 - offset
        node_recency = scatter(
            recency, graphs.position_node, dim=0, dim_size=graphs.num_nodes, reduce="min"
        )
        return self.repeat_bias[node_recency.clamp(max=self.repeat_recency - 1)]

    def add_repeat_bias(self, scores: Tensor, graphs: SessionGraphs, item_seq_len: Tensor,
                        items: Tensor | None = None) -> Tensor:
        """``scores`` plus ``b_r`` for each item of a session, ``r`` = clicks since last seen.

        ``scores`` has a column per item id, or, with ``items`` (``[C]``), one per entry of
        ``items``: each node's bonus then goes to every column holding its item."""
        bonus = self.node_bonus(graphs, item_seq_len)
        if items is None:
            # each (session, item) node is unique, so no two updates hit the same score
            return scores.index_put((graphs.node_session, graphs.node_item), bonus,
                                    accumulate=True)
        ordered, order = items.sort()
        low = torch.searchsorted(ordered, graphs.node_item)
        hits = torch.searchsorted(ordered, graphs.node_item, right=True) - low  # [num_nodes]
        node = torch.repeat_interleave(torch.arange(hits.numel(), device=hits.device), hits)
        first = torch.cumsum(hits, 0) - hits
        within = torch.arange(node.numel(), device=hits.device) - first[node]
        column = order[low[node] + within]
        # a node's columns are distinct and nodes are unique (session, item) pairs
        return scores.index_put((graphs.node_session[node], column), bonus[node],
                                accumulate=True)


class LastItem(nn.Module):
    """Scores every item by its dot product with the session's last item's embedding."""

    def __init__(self, n_items: int, embedding_size: int = 100) -> None:
        super().__init__()
        self.n_items = int(n_items)
        self.embedding_size = int(embedding_size)
        self.item_embedding = item_embedding_table(self.n_items, self.embedding_size)
        self.reset_parameters()

    def options(self) -> dict:
        return {"n_items": self.n_items, "embedding_size": self.embedding_size}

    def reset_parameters(self) -> None:
        reset_item_embedding(self.item_embedding)

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        """``[B, n_items]`` scores of every item."""
        last = item_seq.gather(1, (item_seq_len.long() - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
        return self.item_embedding(last) @ self.item_embedding.weight.t()


NETWORKS: dict[str, type[nn.Module]] = {"SRGNN": SRGNN, "LastItem": LastItem}
