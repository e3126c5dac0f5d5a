"""Sessions to score, read from a file for ``recbole-srgnn recommend``: JSONL or a raw click log.

* **JSONL** (``read_jsonl_sessions``): one session per line, either a JSON list of item ids
  (``["355", "1021", 77]``) or an object ``{"session_id": ..., "items": [...]}`` (other keys
  ignored; without ``session_id`` the session is named by its 1-based line number). Item ids are
  strings or integers; blank lines are skipped. The reader is a generator that holds one line at
  a time, so memory does not grow with the file.
* **Click log** (``read_events_sessions``): a Retail Rocket ``events.csv`` (``.csv``, or
  compressed like ``.csv.gz``), cut into sessions by the converter's own steps
  (:func:`recbole_srgnn.data.sessions.click_sessions`); the log is read whole, as the
  converter reads it. Each session is named by the converter's session id and carries its visitor.

``input_format`` picks the reader from ``--input_format`` (``auto``: a name ending in ``.csv``
or ``.csv.<gz|bz2|zst>`` is a click log, anything else JSONL). Every problem is one
``InputError`` line naming the file and, for JSONL, the line number with a short escaped excerpt.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

from recbole_srgnn.errors import InputError, excerpt

FORMATS = ("auto", "jsonl", "events")
_EVENTS_NAME = re.compile(r"\.csv(\.(gz|bz2|zst))?$", re.IGNORECASE)
T = TypeVar("T")


@dataclass(frozen=True)
class InputSession:
    """One session to score: its id, its items (oldest first) and extra keys for its output line."""

    session_id: str | int
    items: list[str | int]
    extra: dict[str, Any] = field(default_factory=dict)


def check_input_file(path: str | os.PathLike, option_name: str = "--input") -> Path:
    """``path`` if it is a readable regular file, else InputError (one line)."""
    text = os.fspath(path)
    if not str(text).strip():
        raise InputError(f"{option_name} is empty; give a file path")
    path = Path(text).expanduser()
    if not path.exists():
        raise InputError(f"{option_name} {path} not found")
    if not path.is_file():
        raise InputError(f"{option_name} {path} is not a file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise InputError(f"{option_name} {path} is not readable ({exc.strerror or exc})") from None
    return path


def input_format(path: str | os.PathLike, choice: str = "auto") -> str:
    """``jsonl`` or ``events`` for ``path``: ``choice`` itself, or by name for ``auto``."""
    if choice not in FORMATS:
        raise InputError(f"--input_format must be one of {', '.join(FORMATS)}, got {choice!r}")
    if choice != "auto":
        return choice
    return "events" if _EVENTS_NAME.search(Path(path).name) else "jsonl"


def _item_ids(value: Any, where: str) -> list[str | int]:
    if not isinstance(value, list):
        raise InputError(f"{where}: \"items\" must be a JSON list of item ids, got "
                         f"{excerpt(json.dumps(value), 30)}")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise InputError(f"{where}: item ids are strings or integers, got "
                             f"{excerpt(json.dumps(item), 30)}")
    return value


def parse_session_line(text: str, number: int, where: str) -> InputSession:
    """The session on one (non-blank) JSONL line; InputError naming ``where`` otherwise."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        message = getattr(exc, "msg", "invalid JSON")
        raise InputError(f"{where}: not JSON ({message}): {excerpt(text.strip(), 40)}") from None
    if isinstance(value, list):
        return InputSession(number, _item_ids(value, where))
    if isinstance(value, dict) and "items" in value:
        session_id = value.get("session_id", number)
        if isinstance(session_id, bool) or not isinstance(session_id, (str, int)):
            raise InputError(f"{where}: \"session_id\" must be a string or an integer, got "
                             f"{excerpt(json.dumps(session_id), 30)}")
        return InputSession(session_id, _item_ids(value["items"], where))
    raise InputError(f"{where}: expected a JSON list of item ids or an object with \"items\", "
                     f"got {excerpt(text.strip(), 40)}")


def read_jsonl_sessions(path: str | os.PathLike) -> Iterator[InputSession]:
    """The sessions of a JSONL file, one line at a time (a generator; see the module docstring)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                where = f"{path} line {number}"
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise InputError(f"{where}: not UTF-8 text: {excerpt(raw, 30)}") from None
                if number == 1:
                    text = text.removeprefix("\ufeff")
                if text.strip():
                    yield parse_session_line(text, number, where)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_events_sessions(path: str | os.PathLike,
                         options=None) -> tuple[int, Iterator[InputSession]]:
    """(number of sessions, the sessions) of a click log, cut by the converter's steps 1-4.

    ``options`` is a ``ConvertOptions`` (its session gap, event types and de-duplication are
    used; the defaults when None). The file is read and cut here, before the first session.
    """
    from recbole_srgnn.data.sessions import ConvertOptions, read_click_sessions

    sessions = read_click_sessions(path, options or ConvertOptions())
    if not len(sessions):
        kept = ", ".join((options or ConvertOptions()).keep_events)
        raise InputError(f"events file {path} has no event of the kept type(s) ({kept}); "
                         "nothing to recommend after (see --keep_events)")

    def generate() -> Iterator[InputSession]:
        for k in range(len(sessions)):
            yield InputSession(int(sessions.session_id[k]), sessions.items_of(k),
                               {"visitor_id": int(sessions.visitor[k])})

    return len(sessions), generate()


def open_sessions(path: str | os.PathLike, fmt: str, options=None, *,
                  checking: Callable[[Iterator[InputSession]], Iterable[InputSession]] = iter,
                  ) -> tuple[int, Iterator[InputSession]]:
    """(number of sessions, a generator of them) for a checked input file in format ``fmt``.

    A JSONL file is read twice: once, line by line, to check every line and count the sessions
    (so that a bad line fails before any output is written; ``checking`` wraps that pass, e.g.
    in a progress bar), then lazily for scoring.
    """
    if fmt == "events":
        return read_events_sessions(path, options)
    total = sum(1 for _ in checking(read_jsonl_sessions(path)))
    return total, read_jsonl_sessions(path)


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of at most ``size`` items, taking each from ``items`` only when needed."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
