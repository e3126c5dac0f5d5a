"""Retail Rocket ``events.csv`` -> pre-augmented RecBole benchmark files (docs/design.md §2).

``convert_events(events_path, out_dir, options)`` writes ``DIR/<name>.train.inter``,
``DIR/<name>.valid.inter`` (unless ``valid_days == 0``), ``DIR/<name>.test.inter`` and
``DIR/<name>.stats.json`` (``name`` = the last component of ``DIR``), all atomically, the stats
file last. The input is read and checked by ``events_input.read_events``. The protocol, step
by step (every step vectorised with numpy, no loop per event):

1. Order each visitor's events by timestamp; ties keep file order (stable sort).
2. Sessionize over **all** event types: an event starts a new session if it is the visitor's first
   or its gap to the visitor's previous event is strictly greater than ``session_gap`` seconds
   (compared in integer milliseconds).
3. Keep only the ``keep_events`` types.
4. Optionally (``dedup_consecutive``) drop an event whose item equals the previous kept event's
   item in the same session; applied once, after step 3 and before step 5.
5. Repeat until nothing changes: drop sessions with fewer than ``min_session_length`` events,
   then items with fewer than ``min_item_support`` events.
6. ``t_end`` = the last remaining timestamp; a session's time ``s`` is its last event's. test:
   ``s > t_end - test_days`` days; valid: ``t_end - (test_days + valid_days) < s <= t_end -
   test_days``; train: the rest.
7. In valid and test, drop events whose item never occurs in train, then sessions left with fewer
   than 2 events (no further filtering).

Final sessions are numbered 1..N across all splits in order of (first remaining event's
timestamp, visitor id, the session's order within its visitor); each file lists its sessions in
that order, every session's n - 1 (prefix -> next item) cases in time order. Item ids are the
original ones.

Presets (``PRESETS``; explicit options override them on the command line):

- ``ludewig2021``: Ludewig et al. 2021 ("Empirical analysis of session-based recommendation
  algorithms", UMUAI): 30-minute sessions over all events, views only, no de-duplication, item
  support >= 5, session length >= 2, last 7 days test and the 7 days before them validation.
- ``hidasi-gru4rec``: Hidasi's GRU4Rec comparison on Retail Rocket: 1-hour sessions, views only,
  consecutive duplicates removed, iterated filters (support >= 5, length >= 2), last 7 days test,
  7 days validation.

``click_sessions`` / ``read_click_sessions`` run steps 1-4 only and return every session with its
items, numbered by the same rule: the sessions ``recbole-srgnn recommend`` scores from a raw log.

A second call with the same input bytes and the same options reuses the files (checked through
``stats.json``: the options, the input's size and SHA-256, and the presence and sizes of every
output file); ``force=True`` rebuilds.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import numbers
import os
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from recbole_srgnn.data.benchmark_files import Cases, sessions_to_cases, write_cases
from recbole_srgnn.data.events_input import EVENT_TYPES, check_events_file, read_events
from recbole_srgnn.errors import InputError
from recbole_srgnn.files import atomic_outputs, check_output_file, sha256_of

FORMAT = "recbole-srgnn/retailrocket-benchmark-v1"
DAY_MS = 86_400_000
SPLITS = ("train", "valid", "test")


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


#: Published protocols. ``ludewig2021``: Ludewig et al. 2021, "Empirical analysis of session-based
#: recommendation algorithms" (UMUAI) - 30-minute sessions over all events, views only, no
#: de-duplication, item support >= 5, session length >= 2, last 7 days test, the 7 before
#: validation. ``hidasi-gru4rec``: Hidasi's GRU4Rec comparison on Retail Rocket - 1-hour
#: sessions, views only, consecutive duplicates removed, iterated filters (support >= 5,
#: length >= 2), last 7 days test, 7 days validation.
PRESETS: dict[str, ConvertOptions] = {
    "ludewig2021": ConvertOptions(session_gap=1800, keep_events=("view",), dedup_consecutive=False,
                                  min_item_support=5, min_session_length=2, test_days=7.0,
                                  valid_days=7.0),
    "hidasi-gru4rec": ConvertOptions(session_gap=3600, keep_events=("view",), dedup_consecutive=True,
                                     min_item_support=5, min_session_length=2, test_days=7.0,
                                     valid_days=7.0),
}


# ----------------------------------------------------------------------------------- utilities

class _Progress:
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


def _exact(value: float) -> Fraction:
    """``value`` as an exact fraction, read as the decimal the user wrote (0.1 -> 1/10)."""
    return Fraction(repr(float(value)))


def _distinct(codes: np.ndarray, size: int) -> int:
    if len(codes) == 0:
        return 0
    return int(np.count_nonzero(np.bincount(codes, minlength=size)))


def output_paths(out_dir: Path, name: str, with_valid: bool) -> dict[str, Path]:
    paths = {"train": out_dir / f"{name}.train.inter"}
    if with_valid:
        paths["valid"] = out_dir / f"{name}.valid.inter"
    paths["test"] = out_dir / f"{name}.test.inter"
    paths["stats"] = out_dir / f"{name}.stats.json"
    return paths


# ---------------------------------------------------------------------------------- the protocol

@dataclass
class _Events:
    """Events in (visitor, time) order; ``session`` codes never decrease along the array.

    ``item`` and ``session`` are dense int32 codes (``item_ids[item]`` is the original id).
    """

    timestamp: np.ndarray
    item: np.ndarray
    session: np.ndarray

    def take(self, mask: np.ndarray) -> "_Events":
        return _Events(self.timestamp[mask], self.item[mask], self.session[mask])

    def __len__(self) -> int:
        return len(self.timestamp)

    def run_starts(self) -> np.ndarray:
        """Boolean mask of each session's first event."""
        first = np.ones(len(self.session), dtype=bool)
        first[1:] = self.session[1:] != self.session[:-1]
        return first


@dataclass
class _Counter:
    n_sessions: int
    n_items: int

    def measure(self, events: _Events) -> tuple[int, int, int]:
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


def _iterated_filter(events: _Events, options: ConvertOptions, counter: _Counter):
    rounds = []
    while True:
        entry = {}
        before = counter.measure(events)
        length = np.bincount(events.session, minlength=counter.n_sessions)
        keep = length[events.session] >= options.min_session_length
        if not keep.all():
            events = events.take(keep)
        after = counter.measure(events) if not keep.all() else before
        entry["short_sessions"] = counter.removed(before, after)
        support = np.bincount(events.item, minlength=counter.n_items)
        keep = support[events.item] >= options.min_item_support
        if not keep.all():
            events = events.take(keep)
        final = counter.measure(events) if not keep.all() else after
        entry["rare_items"] = counter.removed(after, final)
        rounds.append(entry)
        if final == before:
            return events, rounds


def _split_stats(events: _Events, counter: _Counter, n_cases: int) -> dict[str, Any]:
    n_events, n_sessions, n_items = counter.measure(events)
    return {
        "sessions": n_sessions,
        "events": n_events,
        "cases": int(n_cases),
        "items": n_items,
        "first_event": iso_utc(int(events.timestamp.min())) if n_events else None,
        "last_event": iso_utc(int(events.timestamp.max())) if n_events else None,
    }


def _sessions_in_order(events: _Events, rank_of_session: np.ndarray) -> tuple[_Events, np.ndarray]:
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


@dataclass
class _Sessionized:
    """Steps 1-4 done: the kept events and what the later steps and the statistics need."""

    events: _Events
    item_ids: np.ndarray  # original item id of each item code
    session_visitor: np.ndarray  # visitor id of each session code
    counter: _Counter
    stats: dict[str, Any]  # "raw" and "sessionized"
    filters: dict[str, Any]  # "event_types" and "dedup_consecutive"


def _sessionize(columns: dict[str, np.ndarray], options: ConvertOptions,
                progress: _Progress) -> _Sessionized:
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
    gap_ms = math.floor(_exact(options.session_gap) * 1000)
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
    events = _Events(timestamp, item, session)
    counter = _Counter(n_sessions, len(item_ids))
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
    return _Sessionized(events, item_ids, session_visitor, counter, stats, filters)


def _session_numbers(codes: np.ndarray, first_timestamp: np.ndarray, session_visitor: np.ndarray,
                     n_sessions: int) -> np.ndarray:
    """Final session ids 1..N of the session ``codes`` (each with its first remaining event's
    timestamp), ordered by (that timestamp, visitor id, order within the visitor); indexed by
    session code, 0 for a code not in ``codes``."""
    ranked = np.lexsort((codes, session_visitor[codes], first_timestamp))
    new_id = np.zeros(n_sessions, dtype=np.int64)
    new_id[codes[ranked]] = np.arange(1, len(codes) + 1)
    return new_id


def _run_protocol(columns: dict[str, np.ndarray], options: ConvertOptions,
                  progress: _Progress) -> tuple[dict[str, Cases], dict[str, Any]]:
    cut = _sessionize(columns, options, progress)
    events, item_ids, session_visitor, counter = (cut.events, cut.item_ids, cut.session_visitor,
                                                  cut.counter)
    stats, filters, n_sessions = cut.stats, cut.filters, cut.counter.n_sessions
    del cut

    # 5. iterated session-length and item-support filters.
    events, rounds = _iterated_filter(events, options, counter)
    filters["iterated"] = {
        "rounds": rounds,
        "rounds_run": len(rounds),
        "rounds_removing": sum(1 for r in rounds if any(v for step in r.values() for v in step.values())),
    }
    progress(f"filtered: {len(events):,} events in {counter.measure(events)[1]:,} sessions "
             f"after {len(rounds)} round(s)")
    if len(events) == 0:
        raise InputError(
            "nothing left after filtering: no session keeps "
            f"{options.min_session_length}+ events of items seen {options.min_item_support}+ times "
            "(use more data, or lower --min_item_support / --min_session_length)")

    # 6. split by session end time.
    t_end = int(events.timestamp.max())
    test_span = _exact(options.test_days) * DAY_MS
    valid_span = (_exact(options.test_days) + _exact(options.valid_days)) * DAY_MS
    # For integer s and a real c: s > c <=> s > floor(c), so integer cuts are exact.
    test_cut = math.floor(t_end - test_span)
    valid_cut = math.floor(t_end - valid_span)
    # Events are in time order within a session: a run's last event holds the session's end.
    last = np.ones(len(events), dtype=bool)
    last[:-1] = events.session[1:] != events.session[:-1]
    session_end = np.zeros(n_sessions, dtype=np.int64)
    session_end[events.session[last]] = events.timestamp[last]
    del last
    split_of_session = np.where(session_end > test_cut, 2, np.where(session_end > valid_cut, 1, 0))
    split_of_session = split_of_session.astype(np.int8)
    del session_end
    split_of = split_of_session[events.session]
    parts = {name: events.take(split_of == code) for code, name in enumerate(SPLITS)}
    del split_of, events
    stats["split"] = {
        "t_end": iso_utc(t_end), "t_end_ms": t_end,
        "test_after": iso_utc(test_cut), "test_after_ms": test_cut,
        "valid_after": iso_utc(valid_cut) if options.valid_days else None,
        "valid_after_ms": valid_cut if options.valid_days else None,
        "rule": "test: session end > test_after; valid: valid_after < end <= test_after; "
                "train: the rest (session end = its last event's timestamp)",
    }

    # 7. cold items out of valid and test, then sessions shorter than 2.
    train_items = np.zeros(len(item_ids), dtype=bool)
    train_items[parts["train"].item] = True
    filters["cold_items"] = {}
    for name in ("valid", "test"):
        part = parts[name]
        before = counter.measure(part)
        part = part.take(train_items[part.item])
        middle = counter.measure(part)
        length = np.bincount(part.session, minlength=n_sessions)
        part = part.take(length[part.session] >= 2)
        filters["cold_items"][name] = {
            "cold_events": counter.removed(before, middle),
            "short_sessions": counter.removed(middle, counter.measure(part)),
        }
        parts[name] = part
    stats["filters"] = filters

    # Session ids 1..N over all splits: by (first remaining timestamp, visitor, order in visitor).
    codes, first_ts = [], []
    for part in parts.values():
        first = part.run_starts()
        codes.append(part.session[first])
        first_ts.append(part.timestamp[first])
    codes = np.concatenate(codes)
    new_id = _session_numbers(codes, np.concatenate(first_ts), session_visitor, n_sessions)
    del first_ts

    cases: dict[str, Cases] = {}
    split_stats: dict[str, Any] = {}
    for name, part in parts.items():
        if name == "valid" and not options.valid_days:
            continue
        part, sid = _sessions_in_order(part, new_id)
        split_cases = sessions_to_cases(sid, item_ids[part.item], part.timestamp)
        cases[name] = split_cases
        split_stats[name] = _split_stats(part, counter, len(split_cases))
        if len(split_cases) == 0:
            what = {"train": "training", "valid": "validation", "test": "test"}[name]
            hint = {"train": "lower --test_days/--valid_days or use more data",
                    "valid": "change --valid_days (0 = no validation file)",
                    "test": "change --test_days"}[name]
            raise InputError(f"nothing left after filtering in the {what} split (no session with 2+ "
                             f"events); {hint}")
    stats["splits"] = split_stats
    stats["sessions_total"] = int(len(codes))
    progress("split: " + ", ".join(f"{n} {s['sessions']:,} sessions / {s['cases']:,} cases"
                                   for n, s in split_stats.items()))
    return cases, stats


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
    cut = _sessionize(columns, options, _Progress(False))
    events = cut.events
    if len(events) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return ClickSessions(empty, empty, np.zeros(1, dtype=np.int64), empty)
    first = events.run_starts()
    new_id = _session_numbers(events.session[first], events.timestamp[first], cut.session_visitor,
                              cut.counter.n_sessions)
    events, sid = _sessions_in_order(events, new_id)
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


# ------------------------------------------------------------------------------------ the entry

def _cached(paths: dict[str, Path], params: dict[str, Any], input_info: dict[str, Any]) -> dict | None:
    stats_path = paths["stats"]
    if not stats_path.is_file():
        return None
    try:
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(stats, dict) or stats.get("format") != FORMAT or stats.get("params") != params:
        return None
    recorded = stats.get("input", {})
    if recorded.get("size") != input_info["size"] or recorded.get("sha256") != input_info["sha256"]:
        return None
    files = stats.get("files", {})
    for split, path in paths.items():
        if split == "stats":
            continue
        if not path.is_file() or files.get(split, {}).get("bytes") != path.stat().st_size:
            return None
    return stats


def convert_events(events_path: str | os.PathLike, out_dir: str | os.PathLike,
                   options: ConvertOptions = ConvertOptions(), *, force: bool = False,
                   progress: bool = True) -> dict[str, Any]:
    """Convert a Retail Rocket ``events.csv`` into RecBole benchmark files in ``out_dir``.

    Returns the statistics written to ``<name>.stats.json``, plus ``reused`` (True when a
    previous identical conversion was found) and ``elapsed_s``. Raises ``InputError`` (writing
    nothing) for a missing or malformed input, invalid options, or nothing left to write.
    """
    report = _Progress(progress)
    options = options.validated() if isinstance(options, ConvertOptions) else None
    if options is None:
        raise InputError("options must be a ConvertOptions")
    events_path = Path(events_path)
    out_dir = Path(out_dir)
    check_events_file(events_path)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output path {out_dir} exists and is not a directory")
    name = out_dir.resolve().name
    if not name:
        raise InputError(f"cannot name a dataset after the output directory {out_dir}")
    paths = output_paths(out_dir, name, bool(options.valid_days))
    for path in paths.values():  # before any work: a bad output path fails at once
        check_output_file(path, "output file")
    params = options.as_dict()
    input_info = {"path": str(events_path.resolve()), "size": events_path.stat().st_size,
                  "sha256": sha256_of(events_path)}

    if not force:
        stats = _cached(paths, params, input_info)
        if stats is not None:
            report(f"reusing the conversion in {out_dir} (same input and options)")
            return dict(stats, reused=True, elapsed_s=report.elapsed())

    columns = read_events(events_path)
    report(f"read {len(columns['timestamp']):,} rows from {events_path}")
    cases, stats = _run_protocol(columns, options, report)
    del columns

    files: dict[str, Any] = {}
    split_names = [s for s in SPLITS if s in cases]
    with atomic_outputs([paths[s] for s in split_names] + [paths["stats"]]) as temps:
        for split, temp in zip(split_names, temps):
            write_cases(temp, cases[split], max_prefix_length=options.max_prefix_length)
            files[split] = {"name": paths[split].name, "bytes": temp.stat().st_size,
                            "rows": len(cases[split])}
        elapsed = report.elapsed()
        full = {
            "format": FORMAT,
            "name": name,
            "params": params,
            "input": input_info,
            **stats,
            "files": files,
            "elapsed_s": round(elapsed, 3),
        }
        temps[-1].write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    if not options.valid_days:
        stale = out_dir / f"{name}.valid.inter"
        if stale.exists():
            stale.unlink()
    report(f"wrote {', '.join(files[s]['name'] for s in split_names)} to {out_dir}")
    return dict(full, reused=False, elapsed_s=report.elapsed())
