"""The evaluation-time ranker of trained models plus a non-neural scorer: "SR-GNN + rules".

One formula serves one trained model with the sequence rules ("SR-GNN + rules") and several,
e.g. one per training seed (an ensemble: models trained with different seeds make partly
independent mistakes, and averaging their next-item distributions is the classic way to use
that; Dietterich, *Ensemble methods in machine learning*, 2000). With ``M`` members and a
scorer weighted by ``alpha``:

.. math::
    \\mathrm{score}(i) = \\frac{1}{M} \\sum_{m=1}^{M} \\mathrm{softmax}(z^{(m)})_i
        + \\alpha\\, \\mathrm{scorer}(s)_i

where :math:`z^{(m)}` are member ``m``'s scores of every item (``full_scores``) and the scorer
is e.g. the :class:`~recbole_srgnn.model.rules.RuleScorer` of the training split. Nothing is
trained here and the members stay plain models: the module only ranks, so RecBole's evaluator
can test it like any model (``trainer.evaluate`` inside :func:`evaluating`).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn


class FusedRanker(nn.Module):
    """Mean of the members' softmax probabilities plus ``alpha`` times the scorer's scores.

    ``members``: trained models with ``full_scores(item_seq, item_seq_len)`` over the same item
    ids (:class:`~recbole_srgnn.model.session.SessionScorer`). ``scorer``: a module mapping
    ``(item_seq, item_seq_len)`` to ``[B, n_items]`` scores, or None; ``alpha >= 0`` its weight
    (an attribute: a sweep may change it between evaluations).
    """

    def __init__(self, members: Sequence[nn.Module], scorer: nn.Module | None = None,
                 alpha: float = 0.0) -> None:
        super().__init__()
        if not members:
            raise ValueError("a ranker needs at least one member")
        if alpha < 0 or (alpha and scorer is None):
            raise ValueError("alpha must be >= 0, and > 0 only with a scorer (the rules)")
        self.members = nn.ModuleList(members)
        self.scorer = scorer
        self.alpha = float(alpha)
        first = members[0]
        self.ITEM_SEQ, self.ITEM_SEQ_LEN, self.ITEM_ID = first.ITEM_SEQ, first.ITEM_SEQ_LEN, first.ITEM_ID

    @torch.no_grad()
    def full_scores(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        probs = self.probabilities(item_seq, item_seq_len)
        if not self.alpha:
            return probs
        return self.fuse(probs, self.scorer(item_seq, item_seq_len), self.alpha)

    @torch.no_grad()
    def probabilities(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        """The members' mean softmax probabilities ``[B, n_items]`` (the formula's first term)."""
        probs = None
        for member in self.members:
            p = torch.softmax(member.full_scores(item_seq, item_seq_len), dim=-1)
            probs = p if probs is None else probs.add_(p)
        return probs.div_(len(self.members))

    @staticmethod
    def fuse(probs: Tensor, scores: Tensor, alpha: float, out: Tensor | None = None) -> Tensor:
        """``probs + alpha * scores`` (the formula with ``alpha > 0``): a new tensor, or written
        into ``out`` (same shape) with the same rounding (the same product, then the sum, which
        is commutative); one place for the arithmetic, so a sweep that scores a batch once ranks
        exactly alike."""
        if out is None:
            return probs + alpha * scores
        return torch.mul(scores, alpha, out=out).add_(probs)

    def full_sort_predict(self, interaction) -> Tensor:
        return self.full_scores(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])

    def predict(self, interaction) -> Tensor:
        items = interaction[self.ITEM_ID]
        return self.full_sort_predict(interaction).gather(1, items.unsqueeze(1)).squeeze(1)


@contextlib.contextmanager
def evaluating(trainer, model: nn.Module) -> Iterator[None]:
    """Let ``trainer.evaluate`` rank with ``model`` (e.g. a :class:`FusedRanker`) for a while."""
    kept = trainer.model
    trainer.model = model
    try:
        yield
    finally:
        trainer.model = kept
