"""File helpers: claims on work in progress (several processes sharing one results folder)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from recbole_srgnn.files import claim_holder, claimed, live_claim, lock_path

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
