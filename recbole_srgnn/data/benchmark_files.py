"""Pre-augmented RecBole benchmark files: a table of (prefix -> next item) cases and its writer.

RecBole 1.2.1 does not augment benchmark files for sequential models, so every file we hand it
holds one row per case (DESIGN.md §2)::

    session_id:token<TAB>item_id_list:token_seq<TAB>item_id:token<TAB>timestamp:float
    17<TAB>101 102 103<TAB>104<TAB>1442004589.123

``item_id_list`` holds the most recent ``max_prefix_length`` items of the prefix (0 = all),
oldest first; the timestamp is the target event's time in seconds with exactly three decimals,
computed with integer arithmetic from milliseconds.

Everything here is vectorised: integers are turned into ASCII digits with numpy, every item of
the shared prefix pool is formatted once (a case's item list is then a contiguous slice of the
pool's text, because its prefix is a contiguous slice of the pool), and the rows are assembled by
one ragged byte gather per chunk of rows. No Python loop runs per case or per session.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

HEADER = "session_id:token\titem_id_list:token_seq\titem_id:token\ttimestamp:float\n"

# Rows are assembled and written in chunks of about this many output bytes, which bounds the
# memory of the byte gather (it needs 8 bytes of index per output byte).
_CHUNK_BYTES = 1 << 21


@dataclass
class Cases:
    """A table of (prefix -> next item) cases sharing one flat pool of item ids.

    The prefix of case ``k`` is ``items[start[k]:end[k]]``, oldest first; ``target[k]`` is the
    item that came next, ``timestamp_ms[k]`` the time of that target event in milliseconds and
    ``session_id[k]`` its session (int64 or a string array).
    """

    items: np.ndarray
    start: np.ndarray
    end: np.ndarray
    target: np.ndarray
    session_id: np.ndarray
    timestamp_ms: np.ndarray

    def __len__(self) -> int:
        return int(len(self.target))

    def prefix_lengths(self) -> np.ndarray:
        return np.asarray(self.end, dtype=np.int64) - np.asarray(self.start, dtype=np.int64)


def sessions_to_cases(session_id, items, timestamp_ms, *, min_prefix_length: int = 1) -> Cases:
    """Every (prefix -> next item) case of a table of events.

    Input: one row per event, rows grouped by session (a session is a run of equal
    ``session_id`` values) and in time order within a session. Output: for a session of ``n``
    events, the cases whose prefix has ``min_prefix_length .. n-1`` items (``n - 1`` cases with
    the default 1), grouped by session in time order. The returned ``items`` pool is the input
    ``items`` array itself (as int64).
    """
    if int(min_prefix_length) < 1:
        raise ValueError(f"min_prefix_length must be at least 1, got {min_prefix_length}")
    session_id = np.asarray(session_id)
    items = np.ascontiguousarray(items, dtype=np.int64)
    timestamp_ms = np.asarray(timestamp_ms, dtype=np.int64)
    n = len(items)
    if len(session_id) != n or len(timestamp_ms) != n:
        raise ValueError("session_id, items and timestamp_ms must have the same length")
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Cases(items, empty, empty.copy(), empty.copy(), session_id[:0], empty.copy())
    first = np.ones(n, dtype=bool)
    first[1:] = session_id[1:] != session_id[:-1]
    position = np.arange(n, dtype=np.int64)
    session_start = np.maximum.accumulate(np.where(first, position, 0))
    targets = np.flatnonzero(position - session_start >= int(min_prefix_length))
    return Cases(
        items=items,
        start=session_start[targets],
        end=targets.astype(np.int64),
        target=items[targets],
        session_id=session_id[targets],
        timestamp_ms=timestamp_ms[targets],
    )


# --------------------------------------------------------------------------- integer formatting
#
# A "token table" is (buffer, starts, lengths): token i is buffer[starts[i]:starts[i] + lengths[i]].
# Integer tokens are built right-aligned in a fixed-width uint8 matrix (one row per value), so no
# compaction is needed: token i starts at i * width + width - lengths[i].

def _n_digits(magnitude: np.ndarray) -> np.ndarray:
    digits = np.ones(len(magnitude), dtype=np.int64)
    bound = 10
    for _ in range(18):
        more = magnitude >= bound
        if not more.any():
            break
        digits += more
        bound *= 10
    return digits


def _int_tokens(values, *, prefix: bytes = b"", suffix: bytes = b"",
                decimals: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decimal text of int64 values, with fixed prefix and suffix bytes, as a token table.

    ``decimals=3`` prints ``value / 1000`` exactly with three decimals (``1442004589.123``),
    using integer arithmetic only.
    """
    values = np.asarray(values, dtype=np.int64)
    n = len(values)
    if n and values.min() == np.iinfo(np.int64).min:
        raise ValueError("cannot format the smallest int64")
    negative = values < 0
    magnitude = np.abs(values)
    # Digits to print: at least decimals + 1 (so 5 ms -> "0.005").
    digits = np.maximum(_n_digits(magnitude), decimals + 1)
    max_digits = int(digits.max()) if n else decimals + 1
    dot = 1 if decimals else 0
    head = len(prefix) + 1  # room for the prefix and a sign
    width = head + max_digits + dot + len(suffix)
    matrix = np.zeros((n, width), dtype=np.uint8)
    rest = magnitude.copy()
    column = width - len(suffix) - 1
    for k in range(max_digits):
        if decimals and k == decimals:
            matrix[:, column] = ord(".")
            column -= 1
        matrix[:, column] = (rest % 10).astype(np.uint8) + ord("0")
        rest //= 10
        column -= 1
    if suffix:
        matrix[:, width - len(suffix):] = np.frombuffer(suffix, dtype=np.uint8)
    lengths = digits + dot + negative + len(prefix) + len(suffix)
    rows = np.arange(n, dtype=np.int64)
    first = width - lengths  # column of each token's first byte
    if negative.any():
        matrix[rows[negative], first[negative] + len(prefix)] = ord("-")
    for k, byte in enumerate(prefix):
        matrix[rows, first + k] = byte
    return matrix.reshape(-1), rows * width + first, lengths


def _compact(table: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the tokens of a table: (byte pool, offsets with one extra end entry)."""
    buffer, starts, lengths = table
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return _ragged_gather(buffer, starts, lengths), offsets


def _text_tokens(values, *, suffix: bytes = b"") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token table of string values; each distinct value is encoded once."""
    values = np.asarray(values)
    distinct, inverse = np.unique(values.astype(str), return_inverse=True)
    encoded = [str(v).encode("utf-8") for v in distinct]
    for token in encoded:
        if not token or any(c in token for c in (b"\t", b"\n", b"\r")):
            raise ValueError(f"session id {token!r} is empty or contains a tab or line break")
    distinct_lengths = np.array([len(t) + len(suffix) for t in encoded], dtype=np.int64)
    buffer = np.frombuffer(b"".join(t + suffix for t in encoded), dtype=np.uint8)
    distinct_starts = np.cumsum(distinct_lengths) - distinct_lengths
    inverse = inverse.reshape(-1)
    return buffer, distinct_starts[inverse], distinct_lengths[inverse]


def _session_tokens(session_id) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    session_id = np.asarray(session_id)
    if session_id.dtype.kind in "iu":
        return _int_tokens(session_id.astype(np.int64), suffix=b"\t")
    if session_id.dtype.kind == "f":
        raise ValueError("session ids must be integers or strings, not floats")
    return _text_tokens(session_id, suffix=b"\t")


# ------------------------------------------------------------------------------- the byte gather

def _ragged_gather(source: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate ``source[starts[i]:starts[i] + lengths[i]]`` for all i (vectorised)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.uint8)
    nonzero = lengths > 0
    starts = np.asarray(starts, dtype=np.int64)[nonzero]
    lengths = lengths[nonzero]
    destination = np.cumsum(lengths) - lengths
    index = np.repeat(starts - destination, lengths)
    index += np.arange(total, dtype=np.int64)
    return source[index]


def write_cases(path, cases: Cases, *, max_prefix_length: int = 50) -> None:
    """Write ``cases`` as a pre-augmented RecBole benchmark file at ``path`` (directly).

    ``max_prefix_length`` keeps the most recent items of each prefix (0 = keep all). Output is
    deterministic: same cases, same bytes. Callers handle atomic renames.
    """
    max_prefix_length = int(max_prefix_length)
    if max_prefix_length < 0:
        raise ValueError(f"max_prefix_length must be >= 0, got {max_prefix_length}")
    n = len(cases.target)
    items = np.asarray(cases.items, dtype=np.int64)
    start = np.asarray(cases.start, dtype=np.int64)
    end = np.asarray(cases.end, dtype=np.int64)
    for name, column in (("start", start), ("end", end), ("session_id", cases.session_id),
                         ("timestamp_ms", cases.timestamp_ms)):
        if len(column) != n:
            raise ValueError(f"Cases.{name} has {len(column)} rows, target has {n}")
    if n and (start.min() < 0 or end.max() > len(items) or (end < start).any()):
        raise ValueError("case prefixes point outside the item pool")
    if max_prefix_length:
        start = np.maximum(start, end - max_prefix_length)

    with open(path, "wb") as handle:
        handle.write(HEADER.encode("ascii"))
        if n == 0:
            return
        _write_rows(handle, items, start, end, cases)


def _write_rows(handle: BinaryIO, items: np.ndarray, start: np.ndarray, end: np.ndarray,
                cases: Cases) -> None:
    n = len(start)
    # Only the part of the pool that some prefix uses needs formatting; every item of it is
    # formatted once, "id " each, so a prefix's list is one contiguous slice of this text.
    lo = int(start.min())
    hi = int(end.max())
    item_text, item_offsets = _compact(_int_tokens(items[lo:hi], suffix=b" "))
    tables = [
        _session_tokens(cases.session_id),
        _int_tokens(cases.target, prefix=b"\t", suffix=b"\t"),
        _int_tokens(cases.timestamp_ms, suffix=b"\n", decimals=3),
    ]
    # One source buffer: [item text | session tokens | target tokens | timestamp tokens].
    source = np.concatenate([item_text] + [table[0] for table in tables])
    bases = np.cumsum([len(item_text)] + [len(table[0]) for table in tables])

    segment_starts = np.empty((n, 4), dtype=np.int64)
    segment_lengths = np.empty((n, 4), dtype=np.int64)
    # Row layout: "sid\t" + "i1 i2 ... ik" + "\ttarget\t" + "seconds.mmm\n".
    segment_starts[:, 0] = tables[0][1] + bases[0]
    segment_lengths[:, 0] = tables[0][2]
    segment_starts[:, 1] = item_offsets[start - lo]
    # The item text without the trailing space of the prefix's last item.
    segment_lengths[:, 1] = np.maximum(item_offsets[end - lo] - item_offsets[start - lo] - 1, 0)
    for column, (table, base) in enumerate(zip(tables[1:], bases[1:]), start=2):
        segment_starts[:, column] = table[1] + base
        segment_lengths[:, column] = table[2]
    del tables, item_text, item_offsets

    row_bytes = segment_lengths.sum(axis=1)
    row_end = np.cumsum(row_bytes)
    # Chunks of whole rows, at most _CHUNK_BYTES + the longest row of output each; the gather
    # buffers are allocated once and reused.
    cuts = np.searchsorted(row_end, np.arange(_CHUNK_BYTES, int(row_end[-1]), _CHUNK_BYTES),
                           side="right")
    bounds = np.unique(np.concatenate([[0], cuts, [n]]))
    capacity = _CHUNK_BYTES + int(row_bytes.max())
    gather = _Gather(source, capacity)
    for a, b in zip(bounds[:-1], bounds[1:]):
        handle.write(gather(segment_starts[a:b].ravel(), segment_lengths[a:b].ravel()))


class _Gather:
    """Reusable ragged byte gather from one source buffer (no page faults per chunk)."""

    def __init__(self, source: np.ndarray, capacity: int):
        self.source = source
        self.dtype = np.int32 if len(source) < 2**31 - 1 else np.int64
        self.steps = np.empty(capacity, dtype=self.dtype)
        self.index = np.empty(capacity, dtype=self.dtype)
        self.out = np.empty(capacity, dtype=np.uint8)

    def __call__(self, starts: np.ndarray, lengths: np.ndarray) -> memoryview:
        keep = lengths > 0
        starts = starts[keep]
        lengths = lengths[keep]
        total = int(lengths.sum())
        if total > len(self.out):
            raise AssertionError("gather chunk larger than its buffer")
        if total == 0:
            return memoryview(b"")
        # index = cumsum(steps): +1 inside a segment, a jump at each segment's first byte.
        destination = np.cumsum(lengths) - lengths
        steps = self.steps[:total]
        steps.fill(1)
        jumps = starts.copy()
        jumps[1:] -= starts[:-1] + lengths[:-1] - 1
        steps[destination] = jumps
        index = np.cumsum(steps, out=self.index[:total])
        np.take(self.source, index, out=self.out[:total])
        return self.out[:total].data


def cases_file_rows(path: str | os.PathLike) -> int:
    """Number of case rows of a benchmark file (lines after the header)."""
    with open(path, "rb") as handle:
        count = sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 22), b""))
    return max(count - 1, 0)
