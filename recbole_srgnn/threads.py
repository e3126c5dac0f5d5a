"""How many torch CPU threads a training process uses: the ``threads`` setting.

torch starts one intra-op thread per core. On a small machine that is shared (two cores, and a
second job running), those threads fight the other job for the same cores, while one thread
leaves an idle machine half used (``benchmarks/results/contention.md`` measures both). No fixed
number is right for both cases, so the default, ``auto``, looks before training starts: it
samples how busy the cores are (``psutil``, over ``SAMPLE_SECONDS``) and takes the cores the other
processes leave free, at least one. A whole number fixes the count (results are then bit for bit
the same from run to run; with ``auto`` the count can differ between runs and floating-point
sums may differ in their last bits).
"""

from __future__ import annotations

import os
from typing import Any

import psutil
import torch

from recbole_srgnn.errors import InputError

AUTO = "auto"
SAMPLE_SECONDS = 0.3


def free_cores(sample_seconds: float = SAMPLE_SECONDS) -> int:
    """Cores that other processes leave idle right now (at least 1), over ``sample_seconds``."""
    cores = os.cpu_count() or 1
    busy = psutil.cpu_percent(interval=sample_seconds) / 100.0 * cores
    return max(1, min(cores, round(cores - busy)))


def resolve_threads(threads: Any) -> int | None:
    """The thread count for a ``threads`` setting: None (torch's default), ``auto`` or N >= 1."""
    if threads is None:
        return None
    if isinstance(threads, str) and threads.strip().lower() == AUTO:
        return free_cores()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(f"threads must be 'auto', a whole number >= 1 or ~ (torch's default), "
                         f"got {threads!r}")
    return threads


def apply_threads(threads: Any) -> int:
    """Set torch's intra-op threads for ``threads`` (see :func:`resolve_threads`); returns the
    count in effect."""
    count = resolve_threads(threads)
    if count is not None:
        torch.set_num_threads(count)
    return torch.get_num_threads()
