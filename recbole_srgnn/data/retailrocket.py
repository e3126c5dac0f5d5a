"""Retail Rocket ``events.csv`` -> pre-augmented RecBole benchmark files (docs/design.md §2).

``convert_events(events_path, out_dir, options)`` writes ``DIR/<name>.train.inter``,
``DIR/<name>.valid.inter`` (unless ``valid_days == 0``), ``DIR/<name>.test.inter`` and
``DIR/<name>.stats.json`` (``name`` = the last component of ``DIR``), all atomically, the stats
file last. The input is read and checked by ``events_input.read_events``. The protocol, step
by step (every step vectorised with numpy, no loop per event):

1-4. Order, sessionize, keep ``keep_events``, optionally drop consecutive duplicates: stated in
   ``sessions.py``, which holds them (they are shared with ``recbole-srgnn recommend``);
   duplicates are dropped once, after step 3 and before step 5.
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

``sessions.click_sessions`` / ``sessions.read_click_sessions`` run steps 1-4 only and return every
session with its items, numbered by the same rule: the sessions ``recbole-srgnn recommend`` scores
from a raw log. ``ConvertOptions`` is defined there too (``click_sessions`` takes it).

A second call with the same input bytes and the same options reuses the files (checked through
``stats.json``: the options, the input's size and SHA-256, and the presence and sizes of every
output file); ``force=True`` rebuilds.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from recbole_srgnn.data.benchmark_files import Cases, sessions_to_cases, write_cases
from recbole_srgnn.data.events_input import check_events_file, read_events
from recbole_srgnn.data.sessions import (
    ConvertOptions,
    Events,
    EventCounter,
    Progress,
    exact_decimal,
    iso_utc,
    session_numbers,
    sessionize,
    sessions_in_order,
)
from recbole_srgnn.errors import InputError
from recbole_srgnn.files import atomic_outputs, check_output_file, sha256_of

FORMAT = "recbole-srgnn/retailrocket-benchmark-v1"
DAY_MS = 86_400_000
SPLITS = ("train", "valid", "test")


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

def output_paths(out_dir: Path, name: str, with_valid: bool) -> dict[str, Path]:
    paths = {"train": out_dir / f"{name}.train.inter"}
    if with_valid:
        paths["valid"] = out_dir / f"{name}.valid.inter"
    paths["test"] = out_dir / f"{name}.test.inter"
    paths["stats"] = out_dir / f"{name}.stats.json"
    return paths


# ---------------------------------------------------------------------------------- the protocol

def _iterated_filter(events: Events, options: ConvertOptions, counter: EventCounter):
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


def _split_stats(events: Events, counter: EventCounter, n_cases: int) -> dict[str, Any]:
    n_events, n_sessions, n_items = counter.measure(events)
    return {
        "sessions": n_sessions,
        "events": n_events,
        "cases": int(n_cases),
        "items": n_items,
        "first_event": iso_utc(int(events.timestamp.min())) if n_events else None,
        "last_event": iso_utc(int(events.timestamp.max())) if n_events else None,
    }


def _run_protocol(columns: dict[str, np.ndarray], options: ConvertOptions,
                  progress: Progress) -> tuple[dict[str, Cases], dict[str, Any]]:
    cut = sessionize(columns, options, progress)
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
    test_span = exact_decimal(options.test_days) * DAY_MS
    valid_span = (exact_decimal(options.test_days) + exact_decimal(options.valid_days)) * DAY_MS
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
    new_id = session_numbers(codes, np.concatenate(first_ts), session_visitor, n_sessions)
    del first_ts

    cases: dict[str, Cases] = {}
    split_stats: dict[str, Any] = {}
    for name, part in parts.items():
        if name == "valid" and not options.valid_days:
            continue
        part, sid = sessions_in_order(part, new_id)
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
    report = Progress(progress)
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
