"""User-facing errors, the command-line wrapper that turns them into one clean line, and the
helpers that keep untrusted content in a message short and printable."""

from __future__ import annotations

import argparse
import functools
import signal
import sys
from typing import Callable


class InputError(Exception):
    """A problem with what the user gave us (a path, a file's content, an option).

    Command lines print its message as one line on stderr and exit with code 2, without a
    traceback. Library callers can catch it like any exception.
    """


def printable(text: str) -> str:
    """``text`` with every non-printable character (control characters, escape sequences)
    written as its backslash escape, so that a message never drives the terminal."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


def excerpt(value: str | bytes, limit: int = 40) -> str:
    """A short, quoted, escaped excerpt of untrusted content for a one-line message.

    At most ``limit`` characters of ``value`` (or bytes, shown with Python's escapes),
    non-printable ones escaped, and ``...`` after the quote when it was cut (an ESC
    character shows as the four characters ``\\x1b``).
    """
    if isinstance(value, bytes):  # Python's bytes escapes: ASCII only, never cut inside one
        return f"'{repr(value[:limit])[2:-1]}'" + ("..." if len(value) > limit else "")
    text = str(value)
    shown = printable(text[:limit]).replace("'", "\\'")
    return f"'{shown}'" + ("..." if len(text) > limit else "")


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse for the project's commands, with one spelling convention and one-line errors.

    * Usage errors raise :class:`InputError` (printed by ``cli_errors`` as one line, exit 2)
      instead of printing the usage block and exiting.
    * Flags are spelled with underscores, like RecBole's config keys (``--data_path``,
      ``--session_gap``, ``--dry_run``); the hyphenated spelling of a flag this parser declares
      (``--data-path``, ``--dry-run``) is accepted too, as are the names in ``flag_aliases``
      (e.g. ``{"--out": "--output"}``). Neither shows in ``--help``. Arguments the parser does
      not declare (RecBole options passed on) are left exactly as given.
    """

    def __init__(self, *args, flag_aliases: dict[str, str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.flag_aliases = dict(flag_aliases or {})

    def error(self, message: str):
        raise InputError(f"{self.prog}: {message}")

    def _spelled(self, argv: list[str]) -> list[str]:
        declared = set(self._option_string_actions)
        out = []
        for arg in argv:
            if arg == "--":
                out.extend(argv[len(out):])
                break
            if arg.startswith("--"):
                name, sep, value = arg.partition("=")
                name = self.flag_aliases.get(name, name)
                underscored = "--" + name[2:].replace("-", "_")
                if name not in declared and underscored in declared:
                    name = underscored
                arg = name + sep + value
            out.append(arg)
        return out

    def parse_known_args(self, args=None, namespace=None):
        argv = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(self._spelled(argv), namespace)


def cli_errors(main: Callable[..., int | None]) -> Callable[..., int]:
    """Decorate a command-line ``main``: ``InputError`` -> one line + exit code 2, Ctrl-C -> 130."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            rc = main(*args, **kwargs)
        except InputError as exc:
            message = printable(" ".join(str(exc).split()))
            print(f"error: {message}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        return 0 if rc is None else int(rc)

    return wrapper


def sigterm_as_interrupt() -> None:
    """Make SIGTERM (``kill PID``) end the program like Ctrl-C, so its cleanup code runs."""

    def _raise(signum, frame):  # noqa: ARG001 - the signal module's handler signature
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise)
