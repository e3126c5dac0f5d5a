"""What every session model here shares: an item table, full-catalogue scoring and the losses."""

from __future__ import annotations

import math

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.loss import BPRLoss
from torch import Tensor, nn


class SessionScorer(SequentialRecommender):
    """Base class: a session encoder (``encode``) whose output is scored against every item.

    Subclasses implement :meth:`encode` (and may refine :meth:`full_scores`); this class
    provides RecBole's ``calculate_loss`` (cross-entropy over all items, or BPR when
    ``loss_type: BPR`` and negative sampling are configured), ``predict`` and
    ``full_sort_predict``, all derived from :meth:`full_scores` so they always agree.
    """

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        self.embedding_size = int(config["embedding_size"])
        self.loss_type = config["loss_type"] or "CE"
        if self.loss_type not in ("CE", "BPR"):
            raise ValueError(f"loss_type must be CE or BPR, got {self.loss_type!r}")
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size, padding_idx=0)
        self.bpr_loss = BPRLoss()

    def reset_item_embedding(self) -> None:
        """Uniform(-1/sqrt(d), 1/sqrt(d)) as in SR-GNN's code; the padding row is zero."""
        bound = 1.0 / math.sqrt(self.embedding_size)
        nn.init.uniform_(self.item_embedding.weight, -bound, bound)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def encode(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        """``[B, L]`` padded sessions and ``[B]`` lengths -> ``[B, d]`` session vectors."""
        raise NotImplementedError

    def item_table(self) -> Tensor:
        """``[n_items, d]`` item vectors that sessions are scored against."""
        return self.item_embedding.weight

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        return self.encode(item_seq, item_seq_len)

    def full_scores(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        """``[B, n_items]`` scores of every item for each session."""
        return self.encode(item_seq, item_seq_len) @ self.item_table().t()

    def _full_scores(self, interaction) -> Tensor:
        return self.full_scores(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])

    def calculate_loss(self, interaction) -> Tensor:
        logits = self._full_scores(interaction)
        pos_items = interaction[self.POS_ITEM_ID]
        if self.loss_type == "BPR":
            neg_items = interaction[self.NEG_ITEM_ID]
            pos_score = logits.gather(1, pos_items.unsqueeze(1)).squeeze(1)
            neg_score = logits.gather(1, neg_items.unsqueeze(1)).squeeze(1)
            return self.bpr_loss(pos_score, neg_score)
        return nn.functional.cross_entropy(logits, pos_items)

    def predict(self, interaction) -> Tensor:
        items = interaction[self.ITEM_ID]
        return self._full_scores(interaction).gather(1, items.unsqueeze(1)).squeeze(1)

    def full_sort_predict(self, interaction) -> Tensor:
        return self._full_scores(interaction)
