"""Per-case analysis of a kept fusion model: each case's target rank under several rankers.

Issue 30 asks, when "SR-GNN + one scorer" misses its target, *which cases* each model wins. Here
one pass over a split's batches ranks every case under several :class:`Blend` s (the kept
model alone, the model plus a scorer at a weight, a scorer alone), computing the model's
softmax and each scorer's scores once per batch; the cases' features (repeat or new target,
prefix length, the target's clicks in the training split) come from the same batches. The
ranks then give every metric of any group of cases (:func:`group_rows`), who wins where, and
upper bounds: the per-case oracle of two rankers (:func:`oracle`), a gate that picks one ranker
per group of cases (:func:`gated`), the cases no ranker can reach.

A rank is counted as RecBole's evaluator does: padding item 0 is never ranked, and inside
the evaluator's ``torch.topk`` (``k`` = the largest ``topk``) the target's position is its rank,
ties in the order ``topk`` returns them, so the metrics equal the evaluator's; beyond ``k``, a
target is ranked after every other item that scores at least as high. A blend's scores are
computed with the same operations as :class:`~recbole_srgnn.model.fused.FusedRanker`, so
the model alone and the fusion reproduce the fusion runner's records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

K = 10  # the analysis' metrics: Hit@10 and MRR@10
LENGTHS = ((1, 1), (2, 2), (3, 4), (5, 9), (10, None))      # prefix length buckets
CLICKS = ((0, 0), (1, 4), (5, 19), (20, 99), (100, None))   # training clicks of the target
NEW, REPEAT_LAST, REPEAT_EARLIER = "new", "repeat: the last click", "repeat: an earlier click"


@dataclass(frozen=True)
class Blend:
    """One ranker: the kept model's softmax (``model``) plus ``weight`` times scorer ``scorer``'s
    scores (the rules at repeat boost ``boost``; ``normalised``: divided by their row maximum).
    Without a model the scorer ranks alone (``weight`` 1)."""

    label: str
    model: bool = True
    scorer: str | None = None
    weight: float = 1.0
    boost: float | None = None
    normalised: bool = False

    def __post_init__(self) -> None:
        if not self.model and self.scorer is None:
            raise ValueError(f"blend {self.label!r} ranks with nothing")


@dataclass
class Cases:
    """A split's cases: each blend's ranks (``[N]``, 1 = best) and the cases' features."""

    ranks: dict[str, Tensor]
    target: Tensor         # the next item
    length: Tensor         # prefix length (as the model sees it: at most the longest prefix kept)
    kind: list[str]        # NEW, REPEAT_LAST or REPEAT_EARLIER
    clicks: Tensor         # the target's clicks in the training split
    reached: Tensor | None = None  # the target scores > 0 under the reach scorer (e.g. SKNN)
    order: list[str] = field(default_factory=list)  # the blends, in the order given

    @property
    def size(self) -> int:
        return int(self.target.numel())

    @property
    def repeat(self) -> Tensor:
        return torch.tensor([k != NEW for k in self.kind], dtype=torch.bool)


def target_ranks(scores: Tensor, target: Tensor, k: int, full: bool = True) -> Tensor:
    """The 1-based rank of ``target[b]`` in row ``b`` of ``scores`` (``[B, n_items]``, changed in
    place: item 0 set to -inf), counted as the module docstring says; without ``full`` every
    target beyond the top ``k`` gets rank ``k + 1`` (enough for any metric at ``k`` or less, and
    one pass over the scores fewer)."""
    scores[:, 0] = -np.inf
    top = torch.topk(scores, k, dim=-1).indices
    found = top == target.unsqueeze(1)
    inside = found.any(dim=1)
    position = found.int().argmax(dim=1) + 1
    if not full:
        return torch.where(inside, position, torch.full_like(position, k + 1)).long()
    own = scores.gather(1, target.unsqueeze(1))
    # itself + every other item scoring at least as high
    beyond = (scores >= own).sum(dim=1, dtype=torch.int32).clamp(min=k + 1)
    return torch.where(inside, position, beyond).long()


def training_clicks(item_seq: Tensor, item_seq_len: Tensor, target: Tensor,
                    n_items: int) -> Tensor:
    """Clicks per item id in a training split of pre-augmented cases: each case's target, plus
    the first click of each session (the prefix of its length-1 case)."""
    clicks = torch.bincount(target.long(), minlength=n_items)[:n_items]
    first = item_seq[:, 0][item_seq_len.long().view(-1) == 1].long()
    return clicks + torch.bincount(first, minlength=n_items)[:n_items]


def target_kind(item_seq: Tensor, item_seq_len: Tensor, target: Tensor) -> list[str]:
    """NEW, REPEAT_LAST (the target is the prefix's last click) or REPEAT_EARLIER per case."""
    lengths = item_seq_len.long().view(-1)
    valid = torch.arange(item_seq.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
    seen = ((item_seq == target.unsqueeze(1)) & valid).any(dim=1)
    last = item_seq.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1) == target
    return [REPEAT_LAST if l else REPEAT_EARLIER if s else NEW
            for s, l in zip(seen.tolist(), last.tolist())]


class _Scores:
    """One batch's model softmax and scorer scores, each computed once, on first use."""

    def __init__(self, model: nn.Module, scorers: Mapping[str, nn.Module], item_seq: Tensor,
                 item_seq_len: Tensor) -> None:
        self.model, self.scorers = model, scorers
        self.item_seq, self.item_seq_len = item_seq, item_seq_len
        self.cache: dict = {}

    def probabilities(self) -> Tensor:
        if "model" not in self.cache:  # FusedRanker's: softmax, divided by its one member
            probs = torch.softmax(self.model.full_scores(self.item_seq, self.item_seq_len), dim=-1)
            self.cache["model"] = probs.div_(1)
        return self.cache["model"]

    def scorer(self, name: str, boost: float | None, normalised: bool) -> Tensor:
        key = (name, boost, normalised)
        if key not in self.cache:
            if normalised:
                raw = self.scorer(name, boost, False)
                top = raw.max(dim=1, keepdim=True).values
                self.cache[key] = raw / torch.where(top > 0, top, torch.ones_like(top))
            else:
                module = self.scorers[name]
                kept = getattr(module, "repeat_boost", None)
                if boost is not None:
                    module.repeat_boost = boost
                try:
                    self.cache[key] = module(self.item_seq, self.item_seq_len)
                finally:
                    if boost is not None:
                        module.repeat_boost = kept
        return self.cache[key]

    def of(self, blend: Blend, out: Tensor) -> Tensor:
        """The blend's scores, written into ``out`` (ranking changes them; the cached parts stay
        as they are): the operations of ``FusedRanker``, so the same floats."""
        if blend.scorer is None:
            return out.copy_(self.probabilities())
        part = self.scorer(blend.scorer, blend.boost, blend.normalised)
        torch.mul(part, blend.weight, out=out)
        return out.add_(self.probabilities()) if blend.model else out


@torch.no_grad()
def collect(model: nn.Module, scorers: Mapping[str, nn.Module], data: Iterable,
            blends: Sequence[Blend], clicks: Tensor, k: int,
            reach: str | None = None, full: bool = True,
            progress: Callable[[int], None] | None = None) -> Cases:
    """Rank every case of ``data`` (a RecBole full-sort evaluation loader) under each blend.

    ``model``: the kept model (``full_scores``, ``ITEM_SEQ``, ``ITEM_SEQ_LEN``); ``scorers``: the
    blends' scorers by name; ``clicks``: :func:`training_clicks`; ``k``: the evaluator's largest
    ``topk``; ``reach``: a scorer whose positive score of the target marks it "reached";
    ``full``: rank the targets beyond the top ``k`` too (:func:`target_ranks`); ``progress``:
    called with the number of cases ranked so far after each batch."""
    labels = [b.label for b in blends]
    if len(set(labels)) != len(labels):
        raise ValueError("blend labels must be distinct")
    model.eval()
    for scorer in scorers.values():
        scorer.eval()
    device = next(model.parameters()).device
    ranks: dict[str, list[Tensor]] = {label: [] for label in labels}
    out: Tensor | None = None  # one score buffer, reused by every blend and batch
    parts: dict[str, list] = {"target": [], "length": [], "kind": [], "reached": []}
    for interaction, _, _, positive_i in data:
        item_seq = interaction[model.ITEM_SEQ].to(device)
        item_seq_len = interaction[model.ITEM_SEQ_LEN].to(device)
        target = positive_i.to(device).long()
        scores = _Scores(model, scorers, item_seq, item_seq_len)
        if out is None or out.shape[0] != len(target):
            out = torch.empty(len(target), model.n_items, device=device)
        for blend in blends:
            ranks[blend.label].append(target_ranks(scores.of(blend, out), target, k, full).cpu())
        if reach is not None:
            own = scores.scorer(reach, None, False).gather(1, target.unsqueeze(1)).squeeze(1)
            parts["reached"].append((own > 0).cpu())
        parts["target"].append(target.cpu())
        parts["length"].append(item_seq_len.long().view(-1).cpu())
        parts["kind"] += target_kind(item_seq.cpu(), item_seq_len.cpu(), target.cpu())
        if progress is not None:
            progress(len(parts["kind"]))
    target = torch.cat(parts["target"])
    return Cases(ranks={label: torch.cat(r) for label, r in ranks.items()}, target=target,
                 length=torch.cat(parts["length"]), kind=parts["kind"],
                 clicks=clicks[target], order=labels,
                 reached=torch.cat(parts["reached"]) if reach is not None else None)


# --------------------------------------------------------------------------- metrics and groups
def metrics(ranks: Tensor, ks: Sequence[int], digits: int = 4) -> dict[str, float]:
    """RecBole's Hit@k, MRR@k and NDCG@k (one target per case) from ranks, rounded as it does."""
    r = ranks.double().numpy()
    out = {}
    for k in ks:
        inside = r <= k
        out[f"hit@{k}"] = round(float(inside.mean()), digits)
        out[f"mrr@{k}"] = round(float(np.where(inside, 1.0 / r, 0.0).mean()), digits)
        dcg = np.where(inside, 1.0 / np.log2(r + 1.0), 0.0)
        out[f"ndcg@{k}"] = round(float(dcg.mean()), digits)
    return out


def hit_mrr(ranks: Tensor, k: int = K) -> tuple[float, float]:
    """Unrounded Hit@k and MRR@k of ``ranks`` (NaN for no cases)."""
    if ranks.numel() == 0:
        return float("nan"), float("nan")
    r = ranks.double()
    inside = r <= k
    return float(inside.double().mean()), float(torch.where(inside, 1.0 / r, 0.0).mean())


def _bucket(value: int, bounds: Sequence[tuple[int, int | None]]) -> str:
    for low, high in bounds:
        if value >= low and (high is None or value <= high):
            return bucket_name(low, high)
    raise ValueError(f"{value} is in no bucket")


def bucket_name(low: int, high: int | None) -> str:
    return f"{low}+" if high is None else str(low) if low == high else f"{low}-{high}"


def groupings(cases: Cases) -> dict[str, list[tuple[str, Tensor]]]:
    """Each grouping's (bucket, mask) pairs, buckets in a fixed order (empty ones kept)."""
    kinds = np.array(cases.kind)
    found: dict[str, list[tuple[str, Tensor]]] = {
        "all": [("all", torch.ones(cases.size, dtype=torch.bool))],
        "target": [(kind, torch.from_numpy(kinds == kind))
                   for kind in (NEW, REPEAT_LAST, REPEAT_EARLIER)],
        "repeat": [("new", ~cases.repeat), ("repeat", cases.repeat)],
    }
    lengths = [_bucket(int(v), LENGTHS) for v in cases.length.tolist()]
    found["prefix length"] = [(name, torch.tensor([b == name for b in lengths], dtype=torch.bool))
                              for name in (bucket_name(*b) for b in LENGTHS)]
    clicks = [_bucket(int(v), CLICKS) for v in cases.clicks.tolist()]
    found["training clicks of the target"] = [
        (name, torch.tensor([b == name for b in clicks], dtype=torch.bool))
        for name in (bucket_name(*b) for b in CLICKS)]
    if cases.reached is not None:
        found["target in the kNN neighbours"] = [("yes", cases.reached), ("no", ~cases.reached)]
    return found


def group_rows(cases: Cases, rankers: Sequence[str], reference: str,
               k: int = K) -> list[dict]:
    """Per grouping, bucket and ranker: cases, share, Hit@k, MRR@k, and against ``reference``
    the shares of the bucket's cases where either ranks the target strictly better (``ref_better``,
    ``better``) or only one has it in its top k (``ref_only_top``, ``only_top``)."""
    rows = []
    ref = cases.ranks[reference]
    for grouping, buckets in groupings(cases).items():
        for bucket, mask in buckets:
            n = int(mask.sum())
            for ranker in rankers:
                ranks = cases.ranks[ranker][mask]
                hit, mrr = hit_mrr(ranks, k)
                row = {"grouping": grouping, "bucket": bucket, "cases": n,
                       "share": n / cases.size, "ranker": ranker,
                       f"hit@{k}": hit, f"mrr@{k}": mrr}
                if ranker != reference and n:
                    other = ref[mask]
                    row.update(ref_better=float((other < ranks).double().mean()),
                               better=float((ranks < other).double().mean()),
                               ref_only_top=float(((other <= k) & (ranks > k)).double().mean()),
                               only_top=float(((ranks <= k) & (other > k)).double().mean()))
                rows.append(row)
    return rows


# ---------------------------------------------------------------------------------- upper bounds
def oracle(*ranks: Tensor) -> Tensor:
    """Per case the best of several rankers' ranks: the most any gate between them could give."""
    best = ranks[0]
    for other in ranks[1:]:
        best = torch.minimum(best, other)
    return best


def best_per_bucket(cases: Cases, rankers: Sequence[str], buckets: Sequence[tuple[str, Tensor]],
                    metric: str, k: int = K) -> dict[str, str]:
    """For each bucket the ranker with the highest ``metric`` (``hit`` or ``mrr``) on its cases;
    of equals the first in ``rankers``."""
    index = 0 if metric == "hit" else 1
    chosen = {}
    for bucket, mask in buckets:
        values = [hit_mrr(cases.ranks[r][mask], k)[index] for r in rankers]
        values = [-1.0 if v != v else v for v in values]  # NaN (no cases): any ranker
        chosen[bucket] = rankers[int(np.argmax(values))]
    return chosen


def gated(cases: Cases, buckets: Sequence[tuple[str, Tensor]], choice: Mapping[str, str]) -> Tensor:
    """The ranks of a gate that ranks each bucket's cases with ``choice[bucket]``."""
    ranks = torch.zeros(cases.size, dtype=torch.long)
    covered = torch.zeros(cases.size, dtype=torch.bool)
    for bucket, mask in buckets:
        ranks[mask] = cases.ranks[choice[bucket]][mask]
        covered |= mask
    if not bool(covered.all()):
        raise ValueError("the buckets do not cover every case")
    return ranks


def unreachable(cases: Cases, k: int = K) -> dict[str, float]:
    """The targets never clicked in training: their share, the share of those that are not a
    repeat either (no model of the training split can rank them but by chance), and the Hit@k
    ceiling that leaves."""
    never = cases.clicks == 0
    lost = never & ~cases.repeat
    return {"never_in_training": float(never.double().mean()),
            "never_in_training_and_new": float(lost.double().mean()),
            f"hit@{k}_ceiling": float(1.0 - lost.double().mean())}
