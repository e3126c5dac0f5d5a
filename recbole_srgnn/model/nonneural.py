"""``NonNeuralRecommender``: the RecBole side of a model that learns nothing.

Sequence rules, the session-kNN models and the popularity baseline build their scoring tables
once from the training split RecBole hands the constructor, and then only score. RecBole's
trainer still needs a parameter to step and a loss to back-propagate: this base class gives them
a dummy parameter and a zero loss (so one epoch is all they run), and answers ``predict`` and
``full_sort_predict`` from ``forward(item_seq, item_seq_len) -> [B, n_items]`` scores, which each
model implements.
"""

from __future__ import annotations

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from torch import Tensor, nn


class NonNeuralRecommender(SequentialRecommender):
    """A scorer built from the training split: zero loss, scores from ``forward``."""

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        self.dummy = nn.Parameter(torch.zeros(1))  # the trainer needs a parameter to step

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        raise NotImplementedError

    def calculate_loss(self, interaction) -> Tensor:
        return (self.dummy * 0.0).sum()

    def predict(self, interaction) -> Tensor:
        scores = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return scores.gather(1, interaction[self.ITEM_ID].unsqueeze(1)).squeeze(1)

    def full_sort_predict(self, interaction) -> Tensor:
        return self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
