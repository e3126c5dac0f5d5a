"""Popularity baseline for session data: rank items by how often they are a training target.

RecBole's ``Pop`` is a *general* recommender: with our pre-augmented benchmark files RecBole gives
it a general (non-sequential) data pipeline whose full-sort evaluation groups the test cases by
session and counts a hit when *any* of the session's targets is ranked (measured: 52 test cases
evaluated as 15 sessions). Its numbers are therefore not comparable with the sequential models.
``SessionPop`` is a :class:`SequentialRecommender`, so it goes through exactly the same data
loaders and case-by-case evaluation as SR-GNN, GRU4Rec and NARM.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .nonneural import NonNeuralRecommender


class SessionPop(NonNeuralRecommender):
    """Scores every item by its frequency as the target of a training case (ignores the session).

    The counts are taken once, from the training split the model is built with (RecBole hands
    ``train_data.dataset`` to the constructor), and kept in a buffer so that checkpoints carry
    them. Nothing is learned: ``calculate_loss`` returns a zero loss on a dummy parameter (the
    trainer needs one to step), so one epoch is enough.
    """

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        targets = torch.as_tensor(dataset.inter_feat[self.ITEM_ID]).long().reshape(-1)
        counts = torch.bincount(targets, minlength=self.n_items)[: self.n_items].float()
        counts[0] = 0.0  # padding id
        self.register_buffer("item_count", counts)

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        return self.item_count.unsqueeze(0).expand(item_seq.shape[0], -1)

    def predict(self, interaction) -> Tensor:
        return self.item_count[interaction[self.ITEM_ID]]

    def full_sort_predict(self, interaction) -> Tensor:
        # A fresh tensor: RecBole writes -inf into column 0 of the scores in place.
        return self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]).clone()
