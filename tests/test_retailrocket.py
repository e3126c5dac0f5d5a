"""The Retail Rocket converter (docs/design.md §2): protocol edge cases, a naive reference, errors,
atomic writes, caching, the real sample and loading the result with RecBole."""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from recbole_srgnn.data import retailrocket as rr
from recbole_srgnn.data.retailrocket import PRESETS, convert_events
from recbole_srgnn.data.sessions import ConvertOptions, iso_utc
from recbole_srgnn.errors import InputError

HEADER = "timestamp,visitorid,event,itemid,transactionid"
DAY = 86_400_000
T0 = 1_440_000_000_000  # 2015-08-19, ms


def write_events(path: Path, rows, header: str = HEADER) -> Path:
    """rows: (timestamp_ms, visitor, event, item) in file order."""
    lines = [header]
    for k, (ts, visitor, event, item) in enumerate(rows):
        tx = f"{1000 + k}.0" if event == "transaction" else ""
        lines.append(f"{ts},{visitor},{event},{item},{tx}")
    path.write_text("\n".join(lines) + "\n")
    return path


def read_rows(path: Path) -> list[tuple[str, list[int], int, str]]:
    lines = path.read_text().splitlines()
    assert lines[0] == "session_id:token\titem_id_list:token_seq\titem_id:token\ttimestamp:float"
    out = []
    for line in lines[1:]:
        sid, prefix, target, ts = line.split("\t")
        out.append((sid, [int(x) for x in prefix.split(" ")], int(target), ts))
    return out


def sessions_of(path: Path) -> dict[str, list[int]]:
    """The full item sequence of each session of a file (prefix of its last case + target)."""
    result: dict[str, list[int]] = {}
    for sid, prefix, target, _ in read_rows(path):
        result[sid] = prefix + [target]
    return result


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def background(n_days: int = 30, visitor: int = 9000, items=(901, 902, 903)):
    """Many long-lived train sessions that make items 901..903 frequent and set t_end late."""
    rows = []
    for d in range(n_days):
        for k, item in enumerate(items * 2):
            rows.append((T0 + d * DAY + k * 1000, visitor + d, "view", item))
    return rows


def convert(tmp_path: Path, rows, name: str = "ds", **options) -> tuple[dict, Path]:
    events = write_events(tmp_path / f"{name}-events.csv", rows)
    out = tmp_path / name
    stats = convert_events(events, out, ConvertOptions(**options), progress=False)
    return stats, out


# ----------------------------------------------------------------------- the naive reference

def reference_convert(rows, options: ConvertOptions):
    """Pure-Python docs/design.md §2, one event at a time. Returns {split: text} or None (nothing left)."""
    gap = Fraction(repr(float(options.session_gap))) * 1000
    by_visitor = defaultdict(list)
    for index, (ts, visitor, event, item) in enumerate(rows):
        by_visitor[visitor].append((ts, index, event, item))
    sessions = []
    for visitor, events in by_visitor.items():
        events.sort(key=lambda e: (e[0], e[1]))
        previous = None
        order = 0
        for ts, _, event, item in events:
            if previous is None or ts - previous > gap:
                sessions.append({"visitor": visitor, "order": order, "events": []})
                order += 1
            sessions[-1]["events"].append((ts, item, event))
            previous = ts
    for s in sessions:
        s["events"] = [e for e in s["events"] if e[2] in options.keep_events]
    if options.dedup_consecutive:
        for s in sessions:
            kept = []
            for e in s["events"]:
                if kept and kept[-1][1] == e[1]:
                    continue
                kept.append(e)
            s["events"] = kept
    while True:
        changed = False
        for s in sessions:
            if s["events"] and len(s["events"]) < options.min_session_length:
                s["events"] = []
                changed = True
        support = Counter(e[1] for s in sessions for e in s["events"])
        for s in sessions:
            kept = [e for e in s["events"] if support[e[1]] >= options.min_item_support]
            if len(kept) != len(s["events"]):
                s["events"] = kept
                changed = True
        if not changed:
            break
    sessions = [s for s in sessions if s["events"]]
    if not sessions:
        return None
    t_end = max(e[0] for s in sessions for e in s["events"])
    test_days = Fraction(repr(float(options.test_days)))
    valid_days = Fraction(repr(float(options.valid_days)))
    split = {"train": [], "valid": [], "test": []}
    for s in sessions:
        end = s["events"][-1][0]
        if end > t_end - test_days * DAY:
            split["test"].append(s)
        elif end > t_end - (test_days + valid_days) * DAY:
            split["valid"].append(s)
        else:
            split["train"].append(s)
    train_items = {e[1] for s in split["train"] for e in s["events"]}
    for name in ("valid", "test"):
        for s in split[name]:
            s["events"] = [e for e in s["events"] if e[1] in train_items]
        split[name] = [s for s in split[name] if len(s["events"]) >= 2]
    everyone = sorted((s for part in split.values() for s in part),
                      key=lambda s: (s["events"][0][0], s["visitor"], s["order"]))
    for number, s in enumerate(everyone, start=1):
        s["id"] = number
    texts = {}
    for name, part in split.items():
        if name == "valid" and options.valid_days == 0:
            continue
        lines = ["session_id:token\titem_id_list:token_seq\titem_id:token\ttimestamp:float"]
        for s in sorted(part, key=lambda s: s["id"]):
            items = [e[1] for e in s["events"]]
            for k in range(1, len(items)):
                prefix = items[:k]
                if options.max_prefix_length:
                    prefix = prefix[-options.max_prefix_length:]
                ts = s["events"][k][0]
                lines.append(f"{s['id']}\t{' '.join(map(str, prefix))}\t{items[k]}\t"
                             f"{ts // 1000}.{ts % 1000:03d}")
        if len(lines) == 1:
            return None
        texts[name] = "\n".join(lines) + "\n"
    return texts


def random_log(seed: int):
    rng = np.random.default_rng(seed)
    n_visitors = int(rng.integers(3, 25))
    n_items = int(rng.integers(4, 25))
    rows = []
    for visitor in rng.permutation(np.arange(100, 100 + n_visitors)):
        t = T0 + int(rng.integers(0, 20 * DAY))
        for _ in range(int(rng.integers(1, 30))):
            choice = rng.random()
            if choice < 0.15:
                step = 0  # identical timestamps
            elif choice < 0.25:
                step = 1800_000 + int(rng.integers(-1, 2))  # around the 30-minute threshold
            elif choice < 0.35:
                step = 3600_000 + int(rng.integers(-1, 2))  # around the hour
            elif choice < 0.45:
                step = int(rng.integers(1, 5)) * DAY
            else:
                step = int(rng.integers(1, 600_000))
            t += step
            event = rng.choice(["view"] * 8 + ["addtocart", "transaction"])
            item = int(rng.integers(0, n_items)) * 1000 + 7  # sparse ids
            rows.append((t, int(visitor), str(event), item))
    order = rng.permutation(len(rows))  # unsorted file; ties then follow this file order
    return [rows[k] for k in order]


def random_options(seed: int) -> ConvertOptions:
    rng = np.random.default_rng(10_000 + seed)
    keep = [("view",), ("view", "addtocart"), ("view", "addtocart", "transaction")][int(rng.integers(0, 3))]
    return ConvertOptions(
        session_gap=float(rng.choice([1800, 3600, 600.5])),
        keep_events=keep,
        dedup_consecutive=bool(rng.integers(0, 2)),
        min_item_support=int(rng.integers(1, 4)),
        min_session_length=int(rng.integers(1, 4)),
        test_days=float(rng.choice([2, 3.5, 5])),
        valid_days=float(rng.choice([0, 1.5, 4])),
        max_prefix_length=int(rng.choice([0, 2, 50])),
    )


@pytest.mark.parametrize("seed", range(16))
def test_matches_naive_reference(tmp_path, seed):
    rows = random_log(seed)
    options = random_options(seed)
    expected = reference_convert(rows, options)
    events = write_events(tmp_path / "events.csv", rows)
    out = tmp_path / "rand"
    if expected is None:
        with pytest.raises(InputError, match="nothing left"):
            convert_events(events, out, options, progress=False)
        assert files_in(out) == []
        return
    stats = convert_events(events, out, options, progress=False)
    assert sorted(stats["splits"]) == sorted(expected)
    for split, text in expected.items():
        assert (out / f"rand.{split}.inter").read_text() == text, split
        assert stats["splits"][split]["cases"] == text.count("\n") - 1


def test_reference_comparison_is_not_vacuous():
    """Most random cases produce files (so the comparison above checks real output)."""
    produced = sum(reference_convert(random_log(s), random_options(s)) is not None for s in range(16))
    assert produced >= 10


# ------------------------------------------------------------------------- protocol edge cases

def test_gap_equal_to_threshold_stays_in_session(tmp_path):
    gap = 3600_000
    rows = background() + [
        (T0 + 1000, 1, "view", 901), (T0 + 1000 + gap, 1, "view", 902),  # exactly the gap
        (T0 + 2000, 2, "view", 901), (T0 + 2000 + gap + 1, 2, "view", 902),  # one ms more
    ]
    stats, out = convert(tmp_path, rows, min_item_support=1)
    sessions = sessions_of(out / "ds.train.inter")
    assert [901, 902] in sessions.values()  # visitor 1: one session of two views
    # visitor 2's two views are two single-event sessions: gone.
    assert sum(seq == [901, 902] for seq in sessions.values()) == 1
    assert stats["filters"]["iterated"]["rounds"][0]["short_sessions"]["sessions"] == 2


def test_session_gap_fraction_of_a_second(tmp_path):
    rows = background() + [(T0 + 10, 1, "view", 901), (T0 + 10 + 1500, 1, "view", 903),
                           (T0 + 20, 2, "view", 901), (T0 + 20 + 1501, 2, "view", 902)]
    _, out = convert(tmp_path, rows, min_item_support=1, session_gap=1.5)
    values = list(sessions_of(out / "ds.train.inter").values())
    assert [901, 903] in values and [901, 902] not in values


def test_identical_timestamps_keep_file_order(tmp_path):
    rows = background() + [
        (T0 + 5000, 1, "view", 903), (T0 + 5000, 1, "view", 901), (T0 + 5000, 1, "view", 902),
        (T0 + 4000, 1, "view", 901),
    ]
    _, out = convert(tmp_path, rows, min_item_support=1)
    assert [901, 903, 901, 902] in sessions_of(out / "ds.train.inter").values()


def test_non_view_events_bridge_sessions(tmp_path):
    hour = 3600_000
    rows = background() + [
        (T0, 1, "view", 901),
        (T0 + 50 * 60_000, 1, "addtocart", 901),  # keeps the session alive
        (T0 + 100 * 60_000, 1, "view", 902),
        (T0 + 10 * hour, 2, "view", 901),
        (T0 + 10 * hour + 100 * 60_000, 2, "view", 902),  # 100 min later, no bridge
    ]
    _, out = convert(tmp_path, rows, min_item_support=1)
    values = list(sessions_of(out / "ds.train.inter").values())
    assert values.count([901, 902]) == 1  # visitor 1 only
    # with add-to-cart events kept, the bridge event itself appears
    _, out2 = convert(tmp_path, rows, name="ds2", min_item_support=1, keep_events=("view", "addtocart"))
    assert [901, 901, 902] in sessions_of(out2 / "ds2.train.inter").values()


def test_iterated_filtering_cascade(tmp_path):
    # Item 7 has 3 events (support 3 passes), item 8 has 2 (fails). Round 1 drops item 8, which
    # leaves sessions B and C with one event; round 2 drops them, so item 7 falls to one event
    # and is dropped; round 3 drops session A, now a single 901; round 4 changes nothing.
    rows = background(items=(901, 902, 903)) + [
        (T0 + 0, 1, "view", 7), (T0 + 1000, 1, "view", 901),            # A
        (T0 + 0, 2, "view", 7), (T0 + 1000, 2, "view", 8),              # B
        (T0 + 0, 3, "view", 7), (T0 + 1000, 3, "view", 8),              # C
        (T0 + 0, 4, "view", 5), (T0 + 1000, 4, "view", 5),              # D: item 5 twice
        (T0 + 2000, 4, "view", 6), (T0 + 3000, 5, "view", 6),           # item 6 split over sessions
        (T0 + 4000, 5, "view", 6), (T0 + 5000, 5, "view", 5),           # E
    ]
    stats, out = convert(tmp_path, rows, min_item_support=3)
    values = list(sessions_of(out / "ds.train.inter").values())
    flat = {i for seq in values for i in seq}
    assert {7, 8} & flat == set()
    assert {5, 6} <= flat  # 5 and 6 have 3 events each and survive
    rounds = stats["filters"]["iterated"]["rounds"]
    assert len(rounds) == 4 and stats["filters"]["iterated"]["rounds_removing"] == 3
    assert [r["rare_items"]["events"] for r in rounds] == [2, 1, 0, 0]
    assert [r["rare_items"]["items"] for r in rounds] == [1, 1, 0, 0]
    assert [r["short_sessions"]["sessions"] for r in rounds] == [0, 2, 1, 0]
    assert [r["short_sessions"]["events"] for r in rounds] == [0, 2, 1, 0]
    expected = reference_convert(rows, ConvertOptions(min_item_support=3))
    assert (out / "ds.train.inter").read_text() == expected["train"]


def test_dedup_consecutive(tmp_path):
    rows = background() + [
        (T0, 1, "view", 901), (T0 + 1, 1, "view", 901), (T0 + 2, 1, "addtocart", 902),
        (T0 + 3, 1, "view", 901), (T0 + 4, 1, "view", 902), (T0 + 5, 1, "view", 901),
    ]
    _, off = convert(tmp_path, rows, name="off", min_item_support=1)
    _, on = convert(tmp_path, rows, name="on", min_item_support=1, dedup_consecutive=True)
    assert [901, 901, 901, 902, 901] in sessions_of(off / "off.train.inter").values()
    # the add-to-cart is removed first (step 3), so the three 901 views are consecutive
    assert [901, 902, 901] in sessions_of(on / "on.train.inter").values()
    assert [901, 901, 901, 902, 901] not in sessions_of(on / "on.train.inter").values()


def test_split_boundaries_exact(tmp_path):
    t_end = T0 + 30 * DAY
    week = 7 * DAY
    rows = background(n_days=10) + [
        (t_end - 10, 50, "view", 901), (t_end, 50, "view", 902),                     # test, sets t_end
        (t_end - week - 10, 51, "view", 901), (t_end - week, 51, "view", 902),       # valid (==)
        (t_end - week - 10, 52, "view", 902), (t_end - week + 1, 52, "view", 903),   # test (+1 ms)
        (t_end - 2 * week - 10, 53, "view", 903), (t_end - 2 * week, 53, "view", 901),  # train (==)
        (t_end - 2 * week - 9, 54, "view", 903), (t_end - 2 * week + 1, 54, "view", 902),  # valid
    ]
    stats, out = convert(tmp_path, rows, min_item_support=1)
    assert stats["split"]["t_end_ms"] == t_end
    assert stats["split"]["test_after_ms"] == t_end - week
    assert stats["split"]["valid_after_ms"] == t_end - 2 * week
    test = list(sessions_of(out / "ds.test.inter").values())
    valid = list(sessions_of(out / "ds.valid.inter").values())
    train = list(sessions_of(out / "ds.train.inter").values())
    assert sorted(test) == [[901, 902], [902, 903]]
    assert sorted(valid) == [[901, 902], [903, 902]]
    assert [903, 901] in train
    assert stats["split"]["t_end"] == iso_utc(t_end)


def test_cold_items_dropped_from_valid_and_test(tmp_path):
    t_end = T0 + 30 * DAY
    rows = background(n_days=10) + [
        # item 77 only in test (cold): its session shrinks below 2 and is removed
        (t_end - 2000, 60, "view", 901), (t_end - 1000, 60, "view", 77), (t_end, 60, "view", 77),
        (t_end - 3000, 61, "view", 77), (t_end - 2500, 61, "view", 77), (t_end - 2400, 61, "view", 901),
        (t_end - 2300, 61, "view", 902),
        # a valid session keeps its warm items only
        (t_end - 8 * DAY, 62, "view", 902), (t_end - 8 * DAY + 1, 62, "view", 77),
        (t_end - 8 * DAY + 2, 62, "view", 903),
    ]
    stats, out = convert(tmp_path, rows, min_item_support=1)
    assert list(sessions_of(out / "ds.test.inter").values()) == [[901, 902]]
    assert list(sessions_of(out / "ds.valid.inter").values()) == [[902, 903]]
    cold = stats["filters"]["cold_items"]
    assert cold["test"]["cold_events"]["events"] == 4
    assert cold["test"]["short_sessions"]["sessions"] == 1
    assert cold["valid"]["cold_events"]["events"] == 1


def test_session_numbering_and_grouping(tmp_path):
    rows = background(n_days=20) + [
        (T0 + 5 * DAY, 3, "view", 901), (T0 + 5 * DAY + 1, 3, "view", 902),
        (T0 + 5 * DAY, 2, "view", 903), (T0 + 5 * DAY + 1, 2, "view", 901),  # same start: visitor 2 first
        (T0 + 5 * DAY - 5, 4, "view", 902), (T0 + 5 * DAY + 2, 4, "view", 903),
    ]
    _, out = convert(tmp_path, rows, min_item_support=1)
    text = {split: read_rows(out / f"ds.{split}.inter") for split in ("train", "valid", "test")}
    all_ids = [int(r[0]) for rows_ in text.values() for r in rows_]
    distinct = sorted(set(all_ids))
    assert distinct == list(range(1, len(distinct) + 1))  # 1..N over all splits
    for rows_ in text.values():
        ids = [int(r[0]) for r in rows_]
        assert ids == sorted(ids)  # grouped, in id order
    seqs = sessions_of(out / "ds.train.inter")
    by_seq = {tuple(v): int(k) for k, v in seqs.items()}
    assert by_seq[(902, 903)] < by_seq[(903, 901)] < by_seq[(901, 902)]


def test_max_prefix_length_keeps_most_recent(tmp_path):
    items = [901, 902, 903] * 20  # 60 events
    rows = background() + [(T0 + k * 1000, 1, "view", item) for k, item in enumerate(items)]
    _, out = convert(tmp_path, rows, min_item_support=1)
    long = [r for r in read_rows(out / "ds.train.inter") if len(r[1]) >= 49]
    last = long[-1]
    assert last[1] == items[9:59] and last[2] == items[59]
    assert max(len(r[1]) for r in long) == 50
    _, out0 = convert(tmp_path, rows, name="all", min_item_support=1, max_prefix_length=0)
    assert max(len(r[1]) for r in read_rows(out0 / "all.train.inter")) == 59


def test_timestamps_exact_milliseconds(tmp_path):
    rows = background() + [(1442004589123, 1, "view", 901), (1442004589999, 1, "view", 902)]
    _, out = convert(tmp_path, rows, min_item_support=1)
    matching = [r for r in read_rows(out / "ds.test.inter") + read_rows(out / "ds.train.inter")
                + read_rows(out / "ds.valid.inter") if r[1] == [901] and r[2] == 902]
    assert any(r[3] == "1442004589.999" for r in matching)


def test_presets():
    lud = PRESETS["ludewig2021"]
    assert (lud.session_gap, lud.keep_events, lud.dedup_consecutive, lud.min_item_support,
            lud.min_session_length, lud.test_days, lud.valid_days) == (1800, ("view",), False, 5, 2, 7.0, 7.0)
    hid = PRESETS["hidasi-gru4rec"]
    assert (hid.session_gap, hid.keep_events, hid.dedup_consecutive, hid.min_item_support,
            hid.min_session_length, hid.test_days, hid.valid_days) == (3600, ("view",), True, 5, 2, 7.0, 7.0)
    assert ConvertOptions() == ConvertOptions(session_gap=3600, keep_events=("view",),
                                              dedup_consecutive=False, min_item_support=5,
                                              min_session_length=2, test_days=7.0, valid_days=7.0,
                                              max_prefix_length=50)


def test_presets_change_the_result(tmp_path):
    # Views 40 minutes apart: one session with a 1 h gap, two with 30 minutes.
    rows = background() + [(T0 + k * 40 * 60_000, 1, "view", 901 + k % 2) for k in range(4)]
    rows = rows * 1  # keep file order
    events = write_events(tmp_path / "events.csv", rows)
    opt_l = replace(PRESETS["ludewig2021"], min_item_support=1)
    opt_h = replace(PRESETS["hidasi-gru4rec"], min_item_support=1)
    convert_events(events, tmp_path / "l", opt_l, progress=False)
    convert_events(events, tmp_path / "h", opt_h, progress=False)
    assert [901, 902, 901, 902] in sessions_of(tmp_path / "h" / "h.train.inter").values()
    assert [901, 902, 901, 902] not in sessions_of(tmp_path / "l" / "l.train.inter").values()
    for opt, name in ((opt_l, "l"), (opt_h, "h")):
        expected = reference_convert(rows, opt)
        assert (tmp_path / name / f"{name}.train.inter").read_text() == expected["train"]


def test_no_validation_file(tmp_path):
    _, out = convert(tmp_path, background() + [(T0, 1, "view", 901), (T0 + 1, 1, "view", 902)],
                     min_item_support=1, valid_days=0)
    assert files_in(out) == ["ds.stats.json", "ds.test.inter", "ds.train.inter"]
    stats = json.loads((out / "ds.stats.json").read_text())
    assert set(stats["splits"]) == {"train", "test"} and stats["split"]["valid_after"] is None


def test_deterministic_bytes(tmp_path):
    rows = random_log(3)
    events = write_events(tmp_path / "events.csv", rows)
    options = ConvertOptions(min_item_support=1, test_days=3, valid_days=2)
    convert_events(events, tmp_path / "a" / "same", options, progress=False)
    convert_events(events, tmp_path / "b" / "same", options, progress=False, force=True)
    for suffix in ("train.inter", "valid.inter", "test.inter"):
        assert (tmp_path / "a" / "same" / f"same.{suffix}").read_bytes() == \
            (tmp_path / "b" / "same" / f"same.{suffix}").read_bytes()


def test_extra_and_reordered_columns_give_byte_identical_files(tmp_path):
    """Only the named columns matter, wherever they stand; extra columns (text with quoted commas,
    numbers, empty cells) are ignored, on the fast reader and on the slow one (``12.0`` ids)."""
    rows = random_log(3)
    options = ConvertOptions(min_item_support=1, test_days=3, valid_days=2)
    plain = write_events(tmp_path / "plain.csv", rows)
    order = ["note", "itemid", "transactionid", "event", "score", "timestamp", "visitorid", "extra"]
    variants = {}
    for name, float_ids in (("reordered", False), ("reordered-slow", True)):
        lines = [",".join(order)]
        for k, (ts, visitor, event, item) in enumerate(rows):
            values = {"timestamp": str(ts), "visitorid": f"{visitor}.0" if float_ids else str(visitor),
                      "event": event, "itemid": str(item),
                      "transactionid": f"{1000 + k}.0" if event == "transaction" else "",
                      "note": f'"row {k}, a view of {item}"', "score": f"{k * 0.5}",
                      "extra": "" if k % 3 else "x"}
            lines.append(",".join(values[column] for column in order))
        variants[name] = tmp_path / f"{name}.csv"
        variants[name].write_text("\n".join(lines) + "\n")
    assert variants["reordered"].read_bytes() != plain.read_bytes()

    expected = convert_events(plain, tmp_path / "a" / "same", options, progress=False)
    assert all(expected["splits"][s]["cases"] > 0 for s in ("train", "valid", "test"))
    for name, events in variants.items():
        stats = convert_events(events, tmp_path / name / "same", options, progress=False)
        assert stats["raw"]["rows"] == len(rows)
        for suffix in ("train.inter", "valid.inter", "test.inter"):
            assert (tmp_path / name / "same" / f"same.{suffix}").read_bytes() == \
                (tmp_path / "a" / "same" / f"same.{suffix}").read_bytes(), (name, suffix)
        ignore = {"input", "elapsed_s", "reused"}
        assert {k: v for k, v in stats.items() if k not in ignore} == \
            {k: v for k, v in expected.items() if k not in ignore}, name


def test_stats_content(tmp_path):
    rows = background() + [(T0, 1, "addtocart", 901), (T0 + 1, 1, "view", 902)]
    events = write_events(tmp_path / "events.csv", rows)
    stats = convert_events(events, tmp_path / "st", ConvertOptions(min_item_support=1), progress=False)
    on_disk = json.loads((tmp_path / "st" / "st.stats.json").read_text())
    assert on_disk["params"] == ConvertOptions(min_item_support=1).as_dict()
    assert on_disk["input"]["size"] == events.stat().st_size
    assert on_disk["input"]["sha256"] == rr.sha256_of(events)
    assert on_disk["raw"]["rows"] == len(rows)
    assert on_disk["raw"]["events_by_type"] == {"view": len(rows) - 1, "addtocart": 1, "transaction": 0}
    assert on_disk["filters"]["event_types"]["events"] == 1
    for split in ("train", "valid", "test"):
        entry = on_disk["splits"][split]
        assert entry["cases"] == entry["events"] - entry["sessions"]
        assert on_disk["files"][split]["rows"] == entry["cases"]
    assert stats["reused"] is False
    assert on_disk["sessions_total"] == sum(on_disk["splits"][s]["sessions"] for s in on_disk["splits"])


# -------------------------------------------------------------------------------- bad inputs

BAD_FILES = {
    "renamed column": ("timestamp,visitorId,event,itemid,transactionid\n1,2,view,3,\n", "visitorid"),
    "missing column": ("timestamp,visitorid,event\n1,2,view\n", "itemid"),
    "non-numeric timestamp": (HEADER + "\n1,2,view,3,\n2,2,view,3,\nabc,2,view,3,\n", "timestamp.*line 4"),
    "empty visitor": (HEADER + "\n1,2,view,3,\n2,,view,3,\n", "empty.*visitorid.*line 3"),
    "non-numeric item": (HEADER + "\n1,2,view,x3,\n", "itemid.*line 2"),
    "fractional item": (HEADER + "\n1,2,view,3.5,\n", "itemid.*line 2"),
    "unknown event": (HEADER + "\n1,2,view,3,\n2,2,click,3,\n3,2,purchase,3,\n", "'click'.*'purchase'"),
    "empty event": (HEADER + "\n1,2,view,3,\n2,2,,3,\n", "event type.*empty"),
    "empty file": ("", "empty"),
    "header only": (HEADER + "\n", "no events"),
    "ragged rows": (HEADER + "\n1,2,view,3,\n2,2\n", "cannot read|line"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_input_files(tmp_path, case):
    content, pattern = BAD_FILES[case]
    events = tmp_path / "events.csv"
    events.write_text(content)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=pattern) as info:
        convert_events(events, out, ConvertOptions(min_item_support=1), progress=False)
    assert "\n" not in str(info.value)
    assert files_in(out) == []
    assert [p.name for p in tmp_path.iterdir()] == ["events.csv"]


def test_integral_float_ids_are_accepted(tmp_path):
    rows = background()
    events = tmp_path / "events.csv"
    text = HEADER + "\n" + "\n".join(f"{t},{v}.0,{e},{i}.0," for t, v, e, i in rows) + "\n"
    events.write_text(text)
    convert_events(events, tmp_path / "f", ConvertOptions(min_item_support=1, test_days=3), progress=False)
    plain = write_events(tmp_path / "plain.csv", rows)
    convert_events(plain, tmp_path / "p" / "f", ConvertOptions(min_item_support=1, test_days=3), progress=False)
    assert (tmp_path / "f" / "f.train.inter").read_bytes() == (tmp_path / "p" / "f" / "f.train.inter").read_bytes()


def test_missing_file_message(tmp_path):
    with pytest.raises(InputError) as info:
        convert_events(tmp_path / "nope.csv", tmp_path / "out", progress=False)
    message = str(info.value)
    assert "https://www.kaggle.com/datasets/retailrocket/ecommerce-dataset" in message
    assert "dataset/raw/retailrocket/events.csv" in message
    assert "Retailrocket recommender system dataset" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("options, pattern", [
    (ConvertOptions(test_days=-1), "test_days"),
    (ConvertOptions(test_days=0), "test_days"),
    (ConvertOptions(valid_days=-0.5), "valid_days"),
    (ConvertOptions(session_gap=-1), "session_gap"),
    (ConvertOptions(session_gap=float("nan")), "session_gap"),
    (ConvertOptions(min_item_support=0), "min_item_support"),
    (ConvertOptions(min_session_length=0), "min_session_length"),
    (ConvertOptions(max_prefix_length=-1), "max_prefix_length"),
    (ConvertOptions(keep_events=("view", "click")), "'click'"),
    (ConvertOptions(keep_events=()), "keep_events"),
])
def test_invalid_options(tmp_path, options, pattern):
    events = write_events(tmp_path / "events.csv", background())
    with pytest.raises(InputError, match=pattern):
        convert_events(events, tmp_path / "out", options, progress=False)
    assert not (tmp_path / "out").exists()


def test_nothing_left(tmp_path):
    rows = [(T0 + k, 1, "view", k) for k in range(10)]  # every item seen once
    events = write_events(tmp_path / "events.csv", rows)
    with pytest.raises(InputError, match="nothing left"):
        convert_events(events, tmp_path / "out", progress=False)
    with pytest.raises(InputError, match="nothing left.*test"):
        # all sessions land in train when the test window is tiny and the last session is cold
        convert_events(write_events(tmp_path / "e2.csv", background() + [(T0 + 40 * DAY, 5, "view", 1),
                                                                           (T0 + 40 * DAY + 1, 5, "view", 1)]),
                       tmp_path / "out2", ConvertOptions(min_item_support=1, test_days=0.001, valid_days=0), progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


# ---------------------------------------------------------------------- atomic writes, caching

def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch):
    events = write_events(tmp_path / "events.csv", background())
    out = tmp_path / "atomic"
    calls = []
    real_write = rr.write_cases

    def failing(path, cases, **kwargs):
        calls.append(path)
        real_write(path, cases, **kwargs)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")

    monkeypatch.setattr(rr, "write_cases", failing)
    with pytest.raises(OSError, match="simulated"):
        convert_events(events, out, ConvertOptions(min_item_support=1, test_days=3), progress=False)
    assert len(calls) == 2
    assert files_in(out) == []  # no final and no temporary (hidden) file


def test_failure_keeps_previous_result_intact(tmp_path, monkeypatch):
    events = write_events(tmp_path / "events.csv", background())
    out = tmp_path / "keep"
    options = ConvertOptions(min_item_support=1, test_days=3)
    convert_events(events, out, options, progress=False)
    before = {name: (out / name).read_bytes() for name in files_in(out)}

    def failing(path, cases, **kwargs):
        Path(path).write_text("partial")
        raise RuntimeError("boom")

    monkeypatch.setattr(rr, "write_cases", failing)
    with pytest.raises(RuntimeError):
        convert_events(events, out, replace(options, max_prefix_length=3), progress=False)
    assert {name: (out / name).read_bytes() for name in files_in(out)} == before


def test_caching(tmp_path):
    events = write_events(tmp_path / "events.csv", background())
    out = tmp_path / "cache"
    options = ConvertOptions(min_item_support=1, test_days=3)
    first = convert_events(events, out, options, progress=False)
    assert first["reused"] is False
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    second = convert_events(events, out, options, progress=False)
    assert second["reused"] is True
    assert second["splits"] == first["splits"]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    # changed parameters rebuild
    third = convert_events(events, out, replace(options, max_prefix_length=2), progress=False)
    assert third["reused"] is False
    # same parameters again: reused
    assert convert_events(events, out, replace(options, max_prefix_length=2), progress=False)["reused"]
    # force rebuilds
    assert convert_events(events, out, replace(options, max_prefix_length=2), force=True,
                          progress=False)["reused"] is False
    # changed input of the same size rebuilds (and its mtime restored does not fool it)
    stat = events.stat()
    data = bytearray(events.read_bytes())
    position = data.index(b",901,")
    data[position + 3] = ord("2")  # 901 -> 902 on one line
    events.write_bytes(bytes(data))
    os.utime(events, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert events.stat().st_size == stat.st_size
    assert convert_events(events, out, replace(options, max_prefix_length=2), progress=False)["reused"] is False
    # a missing output file rebuilds
    (out / "cache.valid.inter").unlink()
    again = convert_events(events, out, replace(options, max_prefix_length=2), progress=False)
    assert again["reused"] is False and (out / "cache.valid.inter").exists()
    # a truncated output file rebuilds
    (out / "cache.test.inter").write_text("x")
    assert convert_events(events, out, replace(options, max_prefix_length=2), progress=False)["reused"] is False


def test_stale_validation_file_removed(tmp_path):
    events = write_events(tmp_path / "events.csv", background())
    out = tmp_path / "stale"
    convert_events(events, out, ConvertOptions(min_item_support=1, test_days=3), progress=False)
    assert (out / "stale.valid.inter").exists()
    convert_events(events, out, ConvertOptions(min_item_support=1, test_days=3, valid_days=0), progress=False)
    assert files_in(out) == ["stale.stats.json", "stale.test.inter", "stale.train.inter"]


def test_progress_lines(tmp_path, capsys):
    events = write_events(tmp_path / "events.csv", background())
    convert_events(events, tmp_path / "p", ConvertOptions(min_item_support=1, test_days=3), progress=True)
    err = capsys.readouterr().err
    assert "sessionized" in err and "wrote" in err
    convert_events(events, tmp_path / "q", ConvertOptions(min_item_support=1, test_days=3), progress=False)
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------- real sample and RecBole

def test_real_sample_converts(shared_data, tmp_path):
    events = shared_data / "retailrocket-sample" / "events.csv"
    if not events.is_file():
        pytest.skip(f"{events} is absent")
    stats = convert_events(events, tmp_path / "sample", progress=False)  # the default protocol
    for split in ("train", "valid", "test"):
        entry = stats["splits"][split]
        assert entry["cases"] > 0
        rows = read_rows(tmp_path / "sample" / f"sample.{split}.inter")
        assert len(rows) == entry["cases"]
    assert stats["raw"]["rows"] == 10_080
    assert stats["raw"]["events_by_type"]["view"] == 10_080
    # a lower support keeps more
    lower = convert_events(events, tmp_path / "lower", ConvertOptions(min_item_support=2), progress=False)
    assert lower["splits"]["train"]["cases"] > stats["splits"]["train"]["cases"]
    # the reference agrees on the real data too
    import csv

    with open(events, newline="") as handle:
        rows = [(int(r["timestamp"]), int(r["visitorid"]), r["event"], int(r["itemid"]))
                for r in csv.DictReader(handle)]
    expected = reference_convert(rows, ConvertOptions())
    for split in ("train", "valid", "test"):
        assert (tmp_path / "sample" / f"sample.{split}.inter").read_text() == expected[split]


def test_recbole_loads_converted_dataset(tmp_path):
    pytest.importorskip("recbole")
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation

    rng = np.random.default_rng(0)
    rows = []
    for visitor in range(300):
        t = T0 + int(rng.integers(0, 28 * DAY))
        for _ in range(int(rng.integers(2, 7))):
            t += int(rng.integers(1000, 600_000))
            rows.append((t, visitor, "view", int(rng.integers(0, 30))))
    events = write_events(tmp_path / "events.csv", rows)
    data_path = tmp_path / "datasets"
    stats = convert_events(events, data_path / "rrtiny", ConvertOptions(min_item_support=1), progress=False)
    config = Config(model="GRU4Rec", dataset="rrtiny", config_dict={
        "data_path": str(data_path),
        "benchmark_filename": ["train", "valid", "test"],
        "alias_of_item_id": ["item_id_list"],
        "USER_ID_FIELD": "session_id",
        "load_col": {"inter": ["session_id", "item_id_list", "item_id", "timestamp"]},
        "train_neg_sample_args": None,
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "mode": "full"},
        "checkpoint_dir": str(tmp_path / "saved"),
        "show_progress": False,
        "use_gpu": False,
        "state": "WARNING",
    })
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    assert len(test.dataset) == stats["splits"]["test"]["cases"]
    assert len(valid.dataset) == stats["splits"]["valid"]["cases"]
    assert len(train.dataset) == stats["splits"]["train"]["cases"]
    lengths = test.dataset.inter_feat["item_length"]
    assert int(lengths.min()) >= 1
