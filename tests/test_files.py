"""File helpers: claims on work in progress (several processes sharing one results folder),
temporary files left by killed writers, output-path checks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recbole_srgnn.errors import InputError
from recbole_srgnn.files import (atomic_outputs, check_output_file, claim_holder, claimed,
                                 host_tag, live_claim, lock_path, temporary_name)

pytestmark = pytest.mark.skipif(os.name != "posix", reason="claims need flock (POSIX)")


def test_a_claim_is_exclusive_and_released_at_the_end(tmp_path):
    work = tmp_path / "partial" / "run-seed1.pth"
    with claimed(work) as first:
        assert first is True
        assert claim_holder(work) == f"{socket.gethostname()} {os.getpid()}"
        with claimed(work) as second:  # claims do not nest, even in one process
            assert second is False
        with claimed(tmp_path / "partial" / "run-seed2.pth") as other:
            assert other is True  # other work is free
    assert not lock_path(work).exists() and claim_holder(work) == ""
    with claimed(work) as again:
        assert again is True


def test_a_claim_of_another_process_holds_until_that_process_dies(tmp_path):
    work = tmp_path / "run"
    code = ("import sys, time\nfrom recbole_srgnn.files import claimed\n"
            "with claimed(sys.argv[1]) as mine:\n    print(mine, flush=True)\n    time.sleep(120)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(work)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "True"
        with claimed(work) as mine:
            assert mine is False
        assert claim_holder(work).endswith(f" {child.pid}")
        assert live_claim(work) == claim_holder(work)  # a live process on this host
        child.send_signal(signal.SIGKILL)  # killed, it cleans nothing up: the claim still ends
        child.wait(timeout=30)
        assert lock_path(work).exists()  # its file is left, but not its lock
        assert live_claim(work) == ""  # ... and the process it names is gone
        with claimed(work) as mine:
            assert mine is True
    finally:
        child.kill()
        child.stdout.close()


def test_live_claim_reads_without_taking_the_lock(tmp_path):
    work = tmp_path / "run"
    assert live_claim(work) == ""  # no lock file at all
    with claimed(work):
        assert live_claim(work) == f"{socket.gethostname()} {os.getpid()}"
    lock_path(work).write_text("elsewhere.example 12345\n")  # another host: cannot be checked
    assert live_claim(work) == "elsewhere.example 12345"
    with claimed(work) as mine:
        assert mine is True  # the check took no lock


# ------------------------------------------------------------- temporary files and output paths

def dead_pid() -> int:
    """The id of a process that has ended (a child started and reaped here)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=60)
    return child.pid


def test_temporary_names_say_host_and_process(tmp_path):
    tmp = temporary_name(tmp_path / "run.json")
    assert tmp.parent == tmp_path and tmp.name.startswith(".run.json.tmp-")
    assert tmp.name.endswith(f"-{os.getpid()}") and host_tag() in tmp.name


def test_stale_temporaries_of_ended_processes_go_live_ones_stay(tmp_path):
    gone, host = dead_pid(), host_tag()
    dead = tmp_path / f".a.inter.tmp-{host}-{gone}"
    live = tmp_path / f".b.inter.tmp-{host}-{os.getpid()}"
    elsewhere = tmp_path / f".c.inter.tmp-elsewhere.example-{gone}"  # another host: unknowable
    old_legacy = tmp_path / f".d.inter.tmp-{gone}"  # an older version's name, untouched for hours
    new_legacy = tmp_path / f".e.inter.tmp-{gone}"  # ... and one written just now
    plain = tmp_path / "f.tmp-1"  # not hidden: not ours
    for path in (dead, live, elsewhere, old_legacy, new_legacy, plain):
        path.write_bytes(b"x" * 100)
    hours_ago = time.time() - 3 * 3600
    os.utime(old_legacy, (hours_ago, hours_ago))
    with atomic_outputs([tmp_path / "g.json"]) as (tmp,):
        tmp.write_text("{}")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([live.name, elsewhere.name, new_legacy.name, plain.name, "g.json"])


def test_a_writer_killed_mid_write_is_cleaned_up_by_the_next_run(tmp_path):
    """SIGKILL leaves a hidden temporary file; the next conversion into that folder removes it,
    while the temporary file of a writer still running there is kept."""
    out = tmp_path / "tiny"
    code = ("import sys, time\nfrom recbole_srgnn.files import atomic_outputs\n"
            "with atomic_outputs([sys.argv[1]]) as (tmp,):\n"
            "    tmp.write_bytes(b'x' * 1_000_000)\n    print(tmp, flush=True)\n    time.sleep(120)\n")

    def writer(name: str) -> tuple[subprocess.Popen, Path]:
        child = subprocess.Popen([sys.executable, "-c", code, str(out / name)],
                                 stdout=subprocess.PIPE, text=True)
        return child, Path(child.stdout.readline().strip())

    killed, killed_tmp = writer("tiny.train.inter")
    running, running_tmp = writer("tiny.test.inter")
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        assert killed_tmp.is_file() and running_tmp.is_file()
        events = tmp_path / "events.csv"
        lines = ["timestamp,visitorid,event,itemid,transactionid"]
        for day in range(30):
            for k, item in enumerate((11, 12, 13, 11)):
                lines.append(f"{1_440_000_000_000 + day * 86_400_000 + k * 60_000},{day},view,{item},")
        events.write_text("\n".join(lines) + "\n")
        from recbole_srgnn.data import cli

        assert cli.main(["retailrocket", "--events", str(events), "--out", str(out), "--quiet"]) == 0
        assert not killed_tmp.exists()
        assert running_tmp.is_file()  # a live process's work in progress is not touched
    finally:
        for child in (killed, running):
            child.kill()
            child.wait(timeout=30)
            child.stdout.close()


def test_a_failed_rename_leaves_no_temporary_file(tmp_path):
    folder = tmp_path / "resume.pth"
    folder.mkdir()  # e.g. --resume_file pointing at a folder
    with pytest.raises(OSError):
        with atomic_outputs([folder]) as (tmp,):
            tmp.write_bytes(b"state")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resume.pth"]
    assert list(folder.iterdir()) == []


def one_line_error(path, name="--result_file", **kwargs) -> str:
    with pytest.raises(InputError) as info:
        check_output_file(path, name, **kwargs)
    message = str(info.value)
    assert "\n" not in message and name in message and len(message) < 300
    return message


def test_check_output_file_accepts_writable_files(tmp_path):
    assert check_output_file(tmp_path / "r.json", "--result_file") == tmp_path / "r.json"
    (tmp_path / "old.json").write_text("{}")  # an existing file is replaced
    assert check_output_file(tmp_path / "old.json", "--result_file") == tmp_path / "old.json"
    # missing folders are created when writing ...
    assert check_output_file(tmp_path / "a" / "b" / "r.json", "--resume_file").name == "r.json"
    # ... unless the caller wants them to exist
    assert "does not exist" in one_line_error(tmp_path / "a" / "r.json", create_parents=False)
    assert list(tmp_path.iterdir()) == [tmp_path / "old.json"]  # the check writes nothing


def test_check_output_file_refuses_folders_and_paths_under_files(tmp_path):
    assert "is a folder" in one_line_error(tmp_path, "--resume_file")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "is not a folder" in one_line_error(blocker / "sub" / "r.json")
    assert "empty" in one_line_error("")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_check_output_file_refuses_unwritable_folders(tmp_path):
    assert "not writable" in one_line_error("/proc/self/r.json")  # not writable, even for root
    if os.geteuid() != 0:  # root writes into any folder
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        try:
            assert "not writable" in one_line_error(locked / "r.json")
        finally:
            locked.chmod(0o700)
