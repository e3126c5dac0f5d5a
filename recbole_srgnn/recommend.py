"""``Recommender``: next-item recommendations for live sessions from a model bundle.

    from recbole_srgnn import Recommender
    rec = Recommender.load("bundles/srgnn", device="cpu")
    result = rec.recommend(["355", "1021", "77"], k=10)   # a Recommendation
    result.pairs()        # [(item, score), ...] best first, items as the dataset's tokens
    result.unknown_items  # session items the model does not know (dropped)
    result.fallback       # True: no known item, so the training popularity ranked instead

Items are the dataset's original tokens (strings; ints are taken as their text). Unknown items
are dropped and reported; a session with no known item is ranked by popularity and flagged; a
session longer than the bundle's ``max_prefix_length`` keeps its most recent items (as in
training). Padding is never recommended, nor ``exclude`` items, nor (``exclude_seen=True``) the
session's own items, so fewer than ``k`` items come back only when the exclusions leave fewer.
``recommend_batch`` scores many sessions with one forward pass per chunk of ``batch_size``.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import torch

from .bundle import Bundle, load_bundle
from .errors import InputError


@dataclass(frozen=True)
class Recommendation:
    """The top items for one session, best first, and how the session was read.

    ``items``/``scores``: the ranking (model logits, or training counts when ``fallback``);
    ``unknown_items``: the session's items not in the vocabulary (dropped, in session order);
    ``fallback``: no known item was left, so the ranking is the popularity fallback.
    """

    items: list[str]
    scores: list[float]
    unknown_items: list[str] = field(default_factory=list)
    fallback: bool = False

    def pairs(self) -> list[tuple[str, float]]:
        """``[(item, score), ...]`` best first."""
        return list(zip(self.items, self.scores))

    def __iter__(self) -> Iterator[tuple[str, float]]:
        return iter(self.pairs())

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class _Session:
    ids: list[int]
    recent: list[int]
    unknown: list[str]


class Recommender:
    """Recommendations from a bundle's network (see the module docstring)."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.network = bundle.network
        self.items = bundle.items
        self.max_prefix_length = bundle.max_prefix_length
        self.device = bundle.popularity.device
        self.index = {token: i for i, token in enumerate(self.items) if i > 0}  # 0 = padding

    @classmethod
    def load(cls, folder: str | os.PathLike, device: str | torch.device = "cpu") -> "Recommender":
        """A Recommender over the bundle in ``folder`` (verified; no dataset or RecBole needed)."""
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise InputError(f"device {device!r} is not a torch device") from exc
        return cls(load_bundle(folder, device))

    @property
    def n_items(self) -> int:
        """Size of the vocabulary, padding included (item ids run 1 .. n_items - 1)."""
        return len(self.items)

    def recommend(self, session: Sequence[str], k: int = 10, *, exclude_seen: bool = False,
                  exclude: Iterable[str] = ()) -> Recommendation:
        """The top ``k`` items after ``session`` (its items oldest first)."""
        return self.recommend_batch([session], k, exclude_seen=exclude_seen, exclude=exclude)[0]

    def recommend_batch(self, sessions: Sequence[Sequence[str]], k: int = 10, *,
                        exclude_seen: bool = False, exclude: Iterable[str] = (),
                        batch_size: int = 512) -> list[Recommendation]:
        """``recommend`` for each session, one forward pass per ``batch_size`` model sessions."""
        k = self._checked_k(k)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        if isinstance(sessions, (str, bytes)) or not isinstance(sessions, Sequence):
            raise InputError("sessions must be a list of sessions (each a list of item ids)")
        read = [self._read(session) for session in sessions]
        excluded = sorted({self.index[str(t)] for t in self._tokens(exclude, "exclude")
                           if str(t) in self.index})
        results: list[Recommendation | None] = [None] * len(read)
        known = [i for i, s in enumerate(read) if s.recent]
        for start in range(0, len(known), batch_size):
            chunk = known[start:start + batch_size]
            with torch.no_grad():
                scores = self.network(*self._padded([read[i].recent for i in chunk])).float()
            self._finish(results, chunk, scores, read, excluded, exclude_seen, k, False)
        empty = [i for i, s in enumerate(read) if not s.recent]
        if empty:
            scores = self.bundle.popularity.unsqueeze(0).expand(len(empty), -1).clone()
            self._finish(results, empty, scores, read, excluded, exclude_seen, k, True)
        return results  # type: ignore[return-value]

    def _checked_k(self, k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.n_items - 1:
            raise InputError(f"k must be a whole number from 1 to {self.n_items - 1} "
                             f"(the number of items), got {k!r}")
        return k

    @staticmethod
    def _tokens(values: Iterable[str], what: str) -> list[str]:
        if isinstance(values, (str, bytes)):
            raise InputError(f"{what} must be a list of item ids, not one string {values!r}")
        try:
            tokens = list(values)
        except TypeError as exc:
            raise InputError(f"{what} must be a list of item ids") from exc
        bad = [t for t in tokens if isinstance(t, bool) or not isinstance(t, (str, int))]
        if bad:
            raise InputError(f"{what}: item ids are strings (or ints), got {bad[0]!r}")
        return [str(t) for t in tokens]

    def _read(self, session: Sequence[str]) -> _Session:
        tokens = self._tokens(session, "session")
        ids = [self.index[t] for t in tokens if t in self.index]
        return _Session(ids, ids[-self.max_prefix_length:],
                        [t for t in tokens if t not in self.index])

    def _padded(self, sessions: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, L]`` ids padded with 0 after the items, and ``[B]`` lengths (one tensor copy)."""
        lengths = torch.tensor([len(s) for s in sessions], dtype=torch.long)
        flat = torch.tensor(list(itertools.chain.from_iterable(sessions)), dtype=torch.long)
        seq = torch.zeros(len(sessions), int(lengths.max()), dtype=torch.long)
        seq[torch.arange(seq.shape[1]) < lengths.unsqueeze(1)] = flat
        return seq.to(self.device), lengths.to(self.device)

    def _finish(self, results: list, rows: list[int], scores: torch.Tensor, read: list[_Session],
                excluded: list[int], exclude_seen: bool, k: int, fallback: bool) -> None:
        """Mask padding and exclusions in ``scores`` (one row per ``rows``), keep the top ``k``."""
        scores[:, 0] = float("-inf")
        if excluded:
            scores[:, torch.tensor(excluded, device=scores.device)] = float("-inf")
        if exclude_seen:
            seen = [(r, i) for r, row in enumerate(rows) for i in set(read[row].ids)]
            if seen:
                where = torch.tensor(seen, device=scores.device).t()
                scores[where[0], where[1]] = float("-inf")
        values, indices = scores.topk(k, dim=1)
        negative_infinity = float("-inf")
        for row, row_values, row_ids in zip(rows, values.tolist(), indices.tolist()):
            if row_values[-1] == negative_infinity:  # exclusions left fewer than k items
                row_ids = [i for i, v in zip(row_ids, row_values) if v != negative_infinity]
                row_values = row_values[:len(row_ids)]
            results[row] = Recommendation([self.items[i] for i in row_ids], row_values,
                                          read[row].unknown, fallback)
