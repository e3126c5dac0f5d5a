"""The floor model: SR-GNN's training loop with the session encoder replaced by a lookup."""

from __future__ import annotations

import torch
from torch import Tensor

from .session import SessionScorer


class LastItem(SessionScorer):
    """Scores items by their dot product with the session's last item's embedding.

    It shares everything with :class:`~recbole_srgnn.model.SRGNN` except the session encoder,
    so its speed is the floor any session encoder is measured against: the time spent in data
    loading, the full-catalogue scoring and the optimiser step.
    """

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        self.reset_item_embedding()

    def encode(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        last = item_seq.gather(1, (item_seq_len.long() - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
        return self.item_embedding(last)
