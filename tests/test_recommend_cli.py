"""``recbole-srgnn recommend``: batch scoring of JSONL sessions and raw click logs, one session,
streaming in chunks, and one-line errors that leave no output file."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_data import write_tiny_benchmark
from recbole_srgnn import cli, session_input
from recbole_srgnn.data.retailrocket import convert_events
from recbole_srgnn.data.sessions import ConvertOptions
from recbole_srgnn.recommend import Recommender
from recbole_srgnn.training import runs as training_runs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recommend-cli")
    write_tiny_benchmark(root / "data", "tiny", seed=3, sessions=(60, 12, 12), length=(2, 7))
    out = root / "bundle"
    settings = {"data_path": str(root / "data"), "checkpoint_dir": str(root / "saved"),
                "show_progress": False, "embedding_size": 8, "epochs": 2, "seed": 7}
    training_runs.run("SRGNN", "tiny", quiet=True, result_file=root / "run.json", export=out,
                      config_dict=settings)
    return out


@pytest.fixture(scope="module")
def rec(bundle) -> Recommender:
    return Recommender.load(bundle)


def recommend(*args) -> int:
    return cli.main(["recommend", *map(str, args)])


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def same_ranking(line: dict, expected) -> None:
    assert line["items"] == expected.items
    assert line["scores"] == pytest.approx(expected.scores, abs=1e-5)
    assert line["unknown_items"] == expected.unknown_items
    assert line["fallback"] is expected.fallback


LONG = [str(i % 30 + 1) for i in range(80)]  # longer than max_prefix_length (50)
JSONL_LINES = [
    '["3", "4", 5]',
    '{"session_id": "web-1", "items": ["7", "nope", 8], "user": "ignored"}',
    "",
    '{"session_id": 99, "items": ["nope", "gone"]}',
    "   ",
    '{"items": [12]}',
    "[]",
    json.dumps(LONG),
    '["20", "21", "22", "23"]',
]
SESSIONS = [["3", "4", 5], ["7", "nope", 8], ["nope", "gone"], [12], [], LONG,
            ["20", "21", "22", "23"]]
IDS = [1, "web-1", 99, 6, 7, 8, 9]  # given ids, else the 1-based line number (blank lines count)


@pytest.fixture
def sessions_file(tmp_path) -> Path:
    path = tmp_path / "sessions.jsonl"
    path.write_text("\n".join(JSONL_LINES) + "\n", encoding="utf-8")
    return path


def test_jsonl_output_equals_recommend_batch_with_ids_unknown_items_and_fallback(
        rec, bundle, sessions_file, tmp_path):
    out = tmp_path / "out" / "recs.jsonl"
    assert recommend("--model", bundle, "--input", sessions_file, "--output", out, "-k", 7,
                     "--quiet") == 0
    lines = read_lines(out)
    expected = rec.recommend_batch(SESSIONS, k=7)
    assert [line["session_id"] for line in lines] == IDS
    for line, result in zip(lines, expected, strict=True):
        assert list(line) == ["session_id", "items", "scores", "unknown_items", "fallback"]
        same_ranking(line, result)
        assert len(line["items"]) == 7
    assert lines[1]["unknown_items"] == ["nope"] and not lines[1]["fallback"]
    assert lines[2]["unknown_items"] == ["nope", "gone"] and lines[2]["fallback"]
    assert lines[4]["fallback"] and lines[4]["unknown_items"] == []
    assert sorted(p.name for p in out.parent.iterdir()) == ["recs.jsonl"]  # no temporary left

    again = tmp_path / "excluding.jsonl"
    assert recommend("--model", bundle, "--input", sessions_file, "--output", again, "--k", 9,
                     "--exclude_seen", "--exclude", "5", "21", "--quiet") == 0
    expected = rec.recommend_batch(SESSIONS, k=9, exclude_seen=True, exclude=["5", "21"])
    for line, result in zip(read_lines(again), expected, strict=True):
        same_ranking(line, result)
        assert not {"5", "21"} & set(line["items"])


def test_chunks_give_the_same_output_and_the_reader_is_consumed_chunk_by_chunk(
        rec, bundle, tmp_path, monkeypatch):
    sessions = [[str((7 * n + j) % 30 + 1) for j in range(n % 5 + 1)] for n in range(23)]
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in sessions), encoding="utf-8")
    whole, chunked = tmp_path / "whole.jsonl", tmp_path / "chunked.jsonl"
    assert recommend("--model", bundle, "--input", path, "--output", whole, "--quiet") == 0

    yielded: list[list[int]] = []  # per reader generator: how many sessions it has handed out
    reader = session_input.read_jsonl_sessions

    def counting_reader(where):
        count = [0]
        yielded.append(count)
        for session in reader(where):
            count[0] += 1
            yield session

    seen_at_call: list[int] = []
    batch = Recommender.recommend_batch

    def recording_batch(self, sessions, *args, **kwargs):
        if sessions:  # the k check scores no session
            seen_at_call.append(yielded[-1][0])
            assert len(sessions) <= 5
        return batch(self, sessions, *args, **kwargs)

    monkeypatch.setattr(session_input, "read_jsonl_sessions", counting_reader)
    monkeypatch.setattr(Recommender, "recommend_batch", recording_batch)
    assert recommend("--model", bundle, "--input", path, "--output", chunked, "--batch_size", 5,
                     "--quiet") == 0
    # a checking pass, then the scoring pass, read no further ahead than the chunk being scored
    assert len(yielded) == 2 and yielded[0][0] == 23
    assert seen_at_call == [5, 10, 15, 20, 23]
    for a, b in zip(read_lines(whole), read_lines(chunked), strict=True):
        assert a["session_id"] == b["session_id"] and a["items"] == b["items"]
        assert b["scores"] == pytest.approx(a["scores"], abs=1e-5)


# ------------------------------------------------------------------------------- raw click logs

T0 = 1_600_000_000_000  # ms
HOUR = 3_600_000
# (timestamp, visitorid, event, itemid) in a scrambled file order; equal timestamps keep file order
EVENTS = [
    (T0 + 2000 + HOUR, 7, "view", "6"),            # gap of exactly session_gap: same session
    (T0 + 500, 2, "view", "20"),
    (T0 + 10 * 86_400_000, 3, "view", "999"),      # the last session (the converter's test split)
    (T0 + 1000, 7, "view", "4"),
    (T0 + 3000, 4, "view", "25"),
    (T0 + 3000, 4, "view", "26"),                  # same timestamp as 25, after it in the file
    (T0 + 100, 9, "addtocart", "1"),               # a visitor without a view: no session
    (T0 + 2000 + 2 * HOUR + 1, 7, "view", "10"),   # gap > session_gap: a new session
    (T0 + 2000 + 2 * HOUR + 2, 7, "view", "11"),
    (T0 + 2000 + 2 * HOUR + 3, 7, "view", "11"),   # a consecutive duplicate
    (T0 + 2000 + 2 * HOUR + 4, 7, "view", "12"),
    (T0, 7, "view", "3"),
    (T0 + 500 + 50 * 60_000, 2, "addtocart", "21"),  # bridges the views of visitor 2
    (T0 + 500 + 100 * 60_000, 2, "view", "22"),
    (T0 + 50, 5, "view", "14.0"),                  # a one-click session
    (T0 + 4000, 4, "view", "27"),
    (T0 + 2000, 7, "view", "5"),
    (T0 + 10 * 86_400_000 + 10, 3, "view", "25"),
    (T0 + 10 * 86_400_000 + 20, 3, "view", "26"),
]


def write_events(path: Path) -> Path:
    rows = ["timestamp,visitorid,event,itemid,transactionid"]
    rows += [f"{t},{v},{e},{i}," for t, v, e, i in EVENTS]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def converter_sessions(events: Path, out: Path, dedup: bool) -> dict[int, list[str]]:
    """Each session's full item list as the converter writes it (last case's prefix + target)."""
    options = ConvertOptions(min_item_support=1, min_session_length=1, test_days=1.0,
                             valid_days=0.0, dedup_consecutive=dedup)
    convert_events(events, out, options, progress=False)
    sessions = {}
    for split in ("train", "test"):
        for line in (out / f"{out.name}.{split}.inter").read_text().splitlines()[1:]:
            sid, prefix, target, _ = line.split("\t")
            sessions[int(sid)] = prefix.split(" ") + [target]
    return sessions


@pytest.mark.parametrize("dedup", [False, True])
def test_events_csv_gives_one_line_per_converter_session_after_its_last_click(
        rec, bundle, tmp_path, dedup):
    events = write_events(tmp_path / "events.csv")
    out = tmp_path / "recs.jsonl"
    flags = ["--dedup_consecutive"] if dedup else []
    assert recommend("--model", bundle, "--input", events, "--output", out, "-k", 5, "--quiet",
                     *flags) == 0
    lines = read_lines(out)
    converted = converter_sessions(events, tmp_path / "converted", dedup)
    # the converter's ids 1..N; its one-click session (no case to write) is id 2 here
    assert [line["session_id"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert sorted(converted) == [1, 3, 4, 5, 6]
    assert [line["visitor_id"] for line in lines] == [7, 5, 2, 4, 7, 3]
    expected = {sid: items for sid, items in converted.items()}
    expected[2] = ["14"]
    assert expected[5] == (["10", "11", "12"] if dedup else ["10", "11", "11", "12"])
    assert expected[6] == ["25", "26"]  # the converter drops the cold 999 from its test split
    results = rec.recommend_batch([expected[line["session_id"]] for line in lines], k=5)
    for line, result in zip(lines, results, strict=True):
        assert line["items"] == result.items
        assert line["scores"] == pytest.approx(result.scores, abs=1e-5)
    assert [line["unknown_items"] for line in lines] == [[], [], [], [], [], ["999"]]
    assert not any(line["fallback"] for line in lines)

    gzipped = tmp_path / "events.csv.gz"  # auto: .csv.gz is a click log too
    import gzip

    gzipped.write_bytes(gzip.compress(events.read_bytes()))
    again = tmp_path / "again.jsonl"
    assert recommend("--model", bundle, "--input", gzipped, "--output", again, "-k", 5,
                     "--quiet", "--batch_size", 2, *flags) == 0
    assert [line["items"] for line in read_lines(again)] == [line["items"] for line in lines]


def test_events_session_gap_and_kept_types_follow_the_options(bundle, tmp_path):
    events = write_events(tmp_path / "events.log")  # not a .csv name: --input_format says it
    out = tmp_path / "recs.jsonl"
    assert recommend("--model", bundle, "--input", events, "--input_format", "events", "--output",
                     out, "--quiet", "--session_gap", 3000, "--keep_events", "view",
                     "addtocart") == 0
    lines = read_lines(out)
    by_visitor = {}
    for line in lines:
        by_visitor.setdefault(line["visitor_id"], []).append(line)
    assert 9 in by_visitor  # its addtocart is kept now
    assert len(by_visitor[7]) == 3  # the gap of exactly one hour now splits
    assert len(by_visitor[2]) == 1  # 50-minute gaps through the addtocart


# ------------------------------------------------------------------------------- one session

def test_session_table_and_json(rec, bundle, capsys):
    assert recommend("--model", bundle, "--session", "3", "nope", "4", "-k", 4) == 0
    text = capsys.readouterr().out.splitlines()
    expected = rec.recommend(["3", "nope", "4"], k=4)
    assert text[0].split() == ["rank", "item", "score"]
    for rank, (row, (item, score)) in enumerate(zip(text[1:5], expected.pairs()), 1):
        assert row.split() == [str(rank), item, f"{score:.4f}"]
    assert text[5:] == ["unknown items (dropped): nope"]

    assert recommend("--model", bundle, "--session", "nope", "-k", 3) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("fallback: no known item")

    assert recommend("--model", bundle, "--session", "3", "4", "--json", "--exclude_seen") == 0
    shown = json.loads(capsys.readouterr().out)
    expected = rec.recommend(["3", "4"], k=20, exclude_seen=True)
    assert shown["items"] == expected.items and shown["scores"] == pytest.approx(expected.scores)
    assert shown["unknown_items"] == [] and shown["fallback"] is False


# ------------------------------------------------------------------------------- errors

GOOD_LINES = "".join(f'["{n % 30 + 1}"]\n' for n in range(12))  # 3 chunks of 4 before the bad
BAD_JSONL = [  # (what follows the 12 good lines, the message)
    ('["3"]\n["4"\n', "line 14: not JSON"),
    ('["3"]\n\n{"items": [1.5]}\n', "line 15: item ids are strings or integers, got '1.5'"),
    ('[true]\n', "line 13: item ids are strings or integers, got 'true'"),
    ('[null]\n', "line 13: item ids are strings or integers, got 'null'"),
    ('{"session": ["3"]}\n',
     "line 13: expected a JSON list of item ids or an object with \"items\""),
    ('"3 4 5"\n', "line 13: expected a JSON list of item ids"),
    ('{"items": "3 4"}\n', "line 13: \"items\" must be a JSON list"),
    ('{"session_id": [1], "items": ["3"]}\n', "\"session_id\" must be a string or an integer"),
    ('["3"]\n\x1b[31m{oops\n', "line 14: not JSON"),
    (b'["3"]\n["\xff"]\n', "line 14: not UTF-8"),
]


@pytest.mark.parametrize("content, message", BAD_JSONL)
def test_bad_jsonl_is_one_line_naming_the_line_and_no_output(bundle, tmp_path, capsys,
                                                             content, message):
    path = tmp_path / "in" / "bad.jsonl"
    path.parent.mkdir()
    raw = content if isinstance(content, bytes) else content.encode()
    path.write_bytes(GOOD_LINES.encode() + raw)
    for output in (tmp_path / "out" / "recs.jsonl", "-"):
        assert recommend("--model", bundle, "--input", path, "--output", output, "--batch_size", 4,
                         "-k", 3) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1
        assert message in captured.err and "\x1b" not in captured.err, captured.err
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_bad_options_and_paths_are_one_line_and_no_output(rec, bundle, sessions_file, tmp_path,
                                                          capsys):
    top = rec.n_items - 1
    out = tmp_path / "out.jsonl"
    (tmp_path / "a-file").write_text("x")
    broken_bundle = tmp_path / "not-a-bundle"
    broken_bundle.mkdir()
    bad_events = tmp_path / "bad.csv"
    bad_events.write_text("timestamp,visitorid,event,itemid\n1,2,click,3\n")
    cases = [
        (["--input", tmp_path / "missing.jsonl", "--output", out], "not found"),
        (["--input", tmp_path, "--output", out], "is not a file"),
        (["--input", sessions_file, "--output", out, "-k", 0], "expected a whole number >= 1"),
        (["--input", sessions_file, "--output", out, "-k", top + 1],
         f"k must be a whole number from 1 to {top}"),
        (["--session", "3", "-k", 100], f"k must be a whole number from 1 to {top}"),
        (["--input", sessions_file, "--output", tmp_path], "is a folder"),
        (["--input", sessions_file, "--output", tmp_path / "a-file" / "x.jsonl"],
         "is not a folder"),
        (["--input", sessions_file, "--output", sessions_file], "is the input file"),
        (["--input", sessions_file], "--output is required"),
        (["--input", sessions_file, "--session", "3", "--output", out], "not allowed with"),
        (["--output", out], "one of the arguments --input --session is required"),
        (["--session", "3", "--output", out], "--output goes with --input"),
        (["--input", sessions_file, "--output", out, "--json"], "--json goes with --session"),
        (["--input", sessions_file, "--output", out, "--session_gap", 60], "go with a click log"),
        (["--input", bad_events, "--output", out], "unknown event type"),
        (["--input", bad_events, "--output", out, "--keep_events", "click"], "unknown event type"),
        (["--input", sessions_file, "--output", out, "--device", "nonsense"], "not a torch device"),
        (["--input", sessions_file, "--output", out, "--input_format", "csv"], "invalid choice"),
    ]
    for args, message in cases:
        assert recommend("--model", bundle, *args) == 2, args
        captured = capsys.readouterr()
        assert message in captured.err and captured.err.count("\n") == 1, (args, captured.err)
        assert captured.out == "" and not out.exists(), args
    assert recommend("--model", broken_bundle, "--input", sessions_file, "--output", out) == 2
    assert "lacks SHA256SUMS" in capsys.readouterr().err and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "bad.csv", "not-a-bundle",
                                                           "sessions.jsonl"]


def test_usage_lists_the_command_and_stdout_output_from_a_process(bundle, sessions_file):
    assert "recommend" in cli.usage()
    done = subprocess.run([sys.executable, "-m", "recbole_srgnn.cli", "recommend", "--model",
                           str(bundle), "--input", str(sessions_file), "--output", "-", "-k", "3"],
                          capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["session_id"] for line in lines] == IDS
    assert all(len(line["items"]) == 3 for line in lines)
    # stderr is not a terminal: no progress bar, only the summary line
    assert done.stderr.splitlines() == [
        "recommend: 7 sessions -> stdout (2 with unknown items, 2 popularity fallbacks)"]
    assert math.isfinite(sum(s for line in lines for s in line["scores"]))
