"""The ``threads`` setting: a fixed count, torch's default, or ``auto`` (the cores left free)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from recbole_srgnn import threads
from recbole_srgnn.errors import InputError


def test_fixed_counts_and_torch_default():
    before = torch.get_num_threads()
    try:
        assert threads.resolve_threads(None) is None
        assert threads.resolve_threads(3) == 3
        assert threads.apply_threads(1) == 1 == torch.get_num_threads()
        assert threads.apply_threads(None) == 1  # None leaves the caller's setting alone
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "two", [1]])
def test_bad_values_are_refused(bad):
    with pytest.raises(InputError, match="threads must be"):
        threads.resolve_threads(bad)


@pytest.mark.parametrize("percent, cores, expected", [
    (0.0, 2, 2), (3.0, 2, 2), (50.0, 2, 1), (75.0, 4, 1), (40.0, 4, 2), (100.0, 2, 1),
])
def test_auto_takes_the_cores_other_processes_leave(monkeypatch, percent, cores, expected):
    monkeypatch.setattr(threads.psutil, "cpu_percent", lambda interval: percent)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: cores)
    assert threads.resolve_threads("auto") == expected
    assert threads.resolve_threads("AUTO") == expected


def test_auto_sees_real_busy_processes():
    cores = os.cpu_count() or 1
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        time.sleep(0.5)  # let them start spinning
        assert threads.free_cores(sample_seconds=0.5) == 1  # every core taken: one thread
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    assert 1 <= threads.free_cores() <= cores
