"""Session-based nearest neighbours (SKNN, V-SKNN, STAN, V-STAN) as one batched tensor scorer.

Plain torch (no RecBole): the RecBole models (:mod:`recbole_srgnn.model.knn_models`), the fusion
runner and model bundles (:class:`KnnNetwork`, the index as ``state_dict`` tensors) share it.

For a current session (prefix) ``x_1..x_L`` with distinct items ``Q`` and ``p(i)`` the last
(1-based) position of item ``i`` in it, and a training session ``n`` (distinct items ``I_n``,
``q_n(i)`` the last position of ``i`` in ``n``, see :mod:`recbole_srgnn.knn_index`):

* **weights of the current session's items** ``w(i)``: 1 (SKNN); ``p(i)/L`` (V-SKNN's linear
  "div" weights); ``exp((p(i) - L) / λ1)`` (STAN, V-STAN; ``λ1`` = ``lambda_spw``);
* **candidates**: the training sessions sharing at least one item with ``Q``, of which only the
  ``sample_size`` most recent are kept;
* **similarity** ``sim(s, n)``: ``cosine`` = ``Σ_{i∈Q∩I_n} w(i) / sqrt(Σ_{i∈Q} w(i)² · |I_n|)``
  (binary cosine for SKNN) or ``vec`` = ``Σ_{i∈Q∩I_n} w(i) / |Q|`` (V-SKNN's dot product);
  STAN and V-STAN multiply it by ``exp(-(T - t_n) / λ2)`` (``λ2`` = ``lambda_snh``, in days; ``T``
  is the latest training session's time, which orders neighbours and items exactly as the
  current session's own time would: that factor only differs by one constant per session);
* **neighbours** ``N``: the ``k`` candidates of highest similarity (ties: the more recent);
* **scores**: ``score(j) = Σ_{n∈N, j∈I_n} sim(s, n) · d(s, n) · e(n, j) · (1 + λ_idf · idf(j))``
  where ``p*`` is the last position in the current session of an item shared with ``n``:
  ``d = 1`` (SKNN, STAN), ``1 / (L - p* + 1)`` (V-SKNN's "div" neighbour weight) or
  ``exp((p* - L) / λ_ipw)`` (V-STAN); ``e(n, j) = exp(-|q_n(j) - q_n*| / λ3)`` for STAN and
  V-STAN (``λ3`` = ``lambda_inh``; ``q_n*`` = the last position in ``n`` of an item shared with
  the current session), 1 otherwise; ``idf(j) = log(#sessions / #sessions holding j)``.

Items of the current session are not excluded (session-rec's ``remind=True``). Scoring is
batched: the prefix items of a batch are expanded through the item -> session index (each item's
list is already cut to its ``sample_size`` most recent sessions, which keeps every session among
the union's ``sample_size`` most recent with all its shared items), grouped by (case, session)
with one sort, cut to the sample and the top ``k``, and the neighbours are expanded through the
session -> item index into the ``[B, n_items]`` scores. Cases are processed in chunks that bound
the number of expanded entries, so memory does not grow with the batch beyond its scores.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .knn_index import SessionIndex, build_index, group_starts, rank_in_group

SECONDS_PER_DAY = 86400.0
ITEM_WEIGHTS = ("same", "div", "exp")      # w(i): 1, p/L, exp((p - L)/λ1)
SIMILARITIES = ("cosine", "vec")
NEIGHBOUR_WEIGHTS = ("same", "div", "exp")  # d: 1, 1/(L - p* + 1), exp((p* - L)/λ_ipw)
CHUNK_ENTRIES = 1 << 22                     # expanded (case, session) entries per chunk


@dataclass(frozen=True)
class KnnOptions:
    """One kNN variant: the module docstring's choices and parameters (None = that decay off)."""

    k: int = 100
    sample_size: int = 500
    item_weight: str = "same"
    lambda_spw: float | None = None
    similarity: str = "cosine"
    lambda_snh: float | None = None
    neighbour_weight: str = "same"
    lambda_ipw: float | None = None
    lambda_inh: float | None = None
    lambda_idf: float = 0.0

    def check(self) -> None:
        """ValueError (one line) on a value out of range."""
        problems = []
        if not (isinstance(self.k, int) and self.k >= 1):
            problems.append(f"k must be an integer >= 1, got {self.k!r}")
        if not (isinstance(self.sample_size, int) and self.sample_size >= 1):
            problems.append(f"sample_size must be an integer >= 1, got {self.sample_size!r}")
        if self.item_weight not in ITEM_WEIGHTS or self.neighbour_weight not in NEIGHBOUR_WEIGHTS:
            problems.append("unknown item or neighbour weighting")
        if self.similarity not in SIMILARITIES:
            problems.append(f"similarity must be one of {', '.join(SIMILARITIES)}, "
                            f"got {self.similarity!r}")
        for name in ("lambda_spw", "lambda_snh", "lambda_ipw", "lambda_inh"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                problems.append(f"{name} must be a number > 0, got {value!r}")
        if self.item_weight == "exp" and self.lambda_spw is None:
            problems.append("lambda_spw is needed for exponential item weights")
        if self.neighbour_weight == "exp" and self.lambda_ipw is None:
            problems.append("lambda_ipw is needed for exponential neighbour weights")
        if not self.lambda_idf >= 0:
            problems.append(f"lambda_idf must be a number >= 0, got {self.lambda_idf!r}")
        if problems:
            raise ValueError(problems[0])


@dataclass
class Prefixes:
    """Distinct items of a batch of prefixes: case, item and last 1-based position per pair."""

    case: Tensor
    item: Tensor
    pos: Tensor
    length: Tensor  # [B] prefix lengths L


def prefix_items(item_seq: Tensor, item_seq_len: Tensor, n_items: int) -> Prefixes:
    """The distinct items of each (left-aligned, zero-padded) prefix with their last position."""
    batch, width = item_seq.shape
    length = item_seq_len.long().view(-1)
    positions = torch.arange(1, width + 1, device=item_seq.device).expand(batch, width)
    valid = (positions <= length.unsqueeze(1)) & (item_seq > 0)
    case = torch.arange(batch, device=item_seq.device).unsqueeze(1).expand(batch, width)[valid]
    item, pos = item_seq[valid].long(), positions[valid]
    key = case * n_items + item
    order = torch.sort(key, stable=True).indices  # positions stay ascending within a key
    key = key[order]
    last = torch.ones_like(key, dtype=torch.bool)
    last[:-1] = key[1:] != key[:-1]
    return Prefixes(case[order][last], item[order][last], pos[order][last], length)


def expand(ptr: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """For CSR offsets ``ptr`` and row numbers ``rows``: (which row of ``rows``, entry index) of
    every entry of those rows, in order."""
    start = ptr[rows]
    count = ptr[rows + 1] - start
    owner = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), count)
    offset = torch.arange(int(count.sum()), device=rows.device) - torch.repeat_interleave(
        count.cumsum(0) - count, count)
    return owner, start[owner] + offset


def ordered_sums(values: Tensor, group: Tensor, n_groups: int) -> Tensor:
    """Per-group sums of ``values`` (``group`` sorted), each added in its order within the group.

    One scatter per rank within the groups (at most the number of distinct prefix items): the
    same values in the same order give the same bits on every device, so sessions sharing the
    same items with a case tie exactly and the tie-break (recency) decides, as in the formulas.
    """
    sums = torch.zeros(n_groups, dtype=values.dtype, device=values.device)
    rank = rank_in_group(group)
    order = torch.sort(rank, stable=True).indices
    bounds = torch.bincount(rank).cumsum(0).tolist()
    for start, end in zip([0, *bounds[:-1]], bounds):
        level = order[start:end]  # one entry per group at this rank: no colliding adds
        sums[group[level]] += values[level]
    return sums


class KnnScorer(nn.Module):
    """The scores of the module docstring for batches of prefixes, from a fixed session index.

    Built once from the training cases; its index tensors are non-persistent buffers (rebuilt
    from the training split, never stored in a checkpoint) so that ``.to(device)`` moves them.
    """

    persistent = False  # KnnNetwork: True (the index is a bundle's weights)

    def __init__(self, index: SessionIndex, n_items: int, options: KnnOptions) -> None:
        super().__init__()
        options.check()
        self.options, self.n_items = options, n_items
        self.fields = [field.name for field in dataclasses.fields(SessionIndex)]
        for name in self.fields:
            self.register_buffer(name, getattr(index, name), persistent=self.persistent)

    @classmethod
    def from_cases(cls, session: Tensor, item_seq: Tensor, item_seq_len: Tensor, target: Tensor,
                   time: Tensor | None, n_items: int, options: KnnOptions) -> "KnnScorer":
        options.check()  # before any work
        index = build_index(session, item_seq, item_seq_len, target, time, n_items,
                            options.sample_size)
        return cls(index, n_items, options)

    @property
    def index(self) -> SessionIndex:
        return SessionIndex(**{name: getattr(self, name) for name in self.fields})

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        """``[B, L]`` padded prefixes and ``[B]`` lengths -> ``[B, n_items]`` float32 scores."""
        scores = torch.zeros(item_seq.shape[0], self.n_items, device=item_seq.device)
        if item_seq.shape[0] == 0:
            return scores
        prefixes = prefix_items(item_seq, item_seq_len, self.n_items)
        per_case = torch.zeros(item_seq.shape[0], dtype=torch.long, device=item_seq.device)
        per_case.index_add_(0, prefixes.case,
                            self.item_ptr[prefixes.item + 1] - self.item_ptr[prefixes.item])
        cost = per_case + self.options.k * 8  # + the neighbours' items, roughly
        chunk = (cost.cumsum(0) - cost) // CHUNK_ENTRIES
        bounds = [0, *(torch.nonzero(chunk.diff()).view(-1) + 1).tolist(), len(chunk)]
        for start, end in zip(bounds[:-1], bounds[1:]):  # one call per chunk of cases
            self.score_chunk(item_seq[start:end], item_seq_len[start:end], scores[start:end])
        return scores

    def score_chunk(self, item_seq: Tensor, item_seq_len: Tensor, out: Tensor) -> None:
        """Add the scores of one chunk of prefixes into ``out`` (``[b, n_items]``)."""
        opt, index = self.options, self.index
        batch = item_seq.shape[0]
        pre = prefix_items(item_seq, item_seq_len, self.n_items)
        length = pre.length.double()
        p = pre.pos.double()
        if opt.item_weight == "div":
            w = p / length[pre.case]
        elif opt.item_weight == "exp":
            w = torch.exp((p - length[pre.case]) / opt.lambda_spw)
        else:
            w = torch.ones_like(p)
        # every (case, candidate session) pair through the truncated item -> session lists
        owner, entry = expand(index.item_ptr, pre.item)
        if entry.numel() == 0:
            return
        n_sess = index.n_sessions
        key = pre.case[owner] * n_sess + index.item_sess[entry]
        key, order = torch.sort(key, stable=True)  # pairs keep their (item) order in a group
        owner, entry = owner[order], entry[order]
        group = torch.cumsum(group_starts(key).long(), 0) - 1
        n_groups = int(group[-1]) + 1
        g_key = torch.zeros(n_groups, dtype=torch.long, device=key.device).scatter_(0, group, key)
        g_case, g_sess = g_key // n_sess, g_key % n_sess
        dot = ordered_sums(w[owner], group, n_groups)
        p_star = torch.zeros(n_groups, dtype=torch.float64, device=key.device).scatter_reduce(
            0, group, p[owner], reduce="amax", include_self=False)
        q_star = torch.zeros(n_groups, dtype=torch.long, device=key.device).scatter_reduce(
            0, group, index.item_pos[entry], reduce="amax", include_self=False)
        # the sample_size most recent candidates of each case (groups run by session ascending)
        per_case = torch.bincount(g_case, minlength=batch)
        from_end = per_case.cumsum(0)[g_case] - 1 - torch.arange(n_groups, device=key.device)
        keep = from_end < opt.sample_size
        g_case, g_sess, dot, p_star, q_star = (
            t[keep] for t in (g_case, g_sess, dot, p_star, q_star))
        if opt.similarity == "cosine":
            norm = torch.zeros(batch, dtype=torch.float64, device=key.device).index_add_(
                0, pre.case, w * w).sqrt()
            sim = dot / (norm[g_case] * index.sess_size[g_sess].double().sqrt())
        else:
            distinct = torch.bincount(pre.case, minlength=batch).double()
            sim = dot / distinct[g_case]
        if opt.lambda_snh is not None:
            sim = sim * torch.exp(-index.sess_age[g_sess] / (opt.lambda_snh * SECONDS_PER_DAY))
        # the k most similar (ties: more recent first): (case asc, sim desc, session desc)
        order = torch.arange(sim.numel() - 1, -1, -1, device=key.device)
        order = order[torch.sort(sim[order], descending=True, stable=True).indices]
        order = order[torch.sort(g_case[order], stable=True).indices]
        order = order[rank_in_group(g_case[order]) < opt.k]
        g_case, g_sess, sim, p_star, q_star = (
            t[order] for t in (g_case, g_sess, sim, p_star, q_star))
        weight = sim
        gap = length[g_case] - p_star  # L - p*
        if opt.neighbour_weight == "div":
            weight = weight / (gap + 1.0)
        elif opt.neighbour_weight == "exp":
            weight = weight * torch.exp(-gap / opt.lambda_ipw)
        # the neighbours' items
        owner, entry = expand(index.sess_ptr, g_sess)
        items = index.sess_item[entry]
        contribution = weight[owner]
        if opt.lambda_inh is not None:
            distance = (index.sess_pos[entry] - q_star[owner]).abs().double()
            contribution = contribution * torch.exp(-distance / opt.lambda_inh)
        if opt.lambda_idf > 0:
            contribution = contribution * (1.0 + opt.lambda_idf * index.idf[items])
        out.index_put_((g_case[owner], items), contribution.float(), accumulate=True)


class KnnNetwork(KnnScorer):
    """A :class:`KnnScorer` whose index is its ``state_dict`` (a model bundle's scorer).

    The constructor arguments (:meth:`options_of` of a built scorer) are the options and the
    index's sizes, so loading fills zero tensors of the right shapes and needs no dataset.
    """

    persistent = True

    def __init__(self, n_items: int, n_sessions: int, n_session_items: int, n_item_sessions: int,
                 **options) -> None:
        if min(n_sessions, n_session_items, n_item_sessions) < 0 or n_items < 2:
            raise ValueError("n_items must be >= 2 and the index sizes >= 0")
        long, real = torch.long, torch.float64
        index = SessionIndex(
            sess_ptr=torch.zeros(n_sessions + 1, dtype=long),
            sess_item=torch.zeros(n_session_items, dtype=long),
            sess_pos=torch.zeros(n_session_items, dtype=long),
            sess_size=torch.zeros(n_sessions, dtype=long),
            sess_age=torch.zeros(n_sessions, dtype=real),
            item_ptr=torch.zeros(n_items + 1, dtype=long),
            item_sess=torch.zeros(n_item_sessions, dtype=long),
            item_pos=torch.zeros(n_item_sessions, dtype=long),
            idf=torch.zeros(n_items, dtype=real))
        super().__init__(index, int(n_items), KnnOptions(**options))

    @staticmethod
    def options_of(scorer: KnnScorer) -> dict:
        """The constructor arguments of the network that scores as ``scorer`` does."""
        return {"n_items": int(scorer.n_items), "n_sessions": int(scorer.sess_size.numel()),
                "n_session_items": int(scorer.sess_item.numel()),
                "n_item_sessions": int(scorer.item_sess.numel()),
                **dataclasses.asdict(scorer.options)}

    @staticmethod
    def tensors_of(scorer: KnnScorer) -> dict[str, Tensor]:
        """``scorer``'s index tensors by their ``state_dict`` names."""
        return {name: getattr(scorer, name) for name in scorer.fields}
