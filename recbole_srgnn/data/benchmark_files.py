"""Pre-augmented RecBole benchmark files: a table of (prefix -> next item) cases and its writer.

RecBole 1.2.1 does not augment benchmark files for sequential models, so every file we hand it
holds one row per case (docs/design.md §2)::

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

# Rows are formatted, assembled and written in chunks of at most this many output bytes (or
# rows), which keeps every temporary small (the byte gather needs 8 bytes of index per byte).
_CHUNK_BYTES = 1 << 21
_CHUNK_ROWS = 1 << 16


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


def _int_text(values, *, suffix: bytes = b"") -> tuple[np.ndarray, np.ndarray]:
    """The tokens of ``values`` back to back: (byte pool, offsets with one extra end entry)."""
    buffer, starts, lengths = _int_tokens(values, suffix=suffix)
    n = len(lengths)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if n == 0:
        return buffer, offsets
    width = len(buffer) // n
    # Tokens are right-aligned in rows of ``width`` bytes: keep each row's last lengths[i] bytes.
    keep = np.arange(width)[None, :] >= (width - lengths)[:, None]
    return buffer.reshape(n, width)[keep], offsets


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


def _token_lengths(values: np.ndarray, extra: int, min_digits: int = 1) -> np.ndarray:
    """Byte length of each value's decimal text (sign included) plus ``extra`` fixed bytes."""
    values = np.asarray(values, dtype=np.int64)
    digits = np.maximum(_n_digits(np.abs(values)), min_digits)
    return digits + (values < 0) + extra


def _write_rows(handle: BinaryIO, items: np.ndarray, start: np.ndarray, end: np.ndarray,
                cases: Cases) -> None:
    """Rows ``"sid\t" + "i1 i2 ... ik" + "\ttarget\t" + "seconds.mmm\n"``, chunk by chunk.

    The byte length of every row is known up front (from digit counts), so rows are cut into
    chunks of about ``_CHUNK_BYTES`` output; each chunk formats only its own tokens and the part
    of the item pool its prefixes use (every pool item once, ``"id "``, so a prefix's list is one
    contiguous slice of that text), then gathers its rows. Temporaries stay chunk-sized.
    """
    n = len(start)
    session_id = np.asarray(cases.session_id)
    target = np.asarray(cases.target, dtype=np.int64)
    timestamp = np.asarray(cases.timestamp_ms, dtype=np.int64)
    if len(timestamp) and timestamp.min() == np.iinfo(np.int64).min:
        raise ValueError("cannot format the smallest int64")

    lo, hi = int(start.min()), int(end.max())
    item_offsets = np.zeros(hi - lo + 1, dtype=np.int64)
    np.cumsum(_token_lengths(items[lo:hi], 1), out=item_offsets[1:])
    list_bytes = np.maximum(item_offsets[end - lo] - item_offsets[start - lo] - 1, 0)
    text_sessions = session_id.dtype.kind not in "iu"
    if text_sessions:
        sid_buffer, sid_starts, sid_bytes = _session_tokens(session_id)
    else:
        sid_bytes = _token_lengths(session_id, 1)
    row_end = np.cumsum(sid_bytes + list_bytes + _token_lengths(target, 2)
                        + _token_lengths(timestamp, 2, min_digits=4))
    del list_bytes, item_offsets

    # Chunks of whole rows: at most _CHUNK_BYTES of output or _CHUNK_ROWS rows, or one row.
    cuts = np.searchsorted(row_end, np.arange(_CHUNK_BYTES, int(row_end[-1]), _CHUNK_BYTES),
                           side="right")
    bounds = np.unique(np.concatenate([[0], cuts, np.arange(0, n, _CHUNK_ROWS), [n]]))
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        if b == a:
            continue
        p0, p1 = int(start[a:b].min()), int(end[a:b].max())
        item_text, offsets = _int_text(items[p0:p1], suffix=b" ")
        if text_sessions:
            sid_pool = _ragged_gather(sid_buffer, sid_starts[a:b], sid_bytes[a:b])
            sid_len = sid_bytes[a:b]
            sid_start = np.cumsum(sid_len) - sid_len
        else:
            sid_pool, sid_start, sid_len = _int_tokens(session_id[a:b], suffix=b"\t")
        target_pool, target_start, target_len = _int_tokens(target[a:b], prefix=b"\t", suffix=b"\t")
        ts_pool, ts_start, ts_len = _int_tokens(timestamp[a:b], suffix=b"\n", decimals=3)
        source = np.concatenate([item_text, sid_pool, target_pool, ts_pool])
        base_sid = len(item_text)
        base_target = base_sid + len(sid_pool)
        base_ts = base_target + len(target_pool)

        rows = b - a
        segment_starts = np.empty((rows, 4), dtype=np.int64)
        segment_lengths = np.empty((rows, 4), dtype=np.int64)
        segment_starts[:, 0] = sid_start + base_sid
        segment_lengths[:, 0] = sid_len
        first = offsets[start[a:b] - p0]
        segment_starts[:, 1] = first
        # The item text without the trailing space of the prefix's last item.
        segment_lengths[:, 1] = np.maximum(offsets[end[a:b] - p0] - first - 1, 0)
        segment_starts[:, 2] = target_start + base_target
        segment_lengths[:, 2] = target_len
        segment_starts[:, 3] = ts_start + base_ts
        segment_lengths[:, 3] = ts_len
        chunk = _ragged_gather(source, segment_starts.ravel(), segment_lengths.ravel())
        expected = int(row_end[b - 1] - (row_end[a - 1] if a else 0))
        if len(chunk) != expected:
            raise AssertionError(f"row bytes {len(chunk)} != predicted {expected}")
        handle.write(chunk.data)


def cases_file_rows(path: str | os.PathLike) -> int:
    """Number of case rows of a benchmark file (lines after the header)."""
    with open(path, "rb") as handle:
        count = sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 22), b""))
    return max(count - 1, 0)
