"""Reading events.csv (recbole_srgnn/data/events_input.py): compressed and binary input, values
out of range, negative ids and timestamps, and messages that stay one short, printable line."""

from __future__ import annotations

import bz2
import gzip
import random
import zipfile
from pathlib import Path

import pytest

from recbole_srgnn.data import cli
from recbole_srgnn.data.events_input import TIMESTAMP_RANGE_MS, read_events
from recbole_srgnn.data.sessions import iso_utc

HEADER = "timestamp,visitorid,event,itemid,transactionid"
DAY = 86_400_000
T0 = 1_440_000_000_000  # 2015-08-19, ms


def events_text(t0: int = T0, sign: int = 1) -> str:
    """30 days of short view sessions over three items (converts with the default protocol)."""
    lines = [HEADER]
    for day in range(30):
        for visitor in range(3):
            for k, item in enumerate((11, 12, 13, 11)):
                lines.append(f"{t0 + day * DAY + visitor * 7_200_000 + k * 60_000},"
                             f"{sign * (day * 10 + visitor)},view,{sign * item},")
    return "\n".join(lines) + "\n"


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """Work in tmp_path with relative names, so messages hold short paths."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def refused(capsys, events: str, *extra: str) -> str:
    """The one error line of converting ``events``; checks it is short and printable."""
    assert cli.main(["retailrocket", "--events", events, "--out", "out", "--quiet", *extra]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    line = lines[0]
    assert line.startswith("error: ") and "Traceback" not in line
    assert line.isprintable(), repr(line)  # no control characters reach the terminal
    assert len(line) < 200, line
    assert not Path("out").exists()
    return line


def converted(capsys, events: str, out: str) -> dict[str, bytes]:
    assert cli.main(["retailrocket", "--events", events, "--out", out, "--quiet"]) == 0, \
        capsys.readouterr().err
    return {p.name.split(".", 1)[1]: p.read_bytes() for p in Path(out).iterdir()
            if p.suffix == ".inter"}


def test_a_timestamp_that_is_not_a_date_names_its_line(here, capsys):
    lines = events_text().splitlines()
    lines[13] = lines[13].replace(lines[13].split(",")[0], str(int(lines[13].split(",")[0]) * 10**6))
    Path("events.csv").write_text("\n".join(lines) + "\n")  # fits int64, is not a date
    line = refused(capsys, "events.csv")
    assert "line 14" in line and "timestamp" in line and "milliseconds" in line


def test_a_value_beyond_64_bits_names_its_line(here, capsys):
    Path("events.csv").write_text(events_text().replace(",11,", ",99999999999999999999,", 1))
    line = refused(capsys, "events.csv")
    assert "line 2" in line and "itemid" in line


def test_the_accepted_timestamp_range_is_every_date():
    low, high = TIMESTAMP_RANGE_MS
    assert iso_utc(low) == "0001-01-01T00:00:00.000Z"
    assert iso_utc(high) == "9999-12-31T23:59:59.999Z"
    assert iso_utc(high + 1) is None and iso_utc(low - 1) is None


def test_huge_day_options_are_one_line_not_a_traceback(here, capsys):
    Path("events.csv").write_text(events_text())
    assert "training split" in refused(capsys, "events.csv", "--test-days", "1e12")
    assert "training split" in refused(capsys, "events.csv", "--valid-days", "1e300")


def test_compressed_input_is_read_whatever_its_name(here, capsys):
    text = events_text()
    Path("events.csv").write_text(text)
    Path("events.csv.gz").write_bytes(gzip.compress(text.encode()))
    Path("gzipped.csv").write_bytes(gzip.compress(text.encode()))  # a gzip file named .csv
    Path("events.bz2.csv").write_bytes(bz2.compress(text.encode()))
    plain = converted(capsys, "events.csv", "plain")
    assert len(plain) == 3
    for name, out in (("events.csv.gz", "gz"), ("gzipped.csv", "gzipped"),
                      ("events.bz2.csv", "bz2")):
        assert converted(capsys, name, out) == plain


def test_binary_input_is_refused_with_a_short_escaped_excerpt(here, capsys):
    rng = random.Random(0)
    Path("random.csv").write_bytes(bytes(rng.randrange(256) for _ in range(5000)))
    assert "not CSV text" in refused(capsys, "random.csv")
    # control characters and escape sequences, but no NUL byte
    Path("escapes.csv").write_bytes(b"\x1b[2J\x1b[31m" * 60 + b"\n" + b"\x07\x08" * 300 + b"\n")
    assert "not CSV text" in refused(capsys, "escapes.csv")
    Path("utf16.csv").write_bytes(events_text().encode("utf-16"))
    assert "UTF-16" in refused(capsys, "utf16.csv")
    with zipfile.ZipFile("events.zip", "w") as archive:
        archive.writestr("events.csv", events_text())
    assert "zip" in refused(capsys, "events.zip")
    Path("broken.csv.gz").write_bytes(gzip.compress(events_text().encode())[:300])
    assert "broken.csv.gz" in refused(capsys, "broken.csv.gz")


def test_garbage_rows_after_a_good_header_are_quoted_short_and_escaped(here, capsys):
    junk = "\x1b[31m" * 80
    Path("ragged.csv").write_text(HEADER + "\n1,2,view,3,\n" + junk + "\n")
    refused(capsys, "ragged.csv")
    Path("value.csv").write_text(HEADER + "\n1,2,view,3,\n2,2,view,7" + junk + ",\n")
    line = refused(capsys, "value.csv")
    assert "itemid" in line and "line 3" in line and "\\x1b" in line
    many = "".join(f"{k},1,{junk[:5]}kind{k},3,\n" for k in range(50))
    Path("kinds.csv").write_text(HEADER + "\n" + many)
    line = refused(capsys, "kinds.csv")
    assert "unknown event type" in line and "more" in line and "line 2" in line
    Path("header.csv").write_text("time\tstamp," + "x" * 300 + "\n1,2,3\n")  # long, with a tab
    assert "lacks column" in refused(capsys, "header.csv")


def test_negative_ids_and_timestamps_before_1970_convert(here, capsys):
    """Ids are kept as given (RecBole reads them as tokens); negative milliseconds are dates."""
    Path("mirror.csv").write_text(events_text(t0=T0 - 2 * T0 + 29 * DAY, sign=-1))
    out = converted(capsys, "mirror.csv", "mirror")
    rows = out["train.inter"].decode().splitlines()
    assert rows[1].split("\t")[1:3] == ["-11", "-12"] and rows[1].split("\t")[3].startswith("-14")
    columns = read_events("mirror.csv")
    assert columns["timestamp"].min() < 0 and columns["itemid"].max() < 0
    assert columns["visitorid"].max() == 0
