"""Click log -> sessions: steps 1-4 of the Retail Rocket converter's protocol (docs/design.md §2).

Both the benchmark converter (``retailrocket.convert_events``, which goes on to filter and
split) and ``recbole-srgnn recommend`` (which scores every session of a raw log, through
``click_sessions`` / ``read_click_sessions``) cut a log into sessions here, so the two cannot
drift apart. The steps, vectorised with numpy (no loop per event):

1. Order each visitor's events by timestamp; ties keep file order (stable sort).
2. Sessionize over **all** event types: an event starts a new session if it is the visitor's first
   or its gap to the visitor's previous event is strictly greater than ``session_gap`` seconds
   (compared in integer milliseconds).
3. Keep only the ``keep_events`` types.
4. Optionally (``dedup_consecutive``) drop an event whose item equals the previous kept event's
   item in the same session.

Sessions are numbered 1..N by (first remaining event's timestamp, visitor id, the session's
order within its visitor): ``session_numbers``. ``ConvertOptions`` (all the protocol's options,
validated) lives here because ``click_sessions`` takes it too; the published presets and the
converter itself stay in ``retailrocket.py``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import numbers
import os
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from recbole_srgnn.data.events_input import EVENT_TYPES, read_events
from recbole_srgnn.errors import InputError


@dataclass(frozen=True)
class ConvertOptions:
    """Parameters of the conversion (defaults: docs/design.md §2).

    - ``session_gap``: seconds; a gap strictly greater than this starts a new session (measured
      between consecutive events of a visitor, all event types).
    - ``keep_events``: event types kept after sessionizing (``view``, ``addtocart``,
      ``transaction``).
    - ``dedup_consecutive``: drop an event repeating the previous kept event's item in a session.
    - ``min_item_support`` / ``min_session_length``: iterated filters (events per item, events
      per session).
    - ``test_days`` / ``valid_days``: the last days (by session end) for test / validation;
      ``valid_days = 0`` writes no validation file.
    - ``max_prefix_length``: most recent items kept in each ``item_id_list`` (0 = all).
    """

    session_gap: float = 3600
    keep_events: tuple[str, ...] = ("view",)
    dedup_consecutive: bool = False
    min_item_support: int = 5
    min_session_length: int = 2
    test_days: float = 7.0
    valid_days: float = 7.0
    max_prefix_length: int = 50

    def validated(self) -> "ConvertOptions":
        """A normalised copy (floats, ints, ``keep_events`` in the known order); InputError if invalid."""
        problems = []

        def number(name: str, value: Any, *, positive: bool = False) -> None:
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                problems.append(f"{name} must be a finite number, got {value!r}")
            elif value < 0 or (positive and value == 0):
                problems.append(f"{name} must be {'positive' if positive else 'zero or more'}, got {value!r}")

        def integer(name: str, value: Any, minimum: int) -> None:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                problems.append(f"{name} must be an integer >= {minimum}, got {value!r}")

        number("session_gap", self.session_gap)
        number("test_days", self.test_days, positive=True)
        number("valid_days", self.valid_days)
        integer("min_item_support", self.min_item_support, 1)
        integer("min_session_length", self.min_session_length, 1)
        integer("max_prefix_length", self.max_prefix_length, 0)
        keep = self.keep_events
        if isinstance(keep, str):
            keep = (keep,)
        keep = tuple(str(k) for k in keep)
        unknown = sorted(set(keep) - set(EVENT_TYPES))
        if unknown:
            problems.append(f"unknown event type(s) in keep_events: {', '.join(map(repr, unknown))} "
                            f"(known: {', '.join(EVENT_TYPES)})")
        elif not keep:
            problems.append(f"keep_events is empty (choose from {', '.join(EVENT_TYPES)})")
        if not isinstance(self.dedup_consecutive, (bool, np.bool_)):
            problems.append(f"dedup_consecutive must be true or false, got {self.dedup_consecutive!r}")
        if problems:
            raise InputError("invalid conversion options: " + "; ".join(problems))
        keep = tuple(t for t in EVENT_TYPES if t in keep)
        return dataclasses.replace(self, keep_events=keep, dedup_consecutive=bool(self.dedup_consecutive),
                                   session_gap=float(self.session_gap),
                                   test_days=float(self.test_days), valid_days=float(self.valid_days),
                                   min_item_support=int(self.min_item_support),
                                   min_session_length=int(self.min_session_length),
                                   max_prefix_length=int(self.max_prefix_length))

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["keep_events"] = list(self.keep_events)
        return data


# ----------------------------------------------------------------------------------- utilities

class Progress:
    """Step-by-step progress on stderr (``[retailrocket  12.3s] ...``) when ``enabled``."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.began = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.began

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(f"[retailrocket {self.elapsed():6.1f}s] {message}", file=sys.stderr, flush=True)


def iso_utc(ms: int | None) -> str | None:
    """Milliseconds since 1970 as ISO 8601 UTC; None for None or a moment outside years 1-9999
    (a split cut far before the data, e.g. ``test_days`` of a million years)."""
    if ms is None:
        return None
    try:
        moment = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(milliseconds=int(ms))
    except OverflowError:
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def exact_decimal(value: float) -> Fraction:
    """``value`` as an exact fraction, read as the decimal the user wrote (0.1 -> 1/10)."""
    return Fraction(repr(float(value)))


def _distinct(codes: np.ndarray, size: int) -> int:
    if len(codes) == 0:
        return 0
    return int(np.count_nonzero(np.bincount(codes, minlength=size)))


# ------------------------------------------------------------------------- events in sessions

@dataclass
class Events:
    """Events in (visitor, time) order; ``session`` codes never decrease along the array.

    ``item`` and ``session`` are dense int32 codes (``item_ids[item]`` is the original id).
    """

    timestamp: np.ndarray
    item: np.ndarray
    session: np.ndarray

    def take(self, mask: np.ndarray) -> "Events":
        return Events(self.timestamp[mask], self.item[mask], self.session[mask])

    def __len__(self) -> int:
        return len(self.timestamp)

    def run_starts(self) -> np.ndarray:
        """Boolean mask of each session's first event."""
        first = np.ones(len(self.session), dtype=bool)
        first[1:] = self.session[1:] != self.session[:-1]
        return first


@dataclass
class EventCounter:
    """Counts (events, sessions, distinct items) of ``Events`` for the statistics."""

    n_sessions: int
    n_items: int

    def measure(self, events: Events) -> tuple[int, int, int]:
        n_sessions = int(np.count_nonzero(events.run_starts())) if len(events) else 0
        return (len(events), n_sessions, _distinct(events.item, self.n_items))

    @staticmethod
    def removed(before: tuple[int, int, int], after: tuple[int, int, int]) -> dict[str, int]:
        return {"events": before[0] - after[0], "sessions": before[1] - after[1],
                "items": before[2] - after[2]}


def _order(timestamp: np.ndarray, visitor: np.ndarray) -> np.ndarray:
    """Stable order by (visitor, timestamp): ties keep file order."""
    if len(timestamp) == 0:
        return np.zeros(0, dtype=np.int64)
    v0, v1 = int(visitor.min()), int(visitor.max())
    t0, t1 = int(timestamp.min()), int(timestamp.max())
    span = t1 - t0 + 1
    if (v1 - v0 + 1) * span < 2**62:
        key = visitor - v0
        key *= span
        key += timestamp
        key -= t0
        return np.argsort(key, kind="stable")
    return np.lexsort((timestamp, visitor))


def _dense_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values, int32 code of each value); O(n) for a compact id range."""
    if len(values) == 0:
        return values[:0], np.zeros(0, dtype=np.int32)
    low, high = int(values.min()), int(values.max())
    if high - low < max(4 * len(values), 1 << 20):
        shifted = values - low
        present = np.zeros(high - low + 1, dtype=bool)
        present[shifted] = True
        distinct = np.flatnonzero(present) + low
        table = (np.cumsum(present, dtype=np.int64) - 1).astype(np.int32)
        return distinct.astype(np.int64), table[shifted]
    distinct, inverse = np.unique(values, return_inverse=True)
    return distinct, inverse.reshape(-1).astype(np.int32)


def sessions_in_order(events: Events, rank_of_session: np.ndarray) -> tuple[Events, np.ndarray]:
    """Reorder whole sessions (contiguous runs) by ``rank_of_session``; time order kept inside.

    Returns the reordered events and each event's session rank. Sorts sessions, not events.
    """
    first = np.flatnonzero(events.run_starts())
    lengths = np.diff(np.append(first, len(events)))
    rank = rank_of_session[events.session[first]]
    order = np.argsort(rank, kind="stable")
    first, lengths, rank = first[order], lengths[order], rank[order]
    # Ragged arange: positions first[k] .. first[k] + lengths[k] - 1, session after session.
    destination = np.cumsum(lengths) - lengths
    index = np.repeat(first - destination, lengths)
    index += np.arange(len(index), dtype=index.dtype)
    return events.take(index), np.repeat(rank, lengths)


# ---------------------------------------------------------------------------- steps 1-4

@dataclass
class Sessionized:
    """Steps 1-4 done: the kept events and what the later steps and the statistics need."""

    events: Events
    item_ids: np.ndarray  # original item id of each item code
    session_visitor: np.ndarray  # visitor id of each session code
    counter: EventCounter
    stats: dict[str, Any]  # "raw" and "sessionized"
    filters: dict[str, Any]  # "event_types" and "dedup_consecutive"


def sessionize(columns: dict[str, np.ndarray], options: ConvertOptions,
                progress: Progress) -> Sessionized:
    """Steps 1-4 of the protocol (order, sessions, event types, consecutive duplicates).

    Empties ``columns`` (the caller's arrays are released as soon as they are sorted).
    """
    stats: dict[str, Any] = {}
    n_rows = len(columns["timestamp"])
    event_counts = np.bincount(columns["event"], minlength=len(EVENT_TYPES))

    # 1. stable order by (visitor, time).
    order = _order(columns["timestamp"], columns["visitorid"])
    timestamp = columns["timestamp"][order]
    visitor = columns["visitorid"][order]
    event = columns["event"][order]
    item_ids, item = _dense_codes(columns["itemid"][order])
    del order
    columns.clear()

    # 2. sessions over all event types; gap > session_gap (exact, integer milliseconds).
    gap_ms = math.floor(exact_decimal(options.session_gap) * 1000)
    new_visitor = np.ones(n_rows, dtype=bool)
    new_visitor[1:] = visitor[1:] != visitor[:-1]
    new = new_visitor.copy()
    new[1:] |= np.diff(timestamp) > gap_ms
    session = (np.cumsum(new, dtype=np.int64) - 1).astype(np.int32)
    n_sessions = int(session[-1]) + 1
    session_visitor = visitor[new]  # visitor of each session code
    stats["raw"] = {
        "rows": int(n_rows),
        "events_by_type": {name: int(event_counts[i]) for i, name in enumerate(EVENT_TYPES)},
        "visitors": int(np.count_nonzero(new_visitor)),
        "items": int(len(item_ids)),
        "first_event": iso_utc(int(timestamp.min())),
        "last_event": iso_utc(int(timestamp.max())),
    }
    del visitor, new, new_visitor
    events = Events(timestamp, item, session)
    counter = EventCounter(n_sessions, len(item_ids))
    stats["sessionized"] = {"sessions": n_sessions, "session_gap_ms": gap_ms}
    progress(f"sessionized {n_rows:,} events into {n_sessions:,} sessions")

    filters: dict[str, Any] = {}
    # 3. keep the configured event types.
    before = counter.measure(events)
    keep_types = np.zeros(len(EVENT_TYPES), dtype=bool)
    keep_types[[EVENT_TYPES.index(t) for t in options.keep_events]] = True
    keep = keep_types[event]
    del event
    if not keep.all():
        events = events.take(keep)
    del keep
    after = counter.measure(events)
    filters["event_types"] = counter.removed(before, after)

    # 4. optional removal of consecutive duplicates within a session.
    if options.dedup_consecutive:
        duplicate = np.zeros(len(events), dtype=bool)
        duplicate[1:] = (events.session[1:] == events.session[:-1]) & (events.item[1:] == events.item[:-1])
        events = events.take(~duplicate)
        filters["dedup_consecutive"] = counter.removed(after, counter.measure(events))
    else:
        filters["dedup_consecutive"] = None
    return Sessionized(events, item_ids, session_visitor, counter, stats, filters)


def session_numbers(codes: np.ndarray, first_timestamp: np.ndarray, session_visitor: np.ndarray,
                     n_sessions: int) -> np.ndarray:
    """Final session ids 1..N of the session ``codes`` (each with its first remaining event's
    timestamp), ordered by (that timestamp, visitor id, order within the visitor); indexed by
    session code, 0 for a code not in ``codes``."""
    ranked = np.lexsort((codes, session_visitor[codes], first_timestamp))
    new_id = np.zeros(n_sessions, dtype=np.int64)
    new_id[codes[ranked]] = np.arange(1, len(codes) + 1)
    return new_id


# ------------------------------------------------------------------ sessions to recommend after

@dataclass(frozen=True)
class ClickSessions:
    """A click log cut into sessions by the converter's steps 1-4, for recommending after each.

    Session ``k`` (0-based) has id ``session_id[k]``, visitor ``visitor[k]`` and the original
    item ids ``items[starts[k]:starts[k + 1]]`` in time order. Sessions are in id order.
    """

    session_id: np.ndarray  # int64, 1..N ascending
    visitor: np.ndarray  # int64
    starts: np.ndarray  # int64, N + 1 offsets into ``items``
    items: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.session_id)

    def items_of(self, k: int) -> list[int]:
        """The item ids of the ``k``-th session (0-based), oldest first."""
        return self.items[self.starts[k]:self.starts[k + 1]].tolist()


def click_sessions(columns: dict[str, np.ndarray],
                   options: ConvertOptions = ConvertOptions()) -> ClickSessions:
    """The sessions of ``read_events`` columns as the converter cuts them, before its filters.

    Steps 1-4 of the protocol (order, ``session_gap``, ``keep_events``, ``dedup_consecutive``)
    run exactly as in :func:`convert_events`; the training-data steps 5-7 (length and support
    filters, time split, cold items) do not, so a session of one kept click is kept. Sessions are
    numbered 1..N by the converter's rule (first kept event's timestamp, visitor id, order within
    the visitor): the converter's own session ids when its filters remove no session. Empties
    ``columns``; InputError for invalid options.
    """
    options = options.validated()
    cut = sessionize(columns, options, Progress(False))
    events = cut.events
    if len(events) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return ClickSessions(empty, empty, np.zeros(1, dtype=np.int64), empty)
    first = events.run_starts()
    new_id = session_numbers(events.session[first], events.timestamp[first], cut.session_visitor,
                              cut.counter.n_sessions)
    events, sid = sessions_in_order(events, new_id)
    first = np.flatnonzero(events.run_starts())
    return ClickSessions(session_id=sid[first].astype(np.int64),
                         visitor=cut.session_visitor[events.session[first]].astype(np.int64),
                         starts=np.append(first, len(events)).astype(np.int64),
                         items=cut.item_ids[events.item].astype(np.int64))


def read_click_sessions(events_path: str | os.PathLike,
                        options: ConvertOptions = ConvertOptions()) -> ClickSessions:
    """:func:`click_sessions` of an ``events.csv`` file (read whole, checked by ``read_events``)."""
    options = options.validated()
    return click_sessions(read_events(events_path), options)


