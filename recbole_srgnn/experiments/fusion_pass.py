"""Many fused rankings of one evaluation split in one pass over its batches.

Evaluating a grid of (scorer, alpha) points with one ``trainer.evaluate`` each runs the members
(the SR-GNN forward) and the scorer again for every point. :func:`evaluate_points` scores each
batch once instead: the members' mean softmax probabilities
(:meth:`~recbole_srgnn.model.fused.FusedRanker.probabilities`), each scorer :class:`Family`'s
shared scores once (e.g. the sequence rules without their repeat boost), each :class:`Setting`'s
scores from them once (e.g. one per repeat boost), then each point's fused scores with the
ranker's own arithmetic (:meth:`~recbole_srgnn.model.fused.FusedRanker.fuse`, into one reused
buffer). Each point's scores are then ranked as RecBole's full-sort evaluation ranks a model's
(``Trainer.evaluate``: the padding item 0 and any history at ``-inf``, ``torch.topk`` of the
largest ``topk``) and turned into RecBole's ``rec.topk`` rows (:func:`topk_rows`: what
``Collector.eval_batch_collect`` stores, without its ``[B, n_items]`` positive matrix per
point); the trainer's ``Evaluator`` computes each point's metrics from them (the config's
``metrics`` and ``topk``, rounded to ``metric_decimal_place``). The same scores reach the same
``torch.topk``, so the top-k positions, ties included, and the metrics are those of one
``trainer.evaluate`` per point. That holds for the metrics computed from ``rec.topk`` alone
(Hit, MRR, NDCG, Recall, Precision, MAP); :func:`supported` says when it applies.

Held at once: one batch's ``[B, n_items]`` probabilities, its family's shared scores, its
setting's scores and the fused buffer; across batches only each point's ``rec.topk`` rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

Scores = Callable[[Tensor, Tensor], Tensor]  # (item_seq, item_seq_len) -> [B, n_items]
Finish = Callable[[Tensor, Tensor, Tensor], Tensor]  # (shared scores, item_seq, item_seq_len) -> [B, n_items]
TOPK = "rec.topk"  # the one evaluation resource the pass collects


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
    """Whether :func:`evaluate_points` gives what ``trainer.evaluate`` gives on ``data``:
    full-sort ranking in one process, every metric computed from ``rec.topk`` alone."""
    from recbole.data.dataloader import FullSortEvalDataLoader
    from recbole.evaluator.register import metric_information
    from recbole.utils import EvaluatorType

    config = trainer.config
    needs = {need for metric in config["metrics"] for need in metric_information[metric.lower()]}
    return (isinstance(data, FullSortEvalDataLoader) and config["eval_type"] == EvaluatorType.RANKING
            and bool(config["single_spec"]) and needs == {TOPK})


def positives(positive_u: Tensor, positive_i: Tensor, n_items: int) -> tuple[Tensor, Tensor]:
    """A batch's (case row, item) positive pairs, each once (the ones of RecBole's positive
    matrix ``pos_matrix[positive_u, positive_i] = 1``)."""
    pairs = torch.unique(positive_u.long() * n_items + positive_i.long())
    return pairs // n_items, pairs % n_items


def topk_rows(scores: Tensor, k: int, rows: Tensor, items: Tensor) -> Tensor:
    """RecBole's ``rec.topk`` rows of a batch's ``scores`` ``[B, n_items]``: per case, whether
    each of its ``k`` best items (``torch.topk``, as ``Collector.eval_batch_collect``) is a
    positive (``rows``, ``items``: :func:`positives`), then its number of positives; the same
    values and dtype as the collector's, from ``[B, k]`` comparisons."""
    _, topk_idx = torch.topk(scores, k, dim=-1)
    hit = (topk_idx[rows] == items.unsqueeze(1)).int()  # at most one 1 per row: topk ids differ
    pos_idx = torch.zeros(topk_idx.shape, dtype=torch.int, device=scores.device).index_add_(
        0, rows, hit)
    pos_len = torch.bincount(rows, minlength=scores.shape[0]).unsqueeze(1)
    return torch.cat((pos_idx, pos_len), dim=1)


def _masked(scores: Tensor, history_index) -> Tensor:
    """``scores`` as RecBole's full-sort evaluation ranks a model's: padding and history out."""
    scores[:, 0] = -np.inf
    if history_index is not None:
        scores[history_index] = -np.inf
    return scores


def _metrics(trainer, parts: list[Tensor]) -> dict:
    from recbole.evaluator.collector import DataStruct

    struct = DataStruct()
    struct.set(TOPK, torch.cat(parts, dim=0).cpu())
    return trainer.evaluator.evaluate(struct)


@torch.no_grad()
def evaluate_points(trainer, ranker, families: Sequence[Family], data, count: int) -> list[dict]:
    """The metrics of ``count`` points (each point of ``families`` names its result index) of
    the members of ``ranker`` (a :class:`~recbole_srgnn.model.fused.FusedRanker`) on ``data``,
    as RecBole's ``evaluate`` returns them (where :func:`supported`), in one pass."""
    indices = sorted(i for family in families for s in family.settings for i, _ in s.points)
    if indices != list(range(count)):
        raise ValueError(f"the families' points must be numbered 0..{count - 1} once each")
    if any(family.scores is None and alpha for family in families
           for s in family.settings for _, alpha in s.points):
        raise ValueError("a point with alpha > 0 needs a scorer")
    parts: list[list[Tensor]] = [[] for _ in range(count)]
    n_items, k = data._dataset.item_num, max(trainer.config["topk"])
    first = ranker.members[0]
    ranker.eval()
    buffer = None
    for interaction, history_index, positive_u, positive_i in data:
        interaction = interaction.to(trainer.device)
        item_seq, item_seq_len = interaction[first.ITEM_SEQ], interaction[first.ITEM_SEQ_LEN]
        probs = ranker.probabilities(item_seq, item_seq_len).view(-1, n_items)
        if buffer is None or buffer.shape[0] < probs.shape[0]:
            buffer = torch.empty_like(probs)
        fused = buffer[:probs.shape[0]]
        rows, items = (t.to(probs.device) for t in positives(positive_u, positive_i, n_items))
        for family in families:
            shared = None if family.scores is None else family.scores(item_seq, item_seq_len)
            for setting in family.settings:
                scores = shared if setting.finish is None else setting.finish(shared, item_seq,
                                                                              item_seq_len)
                for index, alpha in setting.points:
                    if alpha:
                        ranker.fuse(probs, scores.view(-1, n_items), float(alpha), out=fused)
                    else:
                        fused.copy_(probs)
                    parts[index].append(topk_rows(_masked(fused, history_index), k, rows, items))
                del scores
            del shared
    return [_metrics(trainer, p) for p in parts]
