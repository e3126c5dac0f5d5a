r"""The non-neural scorers as plain ``torch.nn.Module``s whose state is tensors: for model bundles.

:class:`SequenceRules` scores a session from a fixed sequence-rule table (CSR tensors) plus a
repeat boost and a popularity tie-breaker (the formula: :mod:`recbole_srgnn.model.rules`);
:class:`SessionPop` scores every item by its training count. The RecBole models of
:mod:`recbole_srgnn.model` count these tensors on their training split (the rule scorer there
is this class with non-persistent buffers, so checkpoints stay without them); a bundle stores
them as ordinary ``state_dict`` tensors, and the constructor arguments only fix their shapes,
so loading needs no dataset. ``forward(item_seq [B, L], item_seq_len [B]) -> [B, n_items]``
(a fresh tensor: callers may write into it).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

POPULARITY_WEIGHT = 1e-3


class SequenceRules(nn.Module):
    r"""Rules from the last item + ``repeat_boost / (1 + clicks since seen)`` + a tiny popularity
    term; buffers ``rule_crow`` ``[n_items + 1]``, ``rule_col``/``rule_val`` ``[n_rules]`` (rows
    scaled to a maximum of 1) and ``popularity`` ``[n_items]`` (scaled to a maximum of 1)."""

    persistent = True  # buffers in the state_dict (a bundle's weights)

    def __init__(self, n_items: int, n_rules: int, rule_steps: int = 10,
                 repeat_boost: float = 1.0) -> None:
        super().__init__()
        if rule_steps < 1 or repeat_boost < 0:
            raise ValueError("rule_steps must be >= 1 and repeat_boost >= 0")
        if n_items < 2 or n_rules < 0:
            raise ValueError("n_items must be >= 2 and n_rules >= 0")
        self.n_items, self.steps = int(n_items), int(rule_steps)
        self.repeat_boost = float(repeat_boost)
        self.set_tables(torch.zeros(self.n_items + 1, dtype=torch.long),
                        torch.zeros(int(n_rules), dtype=torch.long), torch.zeros(int(n_rules)),
                        torch.zeros(self.n_items))

    def set_tables(self, crow: Tensor, col: Tensor, val: Tensor, popularity: Tensor) -> None:
        """(Re)place the rule table and the scaled popularity."""
        for name, value in (("rule_crow", crow), ("rule_col", col), ("rule_val", val),
                            ("popularity", popularity)):
            self.register_buffer(name, value, persistent=self.persistent)

    def options(self) -> dict:
        """The constructor arguments that rebuild this scorer's shapes (a bundle's ``config``)."""
        return {"n_items": self.n_items, "n_rules": int(self.rule_col.numel()),
                "rule_steps": self.steps, "repeat_boost": self.repeat_boost}

    def tables(self) -> dict[str, Tensor]:
        """The scorer's tensors by their ``state_dict`` names."""
        return {"rule_crow": self.rule_crow, "rule_col": self.rule_col,
                "rule_val": self.rule_val, "popularity": self.popularity}

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        """``[B, L]`` padded sessions and ``[B]`` lengths -> ``[B, n_items]`` scores."""
        return self.boosted(self.rule_scores(item_seq, item_seq_len), item_seq, item_seq_len,
                            self.repeat_boost)

    def rule_scores(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        """The scores without the repeat boost (popularity term + the last item's rule row),
        ``[B, n_items]``: the part every repeat boost shares (a sweep over boosts counts it once)."""
        batch = item_seq.shape[0]
        lengths = item_seq_len.long().view(-1)
        scores = (POPULARITY_WEIGHT * self.popularity).unsqueeze(0).repeat(batch, 1)
        # Rule rows of the last items, gathered from the CSR table without leaving the device.
        last = item_seq.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
        start, end = self.rule_crow[last], self.rule_crow[last + 1]
        count = end - start
        row = torch.repeat_interleave(torch.arange(batch, device=item_seq.device), count)
        offset = torch.arange(int(count.sum()), device=item_seq.device) - torch.repeat_interleave(
            count.cumsum(0) - count, count)
        idx = torch.repeat_interleave(start, count) + offset
        scores.index_put_((row, self.rule_col[idx]), self.rule_val[idx], accumulate=True)
        return scores

    @staticmethod
    def boosted(scores: Tensor, item_seq: Tensor, item_seq_len: Tensor,
                repeat_boost: float) -> Tensor:
        """``scores`` (:meth:`rule_scores`) plus the repeat boost ``repeat_boost``: a new tensor
        when the boost is > 0, ``scores`` itself (left unchanged) when it is 0."""
        if repeat_boost <= 0:
            return scores
        lengths = item_seq_len.long().view(-1)
        positions = torch.arange(item_seq.shape[1], device=item_seq.device)
        recency = lengths.unsqueeze(1) - 1 - positions.unsqueeze(0)        # 0 = last item
        valid = (recency >= 0) & (item_seq > 0)
        boost = repeat_boost / (1.0 + recency.clamp(min=0).float())
        repeat = torch.zeros_like(scores).scatter_reduce(
            1, item_seq, torch.where(valid, boost, torch.zeros_like(boost)), reduce="amax")
        return scores + repeat


class SessionPop(nn.Module):
    """Every item's count as a training target (buffer ``item_count``, 0 for padding), for every
    session alike."""

    def __init__(self, n_items: int) -> None:
        super().__init__()
        if n_items < 2:
            raise ValueError("n_items must be >= 2")
        self.n_items = int(n_items)
        self.register_buffer("item_count", torch.zeros(self.n_items))

    def options(self) -> dict:
        return {"n_items": self.n_items}

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        return self.item_count.unsqueeze(0).repeat(item_seq.shape[0], 1)


NETWORKS: dict[str, type[nn.Module]] = {"SequenceRules": SequenceRules, "SessionPop": SessionPop}
