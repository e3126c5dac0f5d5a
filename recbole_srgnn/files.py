"""Small file helpers: atomic multi-file writes, claims on work in progress, content checksums."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from pathlib import Path
from typing import Iterator, Sequence

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; claims always succeed (run one process)
    fcntl = None


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


def lock_path(work: str | os.PathLike) -> Path:
    """The lock file that marks ``work`` (a file or folder in progress) as claimed."""
    work = Path(work)
    return work.with_name(f"{work.name}.lock")


@contextlib.contextmanager
def claimed(work: str | os.PathLike) -> Iterator[bool]:
    """Claim ``work`` for this process while the block runs; yields False if another holds it.

    Several processes may run the same resumable command on one results folder (one per core or
    per machine on a shared disk): each one claims a run before starting it and skips the runs
    another live process holds. The claim is an exclusive ``flock`` on ``<work>.lock``, which
    the operating system drops when its process ends, however it ends, so a killed run never
    leaves a stale claim. The file holds the owner's host and process id, for people. Claims do
    not nest: a second claim of the same work in the same process also yields False.
    """
    lock = lock_path(work)
    while True:
        lock.parent.mkdir(parents=True, exist_ok=True)
        try:
            handle = open(lock, "a+", encoding="utf-8")
        except FileNotFoundError:  # another process removed the (empty) folder just now
            continue
        if fcntl is None:
            break
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            yield False
            return
        try:  # the holder before us may have deleted the file as we opened it: lock the new one
            if os.stat(lock).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{socket.gethostname()} {os.getpid()}\n")
        handle.flush()
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()  # while still locked, so no one else holds this file
        handle.close()


def claim_holder(work: str | os.PathLike) -> str:
    """Who holds the claim on ``work`` ("host pid"), as its lock file says; "" if unknown."""
    try:
        return lock_path(work).read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def live_claim(work: str | os.PathLike) -> str:
    """The holder ("host pid") of a claim on ``work`` that looks alive, without touching the lock.

    A read-only check for status displays (taking the lock, even for an instant, could make a
    runner starting just then skip the work): the lock file names a process on this host that
    still exists, or a process on another host (which cannot be checked from here). "" if there
    is no lock file or it names a process here that has ended (killed without cleaning up).
    """
    holder = claim_holder(work)
    host, _, pid = holder.partition(" ")
    if not holder or host != socket.gethostname():
        return holder
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return ""
    except PermissionError:  # exists, owned by someone else
        pass
    return holder


def held_elsewhere(what: str, work: str | os.PathLike) -> str:
    """The line saying that ``what`` was skipped because another process holds ``work``."""
    holder = claim_holder(work)
    return f"{what}: another process runs it" + (f" ({holder})" if holder else "") + "; skipped here"


def sha256_of(path: str | os.PathLike, chunk_size: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()
