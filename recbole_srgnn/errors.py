"""User-facing errors and the command-line wrapper that turns them into one clean line."""

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


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors raise :class:`InputError` (printed by ``cli_errors`` as one
    line, exit 2) instead of printing the usage block and exiting."""

    def error(self, message: str):
        raise InputError(f"{self.prog}: {message}")


def cli_errors(main: Callable[..., int | None]) -> Callable[..., int]:
    """Decorate a command-line ``main``: ``InputError`` -> one line + exit code 2, Ctrl-C -> 130."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            rc = main(*args, **kwargs)
        except InputError as exc:
            message = " ".join(str(exc).split())
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
