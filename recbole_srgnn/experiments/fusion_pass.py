"""Many fused rankings of one evaluation split in one pass over its batches.

Evaluating a grid of (scorer, alpha) points with one ``trainer.evaluate`` each runs the members
(the SR-GNN forward) and the scorer again for every point. :func:`evaluate_points` scores each
batch once instead: the members' mean softmax probabilities
(:meth:`~recbole_srgnn.model.fused.FusedRanker.probabilities`), each scorer :class:`Family`'s
shared scores once (e.g. the sequence rules without their repeat boost), each :class:`Setting`'s
scores from them once (e.g. one per repeat boost), then each point's fused scores with the
ranker's own arithmetic (:meth:`~recbole_srgnn.model.fused.FusedRanker.fuse`). Every point's
scores are then treated as RecBole's full-sort evaluation treats a model's (``Trainer.evaluate``:
the padding item 0 and any history at ``-inf``) and handed to its own copy of the trainer's
``Collector``; at the end the trainer's ``Evaluator`` turns each into metrics (the config's
``metrics`` and ``topk``, rounded to ``metric_decimal_place``). The same tensors reach the same
RecBole code, so the top-k positions, ties included, and the metrics are those of one
``trainer.evaluate`` per point. Held at once: one batch's ``[B, n_items]`` probabilities, its
family's shared scores, its setting's scores and the point in hand's (with what the collector
needs for it); across batches only each point's collected top-k rows.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

Scores = Callable[[Tensor, Tensor], Tensor]  # (item_seq, item_seq_len) -> [B, n_items]
Finish = Callable[[Tensor, Tensor, Tensor], Tensor]  # (shared scores, item_seq, item_seq_len) -> [B, n_items]


@dataclass
class Setting:
    """One scorer setting: ``points``, its (result index, alpha) pairs, and ``finish``, which
    turns the family's shared scores into this setting's (None: they are this setting's)."""

    points: list[tuple[int, float]] = field(default_factory=list)
    finish: Finish | None = None


@dataclass
class Family:
    """Settings that share one scorer call per batch, ``scores`` (None: no scorer, the members
    alone; its points' alphas must then be 0)."""

    scores: Scores | None
    settings: list[Setting] = field(default_factory=list)


def supported(trainer, data) -> bool:
    """Whether ``data`` is evaluated the way :func:`evaluate_points` repeats: full-sort ranking
    in one process."""
    from recbole.data.dataloader import FullSortEvalDataLoader
    from recbole.utils import EvaluatorType

    config = trainer.config
    return (isinstance(data, FullSortEvalDataLoader) and config["eval_type"] == EvaluatorType.RANKING
            and bool(config["single_spec"]))


def _collector(kept):
    """A collector like the trainer's ``kept`` one (same settings, same data it was given) that
    gathers its own results."""
    collector = copy.copy(kept)
    collector.data_struct = copy.deepcopy(kept.data_struct)
    return collector


def _masked(scores: Tensor, n_items: int, history_index) -> Tensor:
    """``scores`` as RecBole's full-sort evaluation ranks a model's: padding and history out."""
    scores = scores.view(-1, n_items)
    scores[:, 0] = -np.inf
    if history_index is not None:
        scores[history_index] = -np.inf
    return scores


@torch.no_grad()
def evaluate_points(trainer, ranker, families: Sequence[Family], data, count: int) -> list[dict]:
    """The metrics of ``count`` points (each point of ``families`` names its result index) of
    the members of ``ranker`` (a :class:`~recbole_srgnn.model.fused.FusedRanker`) on ``data``,
    as RecBole's ``evaluate`` returns them, in one pass over the batches."""
    indices = sorted(i for family in families for s in family.settings for i, _ in s.points)
    if indices != list(range(count)):
        raise ValueError(f"the families' points must be numbered 0..{count - 1} once each")
    if any(family.scores is None and alpha for family in families
           for s in family.settings for _, alpha in s.points):
        raise ValueError("a point with alpha > 0 needs a scorer")
    collectors = [_collector(trainer.eval_collector) for _ in range(count)]
    n_items = data._dataset.item_num
    first = ranker.members[0]
    ranker.eval()
    for interaction, history_index, positive_u, positive_i in data:
        interaction = interaction.to(trainer.device)
        item_seq, item_seq_len = interaction[first.ITEM_SEQ], interaction[first.ITEM_SEQ_LEN]
        probs = ranker.probabilities(item_seq, item_seq_len)
        for family in families:
            shared = None if family.scores is None else family.scores(item_seq, item_seq_len)
            for setting in family.settings:
                scores = shared if setting.finish is None else setting.finish(shared, item_seq,
                                                                              item_seq_len)
                for index, alpha in setting.points:
                    fused = ranker.fuse(probs, scores, float(alpha)) if alpha else probs.clone()
                    collectors[index].eval_batch_collect(
                        _masked(fused, n_items, history_index), interaction, positive_u, positive_i)
                    del fused
                del scores
            del shared
    results = []
    for collector in collectors:
        collector.model_collect(ranker)
        results.append(trainer.evaluator.evaluate(collector.get_data_struct()))
    return results
