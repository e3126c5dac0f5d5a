"""``recbole-srgnn recommend``: next-item recommendations from a model bundle, in batch or for one
session.

    recbole-srgnn recommend --model DIR --input sessions.jsonl --output recs.jsonl -k 20
    recbole-srgnn recommend --model DIR --input events.csv --output recs.jsonl -k 20
    recbole-srgnn recommend --model DIR --session 355 1021 77 [-k 10] [--json]

The batch form reads sessions (``recbole_srgnn.session_input``: JSONL, or a Retail Rocket click
log cut by the converter's protocol), scores them in chunks of ``--batch_size`` with one
``Recommender.recommend_batch`` call per chunk and writes one JSON line per session as it goes,
to a temporary file renamed into place at the end (``-`` writes to stdout). ``--session`` prints
a table (or, with ``--json``, one JSON object). Errors are one line and exit status 2, and leave
no output file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import IO, Any, Iterator

from recbole_srgnn.errors import InputError, OneLineArgumentParser, cli_errors, printable

PROG = "recbole-srgnn recommend"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


DESCRIPTION = """\
Recommend the next items for sessions with a model bundle (recbole-srgnn export). Items are the
dataset's item ids; unknown items are dropped and reported, a session with no known item gets
the training popularity ranking (fallback: true), a long session keeps its most recent
max_prefix_length items."""
EPILOG = """\
input formats (--input_format auto picks events for a name ending in .csv, .csv.gz, .csv.bz2 or
.csv.zst, else jsonl):
  jsonl   one session per line: a JSON list of item ids ["355","1021",77] or an object
          {"session_id": ..., "items": [...]} (other keys ignored); blank lines skipped. Read one
          line at a time (checked in a first pass before anything is written); memory does not
          grow with the number of sessions.
  events  a Retail Rocket click log (timestamp,visitorid,event,itemid[,transactionid]; plain or
          compressed), cut into sessions exactly as `recbole-srgnn convert retailrocket` cuts them:
          each visitor's events in time order, a new session after a gap > --session_gap seconds
          over all event types, then only --keep_events kept and (--dedup_consecutive) repeated
          consecutive items dropped. The converter's later training-data filters (session length,
          item support, time split) are not applied: every session with a kept click gets a line,
          recommended after its last click. The whole log is read into memory (as the converter
          does). session_id is the converter's session key: sessions numbered 1..N by (first kept
          event's timestamp, visitor id, order within the visitor), equal to the converter's ids
          when its filters drop no session; each line also carries visitor_id.
output: one JSON line per input session, in input order:
  {"session_id": ..., "items": [...], "scores": [...], "unknown_items": [...], "fallback": false}
  (session_id: the given one, or the 1-based line number). Written to a temporary file renamed
  into place at the end; --output - writes to stdout. Errors print one line and exit with
  status 2, leaving no output file."""


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    from recbole_srgnn.data.events_input import EVENT_TYPES
    from recbole_srgnn.data.retailrocket import PRESETS
    from recbole_srgnn.session_input import FORMATS

    parser = OneLineArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   allow_abbrev=False)
    parser.add_argument("--model", required=True, metavar="DIR", help="the bundle folder")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--input", metavar="PATH", help="a file of sessions (see input formats)")
    what.add_argument("--session", nargs="*", metavar="ITEM",
                      help="one session's items, oldest first: print its recommendations")
    parser.add_argument("--output", metavar="PATH",
                        help="with --input: the JSONL file to write (- = stdout)")
    parser.add_argument("--input_format", choices=FORMATS, default="auto",
                        help="how to read --input (default auto: by file name)")
    parser.add_argument("-k", "--k", type=_positive_int, default=20, metavar="K",
                        help="items per session (default 20; at most the number of items)")
    parser.add_argument("--exclude_seen", action="store_true",
                        help="never recommend an item of the session itself")
    parser.add_argument("--exclude", nargs="+", default=[], metavar="ITEM",
                        help="items never to recommend")
    parser.add_argument("--device", default="cpu",
                        help="torch device to score on (default cpu; e.g. cuda, cuda:1)")
    parser.add_argument("--batch_size", type=_positive_int, default=512, metavar="N",
                        help="sessions read and scored per chunk (default 512)")
    parser.add_argument("--json", action="store_true",
                        help="with --session: print one JSON object instead of a table")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar and no summary line")
    events = parser.add_argument_group("sessions of a click log (events input; the converter's "
                                       "options and defaults)")
    events.add_argument("--preset", choices=sorted(PRESETS),
                        help="a converter preset; the options below override it")
    events.add_argument("--session_gap", type=_number, metavar="SECONDS",
                        help="a gap strictly greater than this starts a new session (default 3600)")
    events.add_argument("--keep_events", nargs="+", metavar="TYPE",
                        help=f"event types kept after sessionizing ({', '.join(EVENT_TYPES)}; "
                             "default view)")
    events.add_argument("--dedup_consecutive", action="store_true", default=None,
                        help="drop a click repeating the previous kept item of its session")
    return parser


def _checked(args: argparse.Namespace, prog: str) -> None:
    """The option combinations argparse cannot express."""
    if args.session is not None:
        for name in ("output", "preset", "session_gap", "keep_events", "dedup_consecutive"):
            if getattr(args, name) is not None:
                raise InputError(f"{prog}: --{name} goes with --input, not --session")
        if args.input_format != "auto":
            raise InputError(f"{prog}: --input_format goes with --input, not --session")
        return
    if args.output is None:
        raise InputError(f"{prog}: --output is required with --input (- writes to stdout)")
    if args.json:
        raise InputError(f"{prog}: --json goes with --session (--input always writes JSON lines)")


def _convert_options(args: argparse.Namespace):
    """The converter's options: a preset (or its defaults) with the explicit ones on top."""
    import dataclasses

    from recbole_srgnn.data.retailrocket import PRESETS
    from recbole_srgnn.data.sessions import ConvertOptions

    base = PRESETS[args.preset] if args.preset else ConvertOptions()
    overrides: dict[str, Any] = {}
    if args.session_gap is not None:
        overrides["session_gap"] = args.session_gap
    if args.keep_events is not None:
        overrides["keep_events"] = tuple(args.keep_events)
    if args.dedup_consecutive is not None:
        overrides["dedup_consecutive"] = args.dedup_consecutive
    return dataclasses.replace(base, **overrides).validated()


def _check_output(args: argparse.Namespace, input_path: Path) -> Path | None:
    """The output file (None for stdout), checked before any work."""
    from recbole_srgnn.files import check_output_file

    if args.output == "-":
        return None
    output = check_output_file(args.output, "--output")
    if output.exists() and output.resolve() == input_path.resolve():
        raise InputError(f"--output {output} is the input file; write to another file")
    return output


def _load(args: argparse.Namespace):
    """The Recommender for ``--model`` on ``--device``, with ``-k`` checked against it."""
    from recbole_srgnn.recommend import Recommender

    try:
        recommender = Recommender.load(args.model, device=args.device)
    except (RuntimeError, AssertionError, ValueError) as exc:  # a device this torch cannot use
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"--device {args.device}: cannot use it here ({first})") from None
    recommender.recommend_batch([], args.k)  # InputError for a k beyond the number of items
    return recommender


def record(session, result) -> dict[str, Any]:
    """The output line of one session (``session_input.InputSession``) and its Recommendation."""
    return {"session_id": session.session_id, **session.extra, "items": result.items,
            "scores": result.scores, "unknown_items": result.unknown_items,
            "fallback": result.fallback}


def write_recommendations(recommender, sessions: Iterator, handle: IO[str],
                          args: argparse.Namespace, progress) -> dict[str, int]:
    """Score ``sessions`` chunk by chunk, writing each chunk's lines before reading the next."""
    from recbole_srgnn.session_input import chunks

    counts = {"sessions": 0, "unknown": 0, "fallback": 0}
    for chunk in chunks(sessions, args.batch_size):
        results = recommender.recommend_batch(
            [session.items for session in chunk], args.k, exclude_seen=args.exclude_seen,
            exclude=args.exclude, batch_size=args.batch_size)
        for session, result in zip(chunk, results):
            handle.write(json.dumps(record(session, result), ensure_ascii=False,
                                    allow_nan=False) + "\n")
            counts["unknown"] += bool(result.unknown_items)
            counts["fallback"] += result.fallback
        counts["sessions"] += len(chunk)
        progress.update(len(chunk))
    return counts


def _batch(args: argparse.Namespace, prog: str) -> int:
    from recbole_srgnn.session_input import check_input_file, input_format, open_sessions

    input_path = check_input_file(args.input)
    fmt = input_format(input_path, args.input_format)
    if fmt == "jsonl" and any(getattr(args, name) is not None
                              for name in ("preset", "session_gap", "keep_events",
                                           "dedup_consecutive")):
        raise InputError(f"{prog}: --preset, --session_gap, --keep_events and "
                         "--dedup_consecutive go with a click log (events input), not JSONL")
    options = _convert_options(args) if fmt == "events" else None
    output = _check_output(args, input_path)
    recommender = _load(args)
    from tqdm import tqdm

    from recbole_srgnn.files import atomic_outputs

    def bar(**kwargs):  # on stderr; disable=None: off when stderr is not a terminal
        return tqdm(file=sys.stderr, mininterval=0.5, dynamic_ncols=True, unit=" sessions",
                    disable=True if args.quiet else None, **kwargs)

    total, sessions = open_sessions(input_path, fmt, options,
                                    checking=lambda lines: bar(iterable=lines, desc="checking"))
    with bar(total=total, desc="scoring") as progress:
        if output is None:
            counts = write_recommendations(recommender, sessions, sys.stdout, args, progress)
            sys.stdout.flush()
        else:
            with atomic_outputs([output]) as (temp,):
                with open(temp, "w", encoding="utf-8") as handle:
                    counts = write_recommendations(recommender, sessions, handle, args, progress)
    if not args.quiet:
        where = "stdout" if output is None else str(output)
        line = (f"recommend: {counts['sessions']:,} sessions -> {where} ({counts['unknown']:,} "
                f"with unknown items, {counts['fallback']:,} popularity fallbacks)")
        print(line, file=sys.stderr if output is None else sys.stdout)
    return 0


def table(result, k: int) -> str:
    """A readable ranking: rank, item, score; then a line for unknown items and the fallback."""
    items = [printable(item) for item in result.items]
    width = max([len("item"), *map(len, items)])
    lines = [f"{'rank':>4}  {'item':<{width}}  score"]
    lines += [f"{rank:>4}  {item:<{width}}  {score:.4f}"
              for rank, (item, score) in enumerate(zip(items, result.scores), 1)]
    if not items:
        lines.append(f"(no item left to recommend; k was {k})")
    if result.unknown_items:
        shown = ", ".join(printable(item) for item in result.unknown_items)
        lines.append(f"unknown items (dropped): {shown}")
    if result.fallback:
        lines.append("fallback: no known item in the session; ranked by training popularity "
                     "(scores are counts)")
    return "\n".join(lines)


def _single(args: argparse.Namespace) -> int:
    recommender = _load(args)
    result = recommender.recommend(args.session, args.k, exclude_seen=args.exclude_seen,
                                   exclude=args.exclude)
    if args.json:
        print(json.dumps({"items": result.items, "scores": result.scores,
                          "unknown_items": result.unknown_items, "fallback": result.fallback},
                         ensure_ascii=False, allow_nan=False))
    else:
        print(table(result, args.k))
    return 0


@contextlib.contextmanager
def _quiet_broken_pipe() -> Iterator[None]:
    """A reader that stops early (``| head``) ends the command quietly, not with a traceback."""
    try:
        yield
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail
        raise InputError("output closed by its reader (broken pipe)") from None


@cli_errors
def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    _checked(args, prog)
    with _quiet_broken_pipe():
        try:
            return _single(args) if args.session is not None else _batch(args, prog)
        except BrokenPipeError:
            raise
        except OSError as exc:  # a full disk, a folder that became unwritable: one line
            raise InputError(f"{exc.strerror or exc}: {exc.filename or ''}".strip(": ")) from None
