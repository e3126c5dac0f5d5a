"""The synthetic Retail Rocket log: determinism, schema, the real file's quirks, learnable structure."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from recbole_srgnn.data.synthetic import (COLUMNS, T_END_MS, T_START_MS, generate_events,
                                          write_events_csv)
from recbole_srgnn.errors import InputError

N = 60_000


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return generate_events(N, seed=3)


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    return write_events_csv(tmp_path_factory.mktemp("syn") / "events.csv", n_events=20_000, seed=1)


def test_same_arguments_same_bytes_other_seed_differs(csv_path, tmp_path):
    again = write_events_csv(tmp_path / "a" / "events.csv", n_events=20_000, seed=1)
    assert again.read_bytes() == csv_path.read_bytes()
    other = write_events_csv(tmp_path / "b" / "events.csv", n_events=20_000, seed=2)
    assert other.read_bytes() != csv_path.read_bytes()
    assert not list((tmp_path / "a").glob(".*tmp*"))  # no temporary left behind


def test_file_schema_and_transaction_id_format(csv_path):
    lines = csv_path.read_text().split("\n")
    assert lines[0] == "timestamp,visitorid,event,itemid,transactionid"
    assert lines[-1] == "" and len(lines) == 20_000 + 2
    pattern = re.compile(r"^(1\d{12}),(\d+),(view|addtocart|transaction),(\d+),(\d+\.0)?$")
    kinds = {"view": 0, "addtocart": 0, "transaction": 0}
    for line in lines[1:-1]:
        match = pattern.match(line)
        assert match, line
        kinds[match.group(3)] += 1
        # a transaction id exactly for transactions, written like 14418.0
        assert (match.group(5) is not None) == (match.group(3) == "transaction"), line
    assert kinds["transaction"] > 0 and kinds["addtocart"] > kinds["transaction"]


def test_columns_types_and_size(events):
    assert list(events.columns) == COLUMNS
    assert len(events) == N
    assert events["timestamp"].dtype == np.int64 and events["itemid"].dtype == np.int64
    assert events["timestamp"].between(T_START_MS, T_END_MS).all()
    assert pd.to_datetime(events["timestamp"].min(), unit="ms").month == 5
    assert pd.to_datetime(events["timestamp"].max(), unit="ms").month == 9
    share = events["event"].value_counts(normalize=True)
    assert 0.015 < share["addtocart"] < 0.04
    assert 0.004 < share["transaction"] < 0.013
    assert events["transactionid"].notna().eq(events["event"] == "transaction").all()


def test_quirks_unsorted_identical_times_double_logging(events):
    ts = events["timestamp"].to_numpy()
    assert (np.diff(ts) < 0).mean() > 0.3  # rows are not in time order
    ordered = events.sort_values(["visitorid", "timestamp"], kind="stable")
    same_visitor = ordered["visitorid"].to_numpy()[1:] == ordered["visitorid"].to_numpy()[:-1]
    gap = np.diff(ordered["timestamp"].to_numpy())
    assert (same_visitor & (gap == 0)).sum() > 10  # identical timestamps
    same_row = (same_visitor
                & (ordered["itemid"].to_numpy()[1:] == ordered["itemid"].to_numpy()[:-1])
                & (ordered["event"].to_numpy()[1:] == ordered["event"].to_numpy()[:-1]))
    double = same_row & (gap <= 30)
    assert 0.003 < double.mean() < 0.03  # double-logged events a few ms apart
    assert (double & (gap > 0)).sum() > 0


def _sessions(events: pd.DataFrame) -> pd.DataFrame:
    """Views with a 1 h session id (all event types sessionized, as the converter does)."""
    ordered = events.sort_values(["visitorid", "timestamp"], kind="stable").reset_index(drop=True)
    v = ordered["visitorid"].to_numpy()
    t = ordered["timestamp"].to_numpy()
    new = np.ones(len(ordered), dtype=bool)
    new[1:] = (v[1:] != v[:-1]) | (t[1:] - t[:-1] > 3_600_000)
    ordered["session"] = np.cumsum(new)
    return ordered[ordered["event"] == "view"].reset_index(drop=True)


def test_visitors_have_sessions_separated_by_hours(events):
    ordered = events.sort_values(["visitorid", "timestamp"], kind="stable")
    same_visitor = ordered["visitorid"].to_numpy()[1:] == ordered["visitorid"].to_numpy()[:-1]
    gap = np.diff(ordered["timestamp"].to_numpy())[same_visitor]
    long = gap > 3_600_000
    assert 0.05 < long.mean() < 0.35  # most gaps are inside sessions, some separate sessions
    assert np.median(gap[~long]) < 120_000  # within sessions: about a minute
    sessions = _sessions(events)
    per_visitor = sessions.groupby("visitorid")["session"].nunique()
    assert (per_visitor >= 2).mean() > 0.15  # several sessions per visitor
    lengths = sessions.groupby("session").size()
    assert lengths.max() >= 15 and (lengths == 1).mean() > 0.15  # geometric-ish lengths


def test_popularity_is_skewed_and_sessions_repeat_items(events):
    sessions = _sessions(events)
    counts = np.sort(sessions["itemid"].value_counts().to_numpy())[::-1]
    top = max(1, len(counts) // 100)
    assert counts[:top].sum() / counts.sum() > 0.12  # top 1 % of items: > 12 % of views
    assert counts[0] > 50 * np.median(counts)
    item = sessions["itemid"].to_numpy()
    same_session = sessions["session"].to_numpy()[1:] == sessions["session"].to_numpy()[:-1]
    repeat = (item[1:] == item[:-1])[same_session]
    assert 0.1 < repeat.mean() < 0.35  # consecutive repeats, as in the real data (~20 %)


def test_next_item_is_learnable_well_above_popularity(events):
    sessions = _sessions(events)
    item = sessions["itemid"].to_numpy()
    t = sessions["timestamp"].to_numpy()
    keep = (sessions["session"].to_numpy()[1:] == sessions["session"].to_numpy()[:-1])
    keep &= item[1:] != item[:-1]  # predict a different next item: no credit for repeats
    pairs = pd.DataFrame({"src": item[:-1][keep], "dst": item[1:][keep], "t": t[1:][keep]})
    cut = pairs["t"].quantile(0.8)
    train, test = pairs[pairs["t"] <= cut], pairs[pairs["t"] > cut]
    successor = (train.groupby(["src", "dst"]).size().rename("n").reset_index()
                 .sort_values(["n", "dst"], ascending=[False, True])
                 .drop_duplicates("src").set_index("src")["dst"])
    rule = (successor.reindex(test["src"]).to_numpy() == test["dst"].to_numpy()).mean()
    popular = train["dst"].value_counts().index[0]
    popularity = (test["dst"].to_numpy() == popular).mean()
    assert rule > 0.15
    assert rule > 4 * popularity


def test_bad_arguments():
    with pytest.raises(InputError, match="n_events"):
        generate_events(0)
    with pytest.raises(InputError, match="n_items"):
        generate_events(100, n_items=1)
    with pytest.raises(InputError, match="addtocart_rate"):
        generate_events(100, addtocart_rate=1.5)


def test_small_sizes_are_exact():
    for n in (1, 7, 1000):
        assert len(generate_events(n, seed=5)) == n


@pytest.mark.slow
def test_full_size_writes_every_row(tmp_path):
    path = write_events_csv(tmp_path / "events.csv", n_events=2_756_101)
    assert sum(1 for _ in open(path)) == 2_756_102  # speed: benchmarks/convert_speed.py
