"""SR-GNN as a RecBole sequential model, computed on packed session graphs."""

from __future__ import annotations

from torch import Tensor, nn

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

    Config keys (defaults in ``properties/model/SRGNN.yaml``): ``embedding_size``, ``step``,
    ``readout`` (``hybrid`` = the paper, ``global``, ``last``), ``embedding_dropout``,
    ``hidden_dropout``, ``loss_type`` (``CE`` or ``BPR``).
    """

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        self.step = int(config["step"])
        self.embedding_dropout = nn.Dropout(float(config["embedding_dropout"] or 0.0))
        self.hidden_dropout = nn.Dropout(float(config["hidden_dropout"] or 0.0))
        self.gnn = SRGNNConv(self.embedding_size)
        self.readout = SoftAttentionReadout(self.embedding_size, config["readout"] or "hybrid")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.reset_item_embedding()
        self.gnn.reset_parameters()
        self.readout.reset_parameters()

    def encode(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        graphs = build_session_graphs(item_seq, item_seq_len, num_items=self.n_items)
        hidden = self.embedding_dropout(self.item_embedding(graphs.node_item))
        for _ in range(self.step):
            hidden = self.gnn(hidden, graphs.edge_index, graphs.in_weight, graphs.out_weight)
        session = self.readout(
            hidden[graphs.position_node], graphs.position_session, hidden[graphs.last_node]
        )
        return self.hidden_dropout(session)
