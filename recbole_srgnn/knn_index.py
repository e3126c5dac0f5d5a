"""The training sessions of the nearest-neighbour models, and their item <-> session index.

The benchmark files are *pre-augmented*: a session ``x_1..x_m`` is stored as the cases
``x_1 -> x_2``, ``x_1 x_2 -> x_3``, ..., each prefix cut to its most recent
``MAX_ITEM_LIST_LENGTH`` items. The kNN models need each training session once, so it is
recovered as **its longest case: that prefix plus its target** (the case with the longest prefix,
the latest one when several have the same, truncated, length). A session longer than the prefix
limit + 1 is therefore seen as its most recent ``MAX_ITEM_LIST_LENGTH + 1`` items.

A session's **time** is the latest ``TIME_FIELD`` value of its cases; where the split carries no
time field, the position of its last case in the split stands in (file order). The cotrec split's
training "timestamps" are placeholders that number the events in file order (one second each), so
there, too, time is file order. Ties in time go to the session whose last case comes later.
Sessions are numbered by that recency (0 = oldest), so "most recent" is "largest number".

Everything is built in one vectorised pass (sorts and scatters, no Python loop per session) on
the device of the given tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class SessionIndex:
    """Training sessions (numbered by recency) and both directions of their item incidence.

    ``sess_ptr``/``sess_item``/``sess_pos``: CSR over sessions of their *distinct* items (by item
    id), with each item's last position in the session (1-based). ``sess_size``: distinct items
    per session. ``sess_age``: latest session time minus this session's (float64, time units).
    ``item_ptr``/``item_sess``/``item_pos``: CSR over items of the sessions holding them, most
    recent first, cut to the ``sample_size`` most recent, with the item's last position in each.
    ``idf``: ``log(n_sessions / sessions holding the item)`` (0 for items in no session).
    """

    sess_ptr: Tensor
    sess_item: Tensor
    sess_pos: Tensor
    sess_size: Tensor
    sess_age: Tensor
    item_ptr: Tensor
    item_sess: Tensor
    item_pos: Tensor
    idf: Tensor

    @property
    def n_sessions(self) -> int:
        return int(self.sess_size.shape[0])


def csr_pointers(rows: Tensor, n_rows: int) -> Tensor:
    """``[n_rows + 1]`` CSR offsets of entries whose (sorted) row numbers are ``rows``."""
    ptr = torch.zeros(n_rows + 1, dtype=torch.long, device=rows.device)
    ptr[1:] = torch.bincount(rows, minlength=n_rows).cumsum(0)
    return ptr


def group_starts(sorted_keys: Tensor) -> Tensor:
    """``True`` where a run of equal values begins in ``sorted_keys``."""
    first = torch.ones_like(sorted_keys, dtype=torch.bool)
    if sorted_keys.numel() > 1:
        first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return first


def rank_in_group(group: Tensor) -> Tensor:
    """0, 1, 2, ... within each run of equal (sorted) ``group`` values."""
    index = torch.arange(group.numel(), device=group.device)
    start = torch.zeros_like(index)
    first = group_starts(group)
    start[first] = index[first]
    return index - start.cummax(0).values


def longest_cases(session: Tensor, length: Tensor, time: Tensor) -> tuple[Tensor, Tensor]:
    """Per session (in id order): the row of its longest case (the latest among equal lengths)
    and the row of its last case."""
    n = session.numel()
    order = torch.arange(n, device=session.device)
    for key in (time, length, session):  # by (session, length, time, row): stable sorts
        order = order[torch.sort(key[order], stable=True).indices]
    last = torch.ones(n, dtype=torch.bool, device=session.device)
    last[:-1] = session[order][1:] != session[order][:-1]
    rows = order[last]
    last_row = torch.full((int(session.max()) + 1,), -1, dtype=torch.long, device=session.device)
    last_row = last_row.scatter_reduce(0, session, torch.arange(n, device=session.device),
                                       reduce="amax")
    return rows, last_row[session[rows]]


def session_times(session: Tensor, time: Tensor, ids: Tensor) -> Tensor:
    """Latest ``time`` (float64) of the cases of each session id in ``ids``."""
    latest = torch.full((int(session.max()) + 1,), -torch.inf, dtype=torch.float64,
                        device=session.device)
    latest = latest.scatter_reduce(0, session, time.double(), reduce="amax")
    return latest[ids]


def build_index(session: Tensor, item_seq: Tensor, item_seq_len: Tensor, target: Tensor,
                time: Tensor | None, n_items: int, sample_size: int) -> SessionIndex:
    """The :class:`SessionIndex` of the training cases (RecBole's ``inter_feat`` columns).

    ``session``: session id per case; ``item_seq``/``item_seq_len``/``target``: the case's
    prefix and next item; ``time``: the case's time, or None to use the row order.
    """
    device = item_seq.device
    n_cases = item_seq.shape[0]
    session, length = session.long().view(-1), item_seq_len.long().view(-1)
    target = target.long().view(-1)
    row_time = (torch.arange(n_cases, device=device, dtype=torch.float64) if time is None
                else time.double().view(-1))
    rows, last_row = longest_cases(session, length, row_time)
    ids = session[rows]
    stamp = session_times(session, row_time, ids)
    # recency: by time, ties by the position of the session's last case
    order = torch.sort(last_row, stable=True).indices
    order = order[torch.sort(stamp[order], stable=True).indices]
    rows, stamp = rows[order], stamp[order]
    n_sessions = rows.numel()

    # each session's items: its longest prefix, then its target
    width = item_seq.shape[1] + 1
    seqs = torch.zeros(n_sessions, width, dtype=torch.long, device=device)
    seqs[:, :-1] = item_seq[rows].long()
    lens = length[rows]
    seqs[torch.arange(n_sessions, device=device), lens] = target[rows]
    positions = torch.arange(1, width + 1, device=device).expand(n_sessions, width)
    valid = (positions <= (lens + 1).unsqueeze(1)) & (seqs > 0)
    sess = torch.arange(n_sessions, device=device).unsqueeze(1).expand(n_sessions, width)[valid]
    item, pos = seqs[valid], positions[valid]
    # distinct items per session, each with its last position: sessions, items in id order
    key = sess * n_items + item
    order = torch.sort(key, stable=True).indices  # within a key positions stay ascending
    key, sess, item, pos = key[order], sess[order], item[order], pos[order]
    last = torch.ones_like(key, dtype=torch.bool)
    last[:-1] = key[1:] != key[:-1]
    sess, item, pos = sess[last], item[last], pos[last]
    sess_ptr = csr_pointers(sess, n_sessions)
    sess_size = sess_ptr.diff()

    # items -> sessions, most recent session first, at most sample_size per item
    order = torch.sort(item * n_sessions + (n_sessions - 1 - sess)).indices
    by_item, by_sess, by_pos = item[order], sess[order], pos[order]
    df = torch.bincount(by_item, minlength=n_items)[:n_items]
    keep = rank_in_group(by_item) < sample_size
    by_item, by_sess, by_pos = by_item[keep], by_sess[keep], by_pos[keep]
    idf = torch.where(df > 0, torch.log(n_sessions / df.clamp(min=1).double()),
                      torch.zeros((), dtype=torch.float64, device=device))
    return SessionIndex(
        sess_ptr=sess_ptr, sess_item=item, sess_pos=pos, sess_size=sess_size,
        sess_age=stamp.max() - stamp if n_sessions else stamp,
        item_ptr=csr_pointers(by_item, n_items), item_sess=by_sess, item_pos=by_pos, idf=idf)
