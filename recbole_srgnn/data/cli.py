"""``python -m recbole_srgnn.data <subcommand>``: prepare datasets as RecBole benchmark files.

Subcommands:

- ``retailrocket``: convert Kaggle's Retail Rocket ``events.csv`` (docs/design.md §2), optionally from
  a published preset, explicit options overriding it;
- ``presplit``: import a pre-split session dataset (the COTREC/DHCN Retail Rocket split);
- ``synthetic``: write a synthetic click log in the raw Retail Rocket schema.

Every error prints one line ``error: ...`` on stderr and exits with code 2; progress lines and
the summary go to stdout, so stderr holds nothing but that line.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from typing import Any, Sequence

from recbole_srgnn.errors import InputError, OneLineArgumentParser, cli_errors
from recbole_srgnn.files import check_output_file


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    return value


OUT_ALIAS = {"--out": "--output"}  # the earlier spelling, still accepted


def build_parser() -> argparse.ArgumentParser:
    from recbole_srgnn.data.events_input import EVENT_TYPES
    from recbole_srgnn.data.retailrocket import PRESETS

    parser = OneLineArgumentParser(prog="python -m recbole_srgnn.data",
                     description="Prepare session datasets as pre-augmented RecBole benchmark files.")
    sub = parser.add_subparsers(dest="command", metavar="{retailrocket,presplit,synthetic}",
                                parser_class=OneLineArgumentParser)

    rr = sub.add_parser("retailrocket", flag_aliases=OUT_ALIAS, help="convert Retail Rocket events.csv (docs/design.md §2)",
                        description="Convert Kaggle's Retail Rocket events.csv into "
                                    "DIR/<name>.{train,valid,test}.inter and DIR/<name>.stats.json.")
    rr.add_argument("--events", required=True, metavar="PATH", help="the events.csv file")
    rr.add_argument("--output", "-o", required=True, metavar="DIR", help="output folder (its name names the dataset)")
    rr.add_argument("--preset", choices=sorted(PRESETS), help="a published protocol; explicit options override it")
    rr.add_argument("--session_gap", type=_number, metavar="SECONDS",
                    help="a gap strictly greater than this starts a new session (default 3600)")
    rr.add_argument("--keep_events", nargs="+", metavar="TYPE",
                    help=f"event types to keep after sessionizing ({', '.join(EVENT_TYPES)}; default view)")
    rr.add_argument("--dedup_consecutive", action="store_true", default=None,
                    help="drop an event repeating the previous kept item of its session")
    rr.add_argument("--min_item_support", type=_nonnegative_int, metavar="N", help="default 5")
    rr.add_argument("--min_session_length", type=_nonnegative_int, metavar="N", help="default 2")
    rr.add_argument("--test_days", type=_number, metavar="D", help="default 7")
    rr.add_argument("--valid_days", type=_number, metavar="D", help="default 7; 0 = no validation file")
    rr.add_argument("--max_prefix_length", type=_nonnegative_int, metavar="N",
                    help="most recent prefix items kept per case (default 50, 0 = all)")
    rr.add_argument("--force", action="store_true", help="rebuild even if a matching result exists")
    rr.add_argument("--quiet", action="store_true", help="no progress lines")

    ps = sub.add_parser("presplit", flag_aliases=OUT_ALIAS, help="import a pre-split dataset (COTREC/DHCN Retail Rocket)")
    ps.add_argument("--source", required=True, metavar="DIR")
    ps.add_argument("--output", "-o", required=True, metavar="DIR")
    ps.add_argument("--valid_fraction", type=_number, default=0.1, metavar="F",
                    help="last fraction of the training sessions used for validation (default 0.1)")
    ps.add_argument("--max_prefix_length", type=_nonnegative_int, default=50, metavar="N")
    ps.add_argument("--force", action="store_true")
    ps.add_argument("--quiet", action="store_true")

    sy = sub.add_parser("synthetic", flag_aliases=OUT_ALIAS, help="write a synthetic events.csv in the Retail Rocket schema")
    sy.add_argument("--output", "-o", required=True, metavar="PATH")
    sy.add_argument("--events", type=_nonnegative_int, default=None, metavar="N",
                    help="number of rows (default: the embedded dataset's size)")
    sy.add_argument("--seed", type=int, default=0, metavar="S")
    return parser


def retailrocket_options(args: argparse.Namespace):
    """ConvertOptions from a preset (or the defaults) overridden by the explicit options."""
    from recbole_srgnn.data.retailrocket import PRESETS
    from recbole_srgnn.data.sessions import ConvertOptions

    base = PRESETS[args.preset] if args.preset else ConvertOptions()
    overrides: dict[str, Any] = {}
    for field in ("session_gap", "dedup_consecutive", "min_item_support", "min_session_length",
                  "test_days", "valid_days", "max_prefix_length"):
        value = getattr(args, field)
        if value is not None:
            overrides[field] = value
    if args.keep_events is not None:
        overrides["keep_events"] = tuple(args.keep_events)
    return dataclasses.replace(base, **overrides)


def _progress_to_stdout():
    """The library functions print progress on stderr; the command line keeps stderr for errors."""
    return contextlib.redirect_stderr(sys.stdout)


def _summary(stats: dict[str, Any], what: str, began: float) -> None:
    if stats.get("reused"):
        print(f"{what}: reused cached result in {stats.get('_out')}")
    else:
        print(f"{what}: done in {time.perf_counter() - began:.1f} s")
    for split, entry in stats.get("splits", {}).items():
        parts = [f"{entry[key]:,} {key}" for key in ("sessions", "cases", "items")
                 if isinstance(entry.get(key), int)]
        print(f"  {split:5s}: " + ", ".join(parts))


def _retailrocket(args: argparse.Namespace) -> int:
    from recbole_srgnn.data.retailrocket import convert_events

    options = retailrocket_options(args)
    began = time.perf_counter()
    with _progress_to_stdout():
        stats = convert_events(args.events, args.output, options, force=args.force,
                               progress=not args.quiet)
    _summary(dict(stats, _out=args.output), "retailrocket", began)
    return 0


def _presplit(args: argparse.Namespace) -> int:
    from recbole_srgnn.data.presplit import import_presplit

    began = time.perf_counter()
    with _progress_to_stdout():
        stats = import_presplit(args.source, args.output, valid_fraction=args.valid_fraction,
                                max_prefix_length=args.max_prefix_length, force=args.force,
                                progress=not args.quiet)
    _summary(dict(stats, _out=args.output), "presplit", began)
    return 0


def _synthetic(args: argparse.Namespace) -> int:
    from recbole_srgnn.data.synthetic import write_events_csv

    kwargs: dict[str, Any] = {"seed": args.seed}
    if args.events is not None:
        if args.events < 1:
            raise InputError("--events must be at least 1")
        kwargs["n_events"] = args.events
    check_output_file(args.output, "--output")
    began = time.perf_counter()
    path = write_events_csv(args.output, **kwargs)
    print(f"synthetic: wrote {path} in {time.perf_counter() - began:.1f} s")
    return 0


@cli_errors
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        raise InputError("choose a subcommand: retailrocket, presplit or synthetic")
    handler = {"retailrocket": _retailrocket, "presplit": _presplit, "synthetic": _synthetic}
    try:
        return handler[args.command](args)
    except OSError as exc:
        # Unwritable output folders, full disks: still one line, exit 2.
        raise InputError(f"{exc.strerror or exc}: {exc.filename or ''}".strip(": ")) from None
