"""SR-GNN as a RecBole sequential model: a thin adapter over :class:`recbole_srgnn.nn.SRGNN`."""

from __future__ import annotations

from torch import Tensor

from ..errors import InputError
from ..nn import SRGNN as SRGNNNetwork
from .session import SessionScorer


class SRGNN(SessionScorer):
    r"""Session-based Recommendation with Graph Neural Networks (Wu et al., AAAI 2019).

    Paper: https://arxiv.org/abs/1811.00855. The network is :class:`recbole_srgnn.nn.SRGNN`
    (no RecBole needed; ``self.network``); this class reads the Config, builds it and adds the
    losses of :class:`~recbole_srgnn.model.session.SessionScorer`. Each session becomes a graph
    of its distinct items (:func:`~recbole_srgnn.graph.build_session_graphs`, built for the
    whole batch on the device inside ``forward``), ``step`` rounds of :class:`~recbole_srgnn.layers.SRGNNConv`
    (shared weights) refine the item states, :class:`~recbole_srgnn.layers.SoftAttentionReadout`
    turns them into a session vector :math:`\mathbf{s}_h`, and every item :math:`v` is scored
    by :math:`\mathbf{s}_h^\top \mathbf{e}_v`; training minimises cross-entropy over all items.

    Config keys (defaults in ``recbole_srgnn/properties/model/SRGNN.yaml``): ``embedding_size``, ``step``,
    ``readout`` (``hybrid`` = the paper, ``global``, ``last``), ``embedding_dropout``,
    ``hidden_dropout``, ``loss_type`` (``CE``, ``BPR`` or ``SSM``: the sampled softmax, with
    ``num_negatives`` and ``sample_alpha``).

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
        super().__init__(config, dataset)  # makes item_embedding first, as before the adapter
        if config["rule_fusion"]:  # a removed option: refuse it rather than rank without the rules
            raise InputError(f"rule_fusion={config['rule_fusion']}: SRGNN no longer ranks with the "
                             "sequence rules itself; python -m recbole_srgnn.fusion does (--trained "
                             "takes a model trained by run.py); rule_fusion=0 tests the model alone")
        network = SRGNNNetwork(
            self.n_items, self.embedding_size, step=int(config["step"]),
            readout=config["readout"] or "hybrid",
            embedding_dropout=float(config["embedding_dropout"] or 0.0),
            hidden_dropout=float(config["hidden_dropout"] or 0.0),
            norm_scale=float(config["norm_scale"] or 0.0),
            repeat_recency=int(config["repeat_recency"] or 0),
            item_embedding=self.item_embedding,
        )  # builds and initialises its layers in the order this class always did
        # The network's parts are registered here under their own names (not under
        # "network."), so state_dict keys and parameter order are those of earlier checkpoints;
        # the network itself is kept unregistered and shares every tensor with this module.
        self.__dict__["network"] = network
        self.embedding_dropout = network.embedding_dropout
        self.hidden_dropout = network.hidden_dropout
        self.gnn = network.gnn
        self.readout = network.readout
        self.repeat_bias = network.repeat_bias
        self.step = network.step
        self.norm_scale = network.norm_scale
        self.repeat_recency = network.repeat_recency

    def train(self, mode: bool = True) -> "SRGNN":
        super().train(mode)  # the shared layers follow as children; the network's own flag too
        self.network.training = mode
        return self

    def reset_parameters(self) -> None:
        self.network.reset_parameters()

    def item_table(self) -> Tensor:
        return self.network.item_table()

    def encode(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        return self.network.encode(item_seq, item_seq_len)

    def full_scores(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        """``[B, n_items]`` scores (logits) of every item, with the options' scaling and biases."""
        return self.network(item_seq, item_seq_len)

    def candidate_scores(self, item_seq: Tensor, item_seq_len: Tensor, items: Tensor) -> Tensor:
        """The columns ``items`` of :meth:`full_scores`, from those items' rows alone."""
        return self.network.score_items(item_seq, item_seq_len, items)
