"""``python -m recbole_srgnn.data``: subcommands, option overrides, one-line errors (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recbole_srgnn.data import cli
from recbole_srgnn.data.retailrocket import PRESETS
from recbole_srgnn.data.sessions import ConvertOptions

REPO = Path(__file__).resolve().parents[1]
HEADER = "timestamp,visitorid,event,itemid,transactionid"
DAY = 86_400_000
T0 = 1_440_000_000_000


def tiny_events(path: Path) -> Path:
    """30 days of short sessions over a few items: converts with the default protocol."""
    lines = [HEADER]
    for day in range(30):
        for visitor in range(3):
            for k, item in enumerate((11, 12, 13, 11)):
                lines.append(f"{T0 + day * DAY + visitor * 7_200_000 + k * 60_000},"
                             f"{day * 10 + visitor},view,{item},")
    lines.append(f"{T0 + 5 * DAY},999,addtocart,12,")
    lines.append(f"{T0 + 5 * DAY + 1},999,transaction,12,4242.0")
    path.write_text("\n".join(lines) + "\n")
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "recbole_srgnn.data", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)


def test_end_to_end_subprocess(tmp_path):
    events = tiny_events(tmp_path / "events.csv")
    out = tmp_path / "tiny"
    first = run_cli("retailrocket", "--events", events, "--out", out)
    assert first.returncode == 0, first.stderr
    assert "train" in first.stdout and "cases" in first.stdout and "done in" in first.stdout
    assert "[retailrocket" in first.stdout  # progress lines (stderr is kept for errors)
    assert first.stderr == ""
    assert sorted(p.name for p in out.iterdir()) == [
        "tiny.stats.json", "tiny.test.inter", "tiny.train.inter", "tiny.valid.inter"]
    stats = json.loads((out / "tiny.stats.json").read_text())
    assert stats["params"] == ConvertOptions().as_dict()
    test_rows = (out / "tiny.test.inter").read_text().count("\n") - 1
    summary = [line for line in first.stdout.splitlines() if line.startswith("  test ")]
    assert len(summary) == 1 and f"{test_rows:,} cases" in summary[0]

    second = run_cli("retailrocket", "--events", events, "--out", out, "--quiet")
    assert second.returncode == 0
    assert "reused cached result" in second.stdout
    assert second.stderr == ""

    forced = run_cli("retailrocket", "--events", events, "--out", out, "--quiet", "--force")
    assert forced.returncode == 0 and "reused" not in forced.stdout

    bad = run_cli("retailrocket", "--events", tmp_path / "missing.csv", "--out", tmp_path / "o2")
    assert bad.returncode == 2
    assert bad.stdout == ""
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "kaggle.com" in lines[0]
    assert not (tmp_path / "o2").exists()


def parse(*args: str):
    return cli.build_parser().parse_args(["retailrocket", "--events", "e.csv", "--out", "o", *args])


def test_options_defaults_presets_and_overrides():
    assert cli.retailrocket_options(parse()) == ConvertOptions()
    assert cli.retailrocket_options(parse("--preset", "ludewig2021")) == PRESETS["ludewig2021"]
    assert cli.retailrocket_options(parse("--preset", "hidasi-gru4rec")) == PRESETS["hidasi-gru4rec"]
    options = cli.retailrocket_options(parse(
        "--preset", "ludewig2021", "--session-gap", "900", "--keep-events", "view", "addtocart",
        "--dedup-consecutive", "--min-item-support", "3", "--min-session-length", "4",
        "--test-days", "2.5", "--valid-days", "0", "--max-prefix-length", "0"))
    assert options == ConvertOptions(session_gap=900.0, keep_events=("view", "addtocart"),
                                     dedup_consecutive=True, min_item_support=3,
                                     min_session_length=4, test_days=2.5, valid_days=0.0,
                                     max_prefix_length=0)
    # a preset's dedup stays on unless overridden; an unset option keeps the preset's value
    assert cli.retailrocket_options(parse("--preset", "hidasi-gru4rec", "--test-days", "3")) == \
        ConvertOptions(session_gap=3600, dedup_consecutive=True, test_days=3.0)


@pytest.mark.parametrize("args, pattern", [
    ([], "choose a subcommand"),
    (["retailrocket", "--events", "x.csv"], "--out"),
    (["retailrocket", "--events", "{events}", "--out", "{out}", "--preset", "nope"], "invalid choice"),
    (["retailrocket", "--events", "{events}", "--out", "{out}", "--keep-events", "view", "click"], "'click'"),
    (["retailrocket", "--events", "{events}", "--out", "{out}", "--test-days", "-1"], "test_days"),
    (["retailrocket", "--events", "{events}", "--out", "{out}", "--valid-days", "abc"], "expected a number"),
    (["retailrocket", "--events", "{events}", "--out", "{out}", "--min-item-support", "-2"], "integer >= 0"),
    (["retailrocket", "--events", "{events}", "--out", "{out}", "--min-item-support", "0"], "min_item_support"),
    (["retailrocket", "--events", "{events}", "--out", "{out}", "--min-item-support", "1000"], "nothing left"),
    (["retailrocket", "--events", "{bad}", "--out", "{out}"], "column itemid"),
    (["retailrocket", "--events", "{tmp}", "--out", "{out}"], "not a file"),
    (["presplit", "--source", "{tmp}/nope", "--out", "{out}"], "nope"),
    (["synthetic", "--out", "{tmp}/s.csv", "--events", "0"], "at least 1"),
    (["unknown-command"], "invalid choice"),
])
def test_errors_are_one_line_exit_2(tmp_path, capsys, args, pattern):
    events = tiny_events(tmp_path / "events.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "\n1,2,view,x,\n")
    out = tmp_path / "out"
    args = [a.format(events=events, out=out, bad=bad, tmp=tmp_path) for a in args]
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    assert pattern in lines[0]
    assert "Traceback" not in captured.err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "events.csv"]


def test_unwritable_output_is_one_line(tmp_path, capsys):
    events = tiny_events(tmp_path / "events.csv")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.main(["retailrocket", "--events", str(events), "--out", str(blocker / "sub"),
                     "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


def test_synthetic_then_convert(tmp_path, capsys):
    path = tmp_path / "syn" / "events.csv"
    assert cli.main(["synthetic", "--out", str(path), "--events", "3000", "--seed", "3"]) == 0
    assert path.read_text().splitlines()[0].startswith("timestamp,visitorid,event,itemid")
    assert cli.main(["retailrocket", "--events", str(path), "--out", str(tmp_path / "syn-out"),
                     "--min-item-support", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "test" in out
    assert (tmp_path / "syn-out" / "syn-out.test.inter").exists()


def test_presplit_subcommand(tmp_path, capsys):
    source = tmp_path / "src"
    source.mkdir()
    (source / "train_sessions.txt").write_text("1 2 3\n2 3 4 5\n1 3\n4 5 1\n")
    (source / "test.tsv").write_text("session_id\ttimestamp\tprefix\ttarget\n"
                                     "9\t1442000000\t1 2\t3\n9\t1442000001\t1 2 3\t4\n")
    out = tmp_path / "ps"
    assert cli.main(["presplit", "--source", str(source), "--out", str(out),
                     "--valid-fraction", "0.25", "--max-prefix-length", "2", "--quiet"]) == 0
    assert (out / "ps.test.inter").read_text().splitlines()[1:] == [
        "9\t1 2\t3\t1442000000.000", "9\t2 3\t4\t1442000001.000"]
    stats = json.loads((out / "ps.stats.json").read_text())
    assert stats["params"]["valid_fraction"] == 0.25
    assert cli.main(["presplit", "--source", str(source), "--out", str(out),
                     "--valid-fraction", "0.25", "--max-prefix-length", "2", "--quiet"]) == 0
    assert "reused cached result" in capsys.readouterr().out


def test_an_output_path_that_is_a_folder_fails_before_any_work(tmp_path, capsys):
    """Checked before reading the input: one line, and nothing (no temporary file) left behind."""
    events = tiny_events(tmp_path / "events.csv")
    out = tmp_path / "tiny"
    (out / "tiny.test.inter").mkdir(parents=True)
    assert cli.main(["retailrocket", "--events", str(events), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "tiny.test.inter is a folder" in lines[0], captured.err
    assert "[retailrocket" not in captured.out  # no step of the conversion ran
    assert sorted(p.name for p in out.iterdir()) == ["tiny.test.inter"]

    source = tmp_path / "src"
    source.mkdir()
    (source / "train_sessions.txt").write_text("1 2 3\n2 3 4 5\n")
    (source / "test.tsv").write_text("session_id\ttimestamp\tprefix\ttarget\n9\t1442000000\t1 2\t3\n")
    (tmp_path / "ps" / "ps.stats.json").mkdir(parents=True)
    assert cli.main(["presplit", "--source", str(source), "--out", str(tmp_path / "ps")]) == 2
    captured = capsys.readouterr()
    assert "ps.stats.json is a folder" in captured.err and "reading" not in captured.out
    assert sorted(p.name for p in (tmp_path / "ps").iterdir()) == ["ps.stats.json"]

    assert cli.main(["synthetic", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: --output {tmp_path} is a folder")


def test_binary_input_in_a_real_terminal_session_is_one_printable_line(tmp_path):
    """The real command on a binary file: stderr is one short line without control characters
    (before, ~400 raw bytes reached the terminal); a gzip file named .csv is simply read."""
    binary = tmp_path / "events.csv"
    binary.write_bytes(bytes(range(256)) * 20)
    bad = run_cli("retailrocket", "--events", binary, "--out", tmp_path / "o")
    assert bad.returncode == 2 and bad.stdout == ""
    assert len(bad.stderr.splitlines()) == 1 and bad.stderr.endswith("\n")
    line = bad.stderr.rstrip("\n")
    assert line.isprintable() and len(line) < 200 + len(str(binary)), line
    assert not (tmp_path / "o").exists()

    import gzip

    gzipped = tmp_path / "gzipped.csv"
    gzipped.write_bytes(gzip.compress(tiny_events(tmp_path / "plain.csv").read_bytes()))
    good = run_cli("retailrocket", "--events", gzipped, "--out", tmp_path / "g", "--quiet")
    assert good.returncode == 0, good.stderr
    assert (tmp_path / "g" / "g.test.inter").is_file()
