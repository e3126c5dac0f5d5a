"""Reading the two forms of a pre-split session dataset, validated (the COTREC/DHCN split).

The import (``presplit.py``) trusts what is returned here; every check of the untrusted files
lives in this module, and every problem is one ``InputError`` line naming the file (and its line
or list position). A folder holds one of two forms of the same data (docs/design.md §3):

- text (checked first): ``train_sessions.txt``, one training session per line, item ids
  separated by spaces, oldest first; ``test.tsv``, tab-separated with the header
  ``session_id timestamp prefix target`` (timestamp in unix seconds, prefix = space-separated
  item ids, oldest first), one row per published (prefix -> target) test case;
- the public release's pickles: ``all_train_seq.txt``, a pickled list of sessions (lists of
  item ids); ``test.txt``, a pickled tuple ``(prefixes, targets)``. Copies that add session ids
  and/or timestamps as extra list(s) are accepted: an extra list whose values are all numbers in
  the unix-seconds range 1e9..1e11 (or milliseconds, 1e12..1e14) is taken as timestamps, any
  other as session ids. The pickles are read with an unpickler that refuses every global
  (``safe_pickle``: no class, function or module is ever looked up) and the result must consist
  of lists, tuples, ints (and floats/str/None for timestamps and ids) only.

:func:`read_train` gives the training sessions (lists of item ids); :func:`read_test` the test
cases as ``{"session_id": list | None, "timestamp_ms": list | None, "prefix": [[ids]],
"target": [id]}`` (None: the file has no such column).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from recbole_srgnn.errors import InputError
from recbole_srgnn.safe_pickle import restricted_load

TEXT_FILES = ("train_sessions.txt", "test.tsv")
PICKLE_FILES = ("all_train_seq.txt", "test.txt")
TEST_HEADER = ["session_id", "timestamp", "prefix", "target"]


def read_train(kind: str, path: Path) -> list[list[int]]:
    """The training sessions of a ``kind`` ('text' | 'pickle') file, oldest item first."""
    return _read_text_train(path) if kind == "text" else _read_pickle_train(path)


def read_test(kind: str, path: Path) -> dict[str, list]:
    """The test cases of a ``kind`` ('text' | 'pickle') file (columns: the module docstring)."""
    return _read_text_test(path) if kind == "text" else _read_pickle_test(path)


def _check_plain(obj: Any, path: Path) -> None:
    """Only list/tuple/int/float/str/None (bool excluded) anywhere in ``obj``."""
    stack = [obj]
    while stack:
        value = stack.pop()
        if isinstance(value, (list, tuple)):
            stack.extend(value)
        elif value is None or isinstance(value, str) or (
                isinstance(value, (int, float)) and not isinstance(value, bool)):
            continue
        else:
            raise InputError(f"{path} holds a {type(value).__name__}; only lists, tuples, "
                             f"numbers and strings are accepted")


def _item_ids(values, where: str) -> list[int]:
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and value >= 0:
                raise InputError(f"{where}: item id {value!r} is a float, not an integer")
            raise InputError(f"{where}: item id {value!r} is not a non-negative integer")
        if value < 0:
            raise InputError(f"{where}: item id {value} is negative")
        out.append(value)
    return out


def _parse_ids(text: str, where: str) -> list[int]:
    tokens = text.split(" ")
    if any(not (t.isascii() and t.isdigit()) for t in tokens):
        bad = next(t for t in tokens if not (t.isascii() and t.isdigit()))
        raise InputError(f"{where}: {bad!r} is not a non-negative integer item id "
                         f"(ids are separated by single spaces)")
    return [int(t) for t in tokens]


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text: {exc}") from None
    if not text.strip():
        raise InputError(f"{path} is empty")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _read_text_train(path: Path) -> list[list[int]]:
    sessions = []
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            raise InputError(f"{path} line {number} is empty (one session per line)")
        sessions.append(_parse_ids(line.strip(), f"{path} line {number}"))
    return sessions


def _read_text_test(path: Path) -> dict[str, list]:
    lines = _read_lines(path)
    header = lines[0].split("\t")
    if header != TEST_HEADER:
        raise InputError(f"{path}: header must be {chr(9).join(TEST_HEADER)!r} (tab-separated), "
                         f"got {lines[0]!r}")
    if len(lines) < 2:
        raise InputError(f"{path} has no test cases")
    ids, times, prefixes, targets = [], [], [], []
    for number, line in enumerate(lines[1:], start=2):
        where = f"{path} line {number}"
        fields = line.split("\t")
        if len(fields) != 4:
            raise InputError(f"{where}: expected 4 tab-separated fields, got {len(fields)}")
        sid, stamp, prefix, target = fields
        if not sid or sid != sid.strip() or " " in sid:
            raise InputError(f"{where}: session id {sid!r} is empty or contains spaces")
        ids.append(sid)
        times.append(_seconds_to_ms(stamp, where))
        if not prefix.strip():
            raise InputError(f"{where}: empty prefix")
        prefixes.append(_parse_ids(prefix.strip(), where))
        targets.append(_parse_ids(target.strip(), where) if target.strip() else [])
        if len(targets[-1]) != 1:
            raise InputError(f"{where}: target must be one item id, got {target!r}")
        targets[-1] = targets[-1][0]
    return {"session_id": ids, "timestamp_ms": times, "prefix": prefixes, "target": targets}


def _seconds_to_ms(value, where: str) -> int:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: timestamp {value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise InputError(f"{where}: timestamp {value!r} is not a valid time")
    return int(round(seconds * 1000.0))


def _read_pickle_train(path: Path) -> list[list[int]]:
    data = restricted_load(path)
    _check_plain(data, path)
    if not isinstance(data, (list, tuple)) or not data:
        raise InputError(f"{path} must hold a non-empty list of sessions (lists of item ids)")
    return _id_lists(data, path, "session")


def _id_lists(lists, path: Path, what: str) -> list[list[int]]:
    """Each of ``lists`` as a non-empty list of item ids; ``what`` names one in messages."""
    out = []
    for k, values in enumerate(lists, start=1):
        if not isinstance(values, (list, tuple)) or not values:
            raise InputError(f"{path}: {what} {k} is not a non-empty list of item ids")
        out.append(_item_ids(values, f"{path} {what} {k}"))
    return out


def _looks_like_times(values: list) -> str | None:
    """'s' or 'ms' if every value is a number in a plausible unix-time range, else None."""
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    lo, hi = min(values), max(values)
    if 1e9 <= lo and hi < 1e11:
        return "s"
    if 1e12 <= lo and hi < 1e14:
        return "ms"
    return None


def _read_pickle_test(path: Path) -> dict[str, list]:
    data = restricted_load(path)
    _check_plain(data, path)
    if not isinstance(data, (list, tuple)) or not 2 <= len(data) <= 4:
        raise InputError(f"{path} must hold a tuple (prefixes, targets[, session ids][, timestamps])")
    prefixes_raw, targets_raw, *extra = data
    if not isinstance(prefixes_raw, (list, tuple)) or not isinstance(targets_raw, (list, tuple)):
        raise InputError(f"{path}: prefixes and targets must be lists")
    n = len(prefixes_raw)
    if n == 0:
        raise InputError(f"{path} has no test cases")
    if len(targets_raw) != n:
        raise InputError(f"{path}: {n} prefixes but {len(targets_raw)} targets")
    prefixes = _id_lists(prefixes_raw, path, "prefix")
    targets = _item_ids(targets_raw, f"{path} targets")
    ids = times = None
    for column in extra:
        if not isinstance(column, (list, tuple)) or len(column) != n:
            raise InputError(f"{path}: an extra column is not a list of {n} values")
        unit = _looks_like_times(list(column))
        if unit is not None and times is None:
            scale = 1.0 if unit == "ms" else 1000.0
            times = [int(round(float(v) * scale)) for v in column]
        elif unit is None and ids is None:
            ids = []
            for v in column:
                if v is None or isinstance(v, float) or isinstance(v, (list, tuple)):
                    raise InputError(f"{path}: session id {v!r} is not an integer or string")
                token = str(v)
                if not token or any(c.isspace() for c in token):
                    raise InputError(f"{path}: session id {token!r} is empty or has spaces")
                ids.append(token)
        else:
            raise InputError(f"{path}: cannot tell which extra column holds session ids and "
                             f"which holds timestamps")
    return {"session_id": ids, "timestamp_ms": times, "prefix": prefixes, "target": targets}


def detect_format(source: Path) -> tuple[str, tuple[Path, Path]]:
    """('text' | 'pickle', (train file, test file)) for a source folder; InputError otherwise."""
    if not source.exists():
        raise InputError(f"pre-split source folder {source} does not exist")
    if not source.is_dir():
        raise InputError(f"pre-split source {source} is not a folder (expected a folder with "
                         f"{' + '.join(TEXT_FILES)} or {' + '.join(PICKLE_FILES)})")
    for kind, names in (("text", TEXT_FILES), ("pickle", PICKLE_FILES)):
        paths = tuple(source / n for n in names)
        if all(p.is_file() for p in paths):
            return kind, paths  # type: ignore[return-value]
    present = sorted(p.name for p in source.iterdir())
    raise InputError(f"{source} holds neither {' + '.join(TEXT_FILES)} nor "
                     f"{' + '.join(PICKLE_FILES)} (found: {', '.join(present) or 'nothing'})")
