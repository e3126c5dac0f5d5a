"""What every session model here shares: an item table, full-catalogue scoring and the losses."""

from __future__ import annotations

import logging
import math

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.loss import BPRLoss
from torch import Tensor, nn

from .sampled_softmax import (
    NegativeSampler,
    estimated_softmax_loss,
    sampled_softmax_loss,
    target_counts,
)

DEFAULT_NUM_NEGATIVES = 2048  # as properties/model/SRGNN.yaml and LastItem.yaml
DEFAULT_SAMPLE_ALPHA = 0.75
SSM_CORRECTIONS = ("importance", "logq")  # the sampled softmax's estimators (sampled_softmax.py)
DEFAULT_SSM_CORRECTION = "importance"

class SessionScorer(SequentialRecommender):
    """Base class: a session encoder (``encode``) whose output is scored against every item.

    Subclasses implement :meth:`encode` (and may refine :meth:`full_scores`); this class
    provides RecBole's ``calculate_loss`` (cross-entropy over all items, or BPR when
    ``loss_type: BPR`` and negative sampling are configured), ``predict`` and
    ``full_sort_predict``, all derived from :meth:`full_scores` so they always agree.

    ``loss_type: SSM`` is the sampled softmax of :mod:`~recbole_srgnn.model.sampled_softmax`:
    training scores only the candidates (:meth:`candidate_scores`, never the full
    ``[B, n_items]`` matrix); evaluation still ranks the whole catalogue. A subclass that
    refines :meth:`full_scores` refines :meth:`candidate_scores` the same way.
    """

    loss_types = ("CE", "BPR", "SSM")  # what option_checks allows for these models

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        self.embedding_size = int(config["embedding_size"])
        self.loss_type = config["loss_type"] or "CE"
        if self.loss_type not in self.loss_types:
            raise ValueError(f"loss_type must be CE, BPR or SSM, got {self.loss_type!r}")
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size, padding_idx=0)
        self.bpr_loss = BPRLoss()
        self.sampler: NegativeSampler | None = None
        if self.loss_type == "SSM":
            self.num_negatives = self._clamped_negatives(config["num_negatives"])
            alpha = config["sample_alpha"]
            targets = torch.as_tensor(dataset.inter_feat[self.ITEM_ID])
            self.sampler = NegativeSampler(target_counts(targets, self.n_items),
                                           DEFAULT_SAMPLE_ALPHA if alpha is None else float(alpha))
            self.ssm_correction = str(config["ssm_correction"] or DEFAULT_SSM_CORRECTION).lower()
            if self.ssm_correction not in SSM_CORRECTIONS:
                raise ValueError(f"ssm_correction must be one of {', '.join(SSM_CORRECTIONS)}, "
                                 f"got {self.ssm_correction!r}")

    def _clamped_negatives(self, value) -> int:
        """``num_negatives``, clamped to the catalogue (``n_items - 1`` real items) with a note:
        the draws are with replacement, so more would only cost more than full cross-entropy."""
        wanted = DEFAULT_NUM_NEGATIVES if value is None else int(value)
        if wanted < 1:
            raise ValueError(f"num_negatives must be >= 1, got {wanted}")
        catalogue = self.n_items - 1
        if wanted > catalogue:
            logging.getLogger().info(f"num_negatives={wanted} is more than the {catalogue} items: "
                                     f"clamped to {catalogue}")
            return catalogue
        return wanted

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

    def candidate_scores(self, item_seq: Tensor, item_seq_len: Tensor, items: Tensor) -> Tensor:
        """``[B, C]`` scores of the items ``items`` (``[C]``, shared by the batch): the columns
        ``items`` of :meth:`full_scores`, computed from those items' rows alone."""
        return self.encode(item_seq, item_seq_len) @ self.item_table()[items].t()

    def _full_scores(self, interaction) -> Tensor:
        return self.full_scores(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])

    def sampled_softmax(self, interaction, negatives: Tensor | None = None) -> Tensor:
        """The SSM loss of a batch; ``negatives`` ``[N]`` as given, else ``num_negatives`` drawn
        (``ssm_correction`` picks the estimator, :mod:`~recbole_srgnn.model.sampled_softmax`)."""
        if self.sampler is None:
            raise ValueError("sampled_softmax needs loss_type SSM")
        targets = interaction[self.POS_ITEM_ID]
        if negatives is None:
            negatives = self.sampler.draw(self.num_negatives)
        candidates = torch.cat([targets, negatives.to(targets.device)])
        scores = self.candidate_scores(interaction[self.ITEM_SEQ],
                                       interaction[self.ITEM_SEQ_LEN], candidates)
        batch = targets.shape[0]
        positive = scores[:, :batch].diagonal()  # row i's in-batch column is its own target
        if self.ssm_correction == "logq":
            log_q = self.sampler.log_q(candidates, batch, negatives.shape[0])
            return sampled_softmax_loss(positive, scores, targets, candidates, log_q[:batch],
                                        log_q)
        log_count = self.sampler.log_expected_count(candidates, batch, negatives.shape[0])
        return estimated_softmax_loss(positive, scores, targets, candidates, log_count)

    def calculate_loss(self, interaction) -> Tensor:
        if self.loss_type == "SSM":
            return self.sampled_softmax(interaction)
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
