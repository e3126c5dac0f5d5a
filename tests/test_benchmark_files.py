"""The case table and the benchmark-file writer, against a plain Python reference."""

from __future__ import annotations

import numpy as np
import pytest

from recbole_srgnn.data.benchmark_files import (
    HEADER,
    Cases,
    cases_file_rows,
    sessions_to_cases,
    write_cases,
)


def reference_text(session_id, items, timestamp_ms, *, min_prefix_length=1, max_prefix_length=50):
    """The file's text built row by row from docs/design.md §2 (slow, obvious)."""
    lines = [HEADER.rstrip("\n")]
    n = len(items)
    i = 0
    while i < n:
        j = i
        while j < n and session_id[j] == session_id[i]:
            j += 1
        for t in range(i + min_prefix_length, j):
            prefix = [int(x) for x in items[i:t]]
            if max_prefix_length:
                prefix = prefix[-max_prefix_length:]
            ms = int(timestamp_ms[t])
            sign = "-" if ms < 0 else ""
            seconds, millis = divmod(abs(ms), 1000)
            lines.append(
                f"{session_id[t]}\t{' '.join(map(str, prefix))}\t{int(items[t])}\t"
                f"{sign}{seconds}.{millis:03d}"
            )
        i = j
    return "\n".join(lines) + "\n"


def test_small_file_exact_bytes(tmp_path):
    sid = np.array([7, 7, 7, 3, 3])
    items = np.array([101, 5, 101, 42, 9])
    ts = np.array([1442004589123, 1442004589124, 1442004590000, 5, 1000])
    path = tmp_path / "x.inter"
    write_cases(path, sessions_to_cases(sid, items, ts), max_prefix_length=50)
    assert path.read_bytes() == (
        b"session_id:token\titem_id_list:token_seq\titem_id:token\ttimestamp:float\n"
        b"7\t101\t5\t1442004589.124\n"
        b"7\t101 5\t101\t1442004590.000\n"
        b"3\t42\t9\t1.000\n"
    )
    assert cases_file_rows(path) == 3


def test_sessions_to_cases_columns():
    sid = np.array([1, 1, 1, 2, 2, 5])
    items = np.array([10, 11, 12, 20, 21, 50])
    ts = np.arange(6) * 1000
    cases = sessions_to_cases(sid, items, ts)
    assert cases.start.tolist() == [0, 0, 3]
    assert cases.end.tolist() == [1, 2, 4]
    assert cases.target.tolist() == [11, 12, 21]
    assert cases.session_id.tolist() == [1, 1, 2]
    assert cases.timestamp_ms.tolist() == [1000, 2000, 4000]
    longer = sessions_to_cases(sid, items, ts, min_prefix_length=2)
    assert longer.target.tolist() == [12]
    with pytest.raises(ValueError):
        sessions_to_cases(sid, items, ts, min_prefix_length=0)


def test_truncation_keeps_most_recent_items(tmp_path):
    sid = np.ones(6, dtype=np.int64)
    items = np.arange(1, 7)
    ts = np.arange(6) * 1000
    path = tmp_path / "t.inter"
    write_cases(path, sessions_to_cases(sid, items, ts), max_prefix_length=2)
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
    assert [r[1] for r in rows] == ["1", "1 2", "2 3", "3 4", "4 5"]
    assert [r[2] for r in rows] == ["2", "3", "4", "5", "6"]
    write_cases(path, sessions_to_cases(sid, items, ts), max_prefix_length=0)
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
    assert rows[-1][1] == "1 2 3 4 5"


@pytest.mark.parametrize("seed", range(12))
def test_matches_reference_on_random_tables(tmp_path, seed):
    rng = np.random.default_rng(seed)
    n_sessions = int(rng.integers(1, 40))
    lengths = rng.integers(1, 15, n_sessions)
    sid = np.repeat(rng.permutation(10_000)[:n_sessions], lengths)
    if seed % 3 == 0:
        sid = np.array([f"s{x}" for x in sid])
    low = -50 if seed % 4 == 0 else 0
    items = rng.integers(low, 10 ** int(rng.integers(1, 10)), len(sid))
    ts = rng.integers(-5000 if seed % 5 == 0 else 0, 2 * 10**12, len(sid))
    mpl = int(rng.integers(1, 3))
    maxp = int(rng.integers(0, 6))
    path = tmp_path / "r.inter"
    write_cases(path, sessions_to_cases(sid, items, ts, min_prefix_length=mpl),
                max_prefix_length=maxp)
    assert path.read_text() == reference_text(sid, items, ts, min_prefix_length=mpl,
                                              max_prefix_length=maxp)


@pytest.mark.parametrize("text_ids", [False, True])
def test_small_chunks_and_long_rows(tmp_path, monkeypatch, text_ids):
    """Rows longer than a chunk and many chunks (by bytes or rows) give the same bytes."""
    import recbole_srgnn.data.benchmark_files as bf

    rng = np.random.default_rng(3)
    sid = np.repeat(np.arange(8), rng.integers(1, 40, 8))
    if text_ids:
        sid = np.array([f"session-{x}" for x in sid])
    items = rng.integers(-10, 10**6, len(sid))
    ts = np.sort(rng.integers(0, 10**12, len(sid)))
    cases = sessions_to_cases(sid, items, ts)
    for max_prefix in (0, 7):
        write_cases(tmp_path / "big.inter", cases, max_prefix_length=max_prefix)
        expected = reference_text(sid, items, ts, max_prefix_length=max_prefix)
        assert (tmp_path / "big.inter").read_text() == expected
        for chunk_bytes, chunk_rows in ((64, 1 << 16), (1 << 21, 3), (1, 1)):
            monkeypatch.setattr(bf, "_CHUNK_BYTES", chunk_bytes)
            monkeypatch.setattr(bf, "_CHUNK_ROWS", chunk_rows)
            write_cases(tmp_path / "small.inter", cases, max_prefix_length=max_prefix)
            assert (tmp_path / "small.inter").read_bytes() == (tmp_path / "big.inter").read_bytes()
        monkeypatch.undo()


def test_prefix_pool_can_be_shared_and_offset(tmp_path):
    """Cases may point anywhere into a shared pool (not only sessions_to_cases output)."""
    pool = np.array([9, 8, 7, 6, 5])
    cases = Cases(items=pool, start=np.array([1, 0]), end=np.array([4, 2]),
                  target=np.array([1, 2]), session_id=np.array([4, 4]),
                  timestamp_ms=np.array([1999, 2000]))
    path = tmp_path / "p.inter"
    write_cases(path, cases, max_prefix_length=50)
    assert path.read_text().splitlines()[1:] == ["4\t8 7 6\t1\t1.999", "4\t9 8\t2\t2.000"]


def test_empty_and_invalid(tmp_path):
    empty = sessions_to_cases(np.array([1]), np.array([5]), np.array([0]))
    assert len(empty) == 0
    write_cases(tmp_path / "e.inter", empty)
    assert (tmp_path / "e.inter").read_text() == HEADER
    assert cases_file_rows(tmp_path / "e.inter") == 0
    with pytest.raises(ValueError):
        write_cases(tmp_path / "n.inter", empty, max_prefix_length=-1)
    bad = Cases(items=np.array([1, 2]), start=np.array([0]), end=np.array([3]),
                target=np.array([1]), session_id=np.array([1]), timestamp_ms=np.array([0]))
    with pytest.raises(ValueError):
        write_cases(tmp_path / "b.inter", bad)


def test_a_million_cases_write_every_row(tmp_path):
    """About 1M cases (many output chunks) write one row each. Speed is measured by
    benchmarks/convert_speed.py, not here."""
    rng = np.random.default_rng(0)
    lengths = rng.geometric(0.2, 200_000) + 1
    sid = np.repeat(np.arange(1, len(lengths) + 1), lengths)
    items = rng.integers(0, 466_866, len(sid))
    ts = 1_430_000_000_000 + np.sort(rng.integers(0, 10**10, len(sid)))
    cases = sessions_to_cases(sid, items, ts)
    assert len(cases) > 900_000
    write_cases(tmp_path / "m.inter", cases)
    assert cases_file_rows(tmp_path / "m.inter") == len(cases)
    with open(tmp_path / "m.inter") as handle:
        last = handle.readlines()[-1].rstrip("\n").split("\t")
    assert int(last[0]) == int(cases.session_id[-1]) and int(last[2]) == int(cases.target[-1])
