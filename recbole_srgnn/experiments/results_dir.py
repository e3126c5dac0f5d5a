"""Where a runner writes when no output folder is given: the checkout's ``benchmarks/results/``.

Results committed with the project live in ``benchmarks/results/<name>`` of a checkout (a folder
with ``benchmarks/configs/``). The checkout is found from the config file, else from the current
directory, never from where this package is installed: an installed package run in a checkout
writes into that checkout; elsewhere the runner asks for an output folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from recbole_srgnn.errors import InputError


def checkout_root(*starts: str | os.PathLike) -> Path | None:
    """The first folder, at or above one of ``starts`` (in order), that holds ``benchmarks/configs``."""
    for start in starts:
        start = Path(start).resolve()
        for folder in [start, *start.parents]:
            if (folder / "benchmarks" / "configs").is_dir():
                return folder
    return None


def config_checkout(config: str | os.PathLike) -> Path | None:
    """The checkout of the config file, else of the current directory (None outside both)."""
    return checkout_root(Path(config).resolve().parent, Path.cwd())


def default_out(name: str, config: str | os.PathLike, option: str) -> Path:
    """``<checkout>/benchmarks/results/<name>``; InputError naming ``option`` outside a checkout."""
    root = config_checkout(config)
    if root is None:
        raise InputError(f"{config} is not in a checkout of this project (no benchmarks/configs "
                         f"above it or the current directory): give {option} FOLDER for the results")
    return root / "benchmarks" / "results" / name


def shown_path(path: str | os.PathLike, root: Path | None) -> str:
    """``path`` relative to the checkout ``root`` when it is inside it, else absolute."""
    path = Path(path).resolve()
    if root is not None and path.is_relative_to(root):
        return str(path.relative_to(root))
    return str(path)
