"""An evaluation-only ensemble of trained SR-GNN models (e.g. one per training seed), with rules.

Models trained with different seeds make partly independent mistakes; averaging their next-item
distributions is the classic way to use that (Dietterich, *Ensemble methods in machine learning*,
2000). With ``M`` members and the optional sequence rules of ``rule_fusion``:

.. math::
    \\mathrm{score}(i) = \\frac{1}{M} \\sum_{m=1}^{M} \\mathrm{softmax}(z^{(m)})_i
        + \\alpha\\, \\mathrm{rules}(s)_i

where :math:`z^{(m)}` are member ``m``'s network scores (:meth:`SRGNN.network_scores`). With one
member this is exactly that member's ``rule_fusion`` score. Nothing is trained here: the module
only ranks, so RecBole's evaluator can test it like any model (``trainer.evaluate`` after
:func:`evaluating`).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

from .rules import RuleScorer


class SeedEnsemble(nn.Module):
    """Mean of the members' softmax probabilities plus ``alpha`` times the rules' scores.

    ``members``: trained models with ``network_scores(item_seq, item_seq_len)`` over the same
    item ids (SRGNN). ``rules``: a :class:`RuleScorer` or None; ``alpha >= 0`` its weight.
    """

    def __init__(self, members: Sequence[nn.Module], rules: RuleScorer | None = None,
                 alpha: float = 0.0) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if alpha < 0 or (alpha and rules is None):
            raise ValueError("alpha must be >= 0, and > 0 only with rules")
        self.members = nn.ModuleList(members)
        self.rules = rules
        self.alpha = float(alpha)
        first = members[0]
        self.ITEM_SEQ, self.ITEM_SEQ_LEN = first.ITEM_SEQ, first.ITEM_SEQ_LEN

    @torch.no_grad()
    def full_scores(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        probs = None
        for member in self.members:
            p = torch.softmax(member.network_scores(item_seq, item_seq_len), dim=-1)
            probs = p if probs is None else probs.add_(p)
        probs = probs.div_(len(self.members))
        if self.alpha:
            probs = probs + self.alpha * self.rules(item_seq, item_seq_len)
        return probs

    def full_sort_predict(self, interaction) -> Tensor:
        return self.full_scores(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])

    def predict(self, interaction) -> Tensor:
        items = interaction[self.members[0].ITEM_ID]
        return self.full_sort_predict(interaction).gather(1, items.unsqueeze(1)).squeeze(1)


@contextlib.contextmanager
def evaluating(trainer, model: nn.Module) -> Iterator[None]:
    """Let ``trainer.evaluate`` rank with ``model`` (e.g. a :class:`SeedEnsemble`) for a while."""
    kept = trainer.model
    trainer.model = model
    try:
        yield
    finally:
        trainer.model = kept
