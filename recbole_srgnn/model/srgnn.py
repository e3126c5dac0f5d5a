"""SR-GNN as a RecBole sequential model, computed on packed session graphs."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch_geometric.utils import scatter

from ..errors import InputError
from ..graph import build_session_graphs
from ..layers import SoftAttentionReadout, SRGNNConv
from .session import SessionScorer


class SRGNN(SessionScorer):
    r"""Session-based Recommendation with Graph Neural Networks (Wu et al., AAAI 2019).

    Paper: https://arxiv.org/abs/1811.00855. Each session becomes a graph of its distinct
    items (:func:`~recbole_srgnn.graph.build_session_graphs`, built for the whole batch on the
    device inside ``forward``), ``step`` rounds of :class:`~recbole_srgnn.layers.SRGNNConv`
    (shared weights) refine the item states, :class:`~recbole_srgnn.layers.SoftAttentionReadout`
    turns them into a session vector :math:`\mathbf{s}_h`, and every item :math:`v` is scored
    by :math:`\mathbf{s}_h^\top \mathbf{e}_v`; training minimises cross-entropy over all items.

    Config keys (defaults in ``recbole_srgnn/properties/model/SRGNN.yaml``): ``embedding_size``, ``step``,
    ``readout`` (``hybrid`` = the paper, ``global``, ``last``), ``embedding_dropout``,
    ``hidden_dropout``, ``loss_type`` (``CE`` or ``BPR``).

    Options beyond the paper (off by default, so the default model stays faithful):

    * ``norm_scale`` (NISER, Gupta et al. 2019, https://arxiv.org/abs/1909.04276): item
      embeddings are L2-normalised wherever they are used (node inputs and the scoring table),
      the session vector too, and scores are ``norm_scale * cos(s, e_v)``; 0 = off.
    * ``repeat_recency``: repeat-aware scoring. ``K > 0`` learns ``K`` scalars (initially 0)
      ``b_0 .. b_{K-1}``; an item that occurs in the session gets ``b_r`` added to its score,
      ``r`` = how many clicks ago it was last seen (0 = the last item; older than ``K - 1``
      share ``b_{K-1}``). Costs one scatter over the session's distinct items; 0 = off.

    Ranking with the sequence rules as well ("SR-GNN + rules") is not this model's job: the
    evaluation-time :class:`~recbole_srgnn.model.fused.FusedRanker` combines trained models with
    the rules (``python -m recbole_srgnn.fusion`` chooses their weight on validation).
    """

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        self.step = int(config["step"])
        self.embedding_dropout = nn.Dropout(float(config["embedding_dropout"] or 0.0))
        self.hidden_dropout = nn.Dropout(float(config["hidden_dropout"] or 0.0))
        self.gnn = SRGNNConv(self.embedding_size)
        self.readout = SoftAttentionReadout(self.embedding_size, config["readout"] or "hybrid")
        self.norm_scale = float(config["norm_scale"] or 0.0)
        self.repeat_recency = int(config["repeat_recency"] or 0)
        if self.norm_scale < 0 or self.repeat_recency < 0:
            raise ValueError("norm_scale and repeat_recency must be >= 0 (0 = off)")
        self.repeat_bias = (
            nn.Parameter(torch.zeros(self.repeat_recency)) if self.repeat_recency else None
        )
        if config["rule_fusion"]:  # a removed option: refuse it rather than rank without the rules
            raise InputError(f"rule_fusion={config['rule_fusion']}: SRGNN no longer ranks with the "
                             "sequence rules itself; python -m recbole_srgnn.fusion does (--trained "
                             "takes a model trained by run.py); rule_fusion=0 tests the model alone")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.reset_item_embedding()
        self.gnn.reset_parameters()
        self.readout.reset_parameters()
        if self.repeat_bias is not None:
            nn.init.zeros_(self.repeat_bias)

    def item_table(self) -> Tensor:
        table = self.item_embedding.weight
        return F.normalize(table, dim=-1) if self.norm_scale else table

    def _encode_graphs(self, graphs) -> Tensor:
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
        graphs = build_session_graphs(item_seq, item_seq_len, num_items=self.n_items)
        return self._encode_graphs(graphs)

    def full_scores(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        """``[B, n_items]`` scores (logits) of every item, with the options' scaling and biases."""
        graphs = build_session_graphs(item_seq, item_seq_len, num_items=self.n_items)
        scores = self._encode_graphs(graphs) @ self.item_table().t()
        if self.norm_scale:
            scores = self.norm_scale * scores
        if self.repeat_bias is not None:
            scores = self._add_repeat_bias(scores, graphs, item_seq_len)
        return scores

    def _add_repeat_bias(self, scores: Tensor, graphs, item_seq_len: Tensor) -> Tensor:
        lengths = item_seq_len.long().view(-1)
        row_start = torch.cumsum(lengths, 0) - lengths
        position = torch.arange(graphs.position_node.numel(), device=scores.device)
        offset = position - row_start[graphs.position_session]
        recency = lengths[graphs.position_session] - 1 - offset
        node_recency = scatter(
            recency, graphs.position_node, dim=0, dim_size=graphs.num_nodes, reduce="min"
        )
        bonus = self.repeat_bias[node_recency.clamp(max=self.repeat_recency - 1)]
        # each (session, item) node is unique, so no two updates hit the same score
        return scores.index_put((graphs.node_session, graphs.node_item), bonus, accumulate=True)
