"""Sequence rules with a repeat boost: the non-neural baseline SR-GNN is measured against.

Sequential rules ("SR", Ludewig & Jannach, *Evaluation of session-based recommendation
algorithms*, 2018, https://arxiv.org/abs/1803.09587) count, over the training sessions, how often
item ``b`` is clicked ``g`` steps after item ``a`` (``1 <= g <= rule_steps``), each pair weighted
``1/g``. A session is scored from its last item's row of that table. On Retail Rocket a large
share of next clicks return to an item already in the session, so a *repeat boost* adds, for
every item of the prefix, ``repeat_boost / (1 + clicks since it was last seen)``:

.. math::
    \\mathrm{score}(i) = \\frac{R[x_n, i]}{\\max_j R[x_n, j]}
        + \\beta \\max_{t:\\,x_t = i} \\frac{1}{1 + n - t}
        + \\epsilon\\,\\frac{\\mathrm{pop}(i)}{\\max_j \\mathrm{pop}(j)}

where :math:`R[a, b] = \\sum 1/g` over training pairs, :math:`\\beta` = ``repeat_boost`` and
the tiny popularity term (:math:`\\epsilon = 10^{-3}`) only orders items the other terms leave at
zero. Nothing is learned: the table is built once from the training split the model is given,
so one (zero-loss) epoch is all the trainer has to run.
"""

from __future__ import annotations

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from torch import Tensor

from .nonneural import NonNeuralRecommender

from ..nn_scorers import POPULARITY_WEIGHT  # noqa: F401 (the formula's epsilon; tests read it here)
from ..nn_scorers import SequenceRules as SequenceRulesNetwork


def rule_table(item_seq: Tensor, item_seq_len: Tensor, target: Tensor, n_items: int,
               steps: int) -> tuple[Tensor, Tensor, Tensor]:
    """Sequence-rule weights from prefix -> target cases, as a CSR table ``[n_items, n_items]``.

    Each training case (prefix ``x_1..x_n`` -> target ``y``) contributes ``1/g`` to
    ``R[x_{n+1-g}, y]`` for ``g = 1..min(steps, n)``; with one case per position of every session
    this counts each pair of a session exactly once. Rows are scaled to a maximum of 1.
    Returns ``(crow_indices, col_indices, values)``.
    """
    lengths = item_seq_len.long()
    gaps = torch.arange(1, steps + 1, device=item_seq.device)
    valid = gaps.unsqueeze(0) <= lengths.unsqueeze(1)                      # [R, steps]
    pos = (lengths.unsqueeze(1) - gaps.unsqueeze(0)).clamp(min=0)          # position of x_{n+1-g}
    src = item_seq.gather(1, pos)[valid]
    dst = target.unsqueeze(1).expand_as(valid)[valid]
    weight = (1.0 / gaps.float()).unsqueeze(0).expand_as(valid)[valid]
    keep = (src > 0) & (dst > 0)
    src, dst, weight = src[keep], dst[keep], weight[keep]
    table = torch.sparse_coo_tensor(torch.stack([src, dst]), weight, (n_items, n_items),
                                    check_invariants=False).coalesce()  # ids < n_items by construction
    rows, cols = table.indices()
    values = table.values()
    row_max = torch.zeros(n_items, device=values.device).scatter_reduce(
        0, rows, values, reduce="amax", include_self=False)
    values = values / row_max[rows]
    crow = torch.zeros(n_items + 1, dtype=torch.long, device=values.device)
    crow[1:] = torch.bincount(rows, minlength=n_items).cumsum(0)
    return crow, cols, values


class RuleScorer(SequenceRulesNetwork):
    """The scores of the module docstring for a batch of sessions, from a fixed rule table.

    Built once from training cases (``item_seq``, ``item_seq_len``, ``target``: RecBole's
    pre-augmented prefix -> next-item rows); nothing in it is trained. The scoring is that of
    :class:`recbole_srgnn.nn_scorers.SequenceRules` (what a model bundle rebuilds), but here the
    tables are non-persistent buffers: they are rebuilt from the training split, never stored in
    a checkpoint, so a ranker (:class:`~recbole_srgnn.model.fused.FusedRanker`) can add this
    scorer to any saved model.
    """

    persistent = False

    def __init__(self, item_seq: Tensor, item_seq_len: Tensor, target: Tensor, n_items: int,
                 steps: int = 10, repeat_boost: float = 1.0) -> None:
        super().__init__(n_items, 0, steps, repeat_boost)  # checks the options
        crow, col, val = rule_table(item_seq, item_seq_len, target, n_items, self.steps)
        pop = torch.bincount(target, minlength=n_items)[:n_items].float()
        pop[0] = 0.0
        self.set_tables(crow, col, val, pop / pop.max().clamp(min=1.0))

    @classmethod
    def from_dataset(cls, model: SequentialRecommender, dataset, steps: int,
                     repeat_boost: float) -> "RuleScorer":
        """The scorer of ``model``'s training split (``dataset`` = RecBole's train dataset)."""
        feat = dataset.inter_feat
        item_seq = torch.as_tensor(feat[model.ITEM_SEQ]).long()
        item_seq_len = torch.as_tensor(feat[model.ITEM_SEQ_LEN]).long().reshape(-1)
        target = torch.as_tensor(feat[model.ITEM_ID]).long().reshape(-1)
        return cls(item_seq, item_seq_len, target, model.n_items, steps, repeat_boost)


class SequenceRules(NonNeuralRecommender):
    """Sequence rules from the last item + repeat boost + a popularity tie-breaker (see module)."""

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        steps, boost = config["rule_steps"], config["repeat_boost"]
        self.rule_steps = 10 if steps is None else int(steps)  # defaults: recbole_srgnn/properties/model/SequenceRules.yaml
        self.repeat_boost = 1.0 if boost is None else float(boost)  # as the YAML
        self.rules = RuleScorer.from_dataset(self, dataset, self.rule_steps, self.repeat_boost)

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        return self.rules(item_seq, item_seq_len)

