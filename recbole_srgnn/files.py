"""Small file helpers: atomic multi-file writes and content checksums."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Iterator, Sequence


def temporary_name(path: str | os.PathLike) -> Path:
    """A hidden sibling of ``path`` that a reader never mistakes for the finished file."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_outputs(paths: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """Yield temporary paths for ``paths``; rename them all into place only if the block succeeds.

    The files are renamed in the order given, so put the one that marks completion (e.g. a
    stats or manifest file) last. On any exception every temporary file is removed and no final
    path is touched.
    """
    finals = [Path(p) for p in paths]
    temps = [temporary_name(p) for p in finals]
    for final in finals:
        final.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield temps
    except BaseException:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
    for tmp, final in zip(temps, finals):
        os.replace(tmp, final)


def sha256_of(path: str | os.PathLike, chunk_size: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()
