"""Small file helpers: atomic multi-file writes, output-path checks, claims on work in progress,
content checksums.

Every output is written under a temporary name and renamed into place. The temporary name is
hidden and says who writes it: ``.<name>.tmp-<host>-<pid>``. A writer that is killed (SIGKILL,
power loss) leaves its temporary file behind; the next write into the same folder removes the
temporary files of processes on this host that have ended (:func:`remove_stale_temporaries`),
and keeps those of live processes and of other hosts (a shared disk: they cannot be checked
from here).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import time
from pathlib import Path
from typing import Iterator, Sequence

from recbole_srgnn.errors import InputError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; claims always succeed (run one process)
    fcntl = None

# .<final name>.tmp-<host>-<pid>; the host part is absent in names written before it existed.
_TEMPORARY = re.compile(r"^\.(?P<final>.+)\.tmp-(?:(?P<host>.+)-)?(?P<pid>[0-9]+)$")
#: A temporary file without a host part (older versions) is removed only once its process has
#: ended and it has not changed for this long: it may come from another host on a shared disk.
LEGACY_TEMPORARY_AGE_S = 3600.0


def host_tag() -> str:
    """This host's name as it appears in temporary file names (safe characters, at most 64)."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:64] or "host"


def temporary_name(path: str | os.PathLike) -> Path:
    """A hidden sibling of ``path`` that a reader never mistakes for the finished file; it names
    this host and process so that a later run can tell whether its writer is still alive."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{host_tag()}-{os.getpid()}")


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (owned by anyone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _stale(entry: os.DirEntry, host: str, now: float) -> bool:
    match = _TEMPORARY.match(entry.name)
    if match is None or not entry.is_file(follow_symlinks=False):
        return False
    if process_alive(int(match["pid"])):
        return False
    if match["host"] is None:  # an older version's name: no host to compare
        try:
            return now - entry.stat(follow_symlinks=False).st_mtime > LEGACY_TEMPORARY_AGE_S
        except OSError:
            return False
    return match["host"] == host


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files in ``folder`` whose writer, a process on this host, has ended.

    Temporary files of live processes and of other hosts are kept (as are those without a host
    part that changed within ``LEGACY_TEMPORARY_AGE_S``). Returns the removed paths; a missing
    or unreadable folder removes nothing.
    """
    host, now, removed = host_tag(), time.time(), []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if _stale(entry, host, now):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _discard(paths: Sequence[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_outputs(paths: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """Yield temporary paths for ``paths``; rename them all into place only if the block succeeds.

    The files are renamed in the order given, so put the one that marks completion (e.g. a
    stats or manifest file) last. On any exception, in the block or in a rename (e.g. a final
    path that is a folder), every temporary file not yet renamed is removed. Before the block,
    the stale temporary files of ended processes are removed from each target folder.
    """
    finals = [Path(p) for p in paths]
    temps = [temporary_name(p) for p in finals]
    for folder in dict.fromkeys(final.parent for final in finals):
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(folder)
    try:
        yield temps
    except BaseException:
        _discard(temps)
        raise
    try:
        for tmp, final in zip(temps, finals):
            os.replace(tmp, final)
    except BaseException:
        _discard(temps)
        raise


def check_output_file(path: str | os.PathLike, option_name: str, *,
                      create_parents: bool = True) -> Path:
    """``path`` as a Path if a file can be written there, else InputError (one line).

    For options naming an output file (``--result_file``, ``--resume_file``, a converter's output),
    checked before any work so that a bad path fails at once, not after training: refused are a
    path that is a folder or another non-regular file, a path under an existing file, and a
    folder that is not writable. Missing parent folders are fine when they can be created
    (``atomic_outputs`` creates them), unless ``create_parents`` is False.
    """
    text = os.fspath(path)
    if not str(text).strip():
        raise InputError(f"{option_name} is empty; give a file path")
    path = Path(text).expanduser()
    if path.is_dir():
        raise InputError(f"{option_name} {path} is a folder; give a file path inside it")
    if path.exists() and not path.is_file():
        raise InputError(f"{option_name} {path} exists and is not a regular file")
    parent = path.parent
    nearest = parent
    while not nearest.exists() and nearest != nearest.parent:
        if nearest.is_symlink():  # a dangling link in the way
            break
        nearest = nearest.parent
    if not nearest.is_dir():
        raise InputError(f"{option_name} {path}: {nearest} is not a folder")
    if nearest != parent and not create_parents:
        raise InputError(f"{option_name} {path}: folder {parent} does not exist")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise InputError(f"{option_name} {path}: folder {nearest} is not writable")
    return path


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
