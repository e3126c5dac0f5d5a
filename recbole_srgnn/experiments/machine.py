"""What a measurement ran on: CPU, cores, memory, OS and Python, for reports and results JSON.

One description of the machine for the comparison and fusion reports and the speed and
conversion benchmarks, so that they name the same things the same way.
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path


def _first_field(path: str, prefix: str) -> str | None:
    """The text after ``:`` of the first line of ``path`` that starts with ``prefix``."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    return None


def machine() -> dict:
    """cpu, cores, cores_available (this process's affinity), memory_gib, os, platform, python."""
    memory = _first_field("/proc/meminfo", "MemTotal")
    memory_gib = None
    with contextlib.suppress(ValueError, IndexError, AttributeError):
        memory_gib = round(int(memory.split()[0]) / 1024**2, 1)
    available = None
    with contextlib.suppress(AttributeError, OSError):
        available = len(os.sched_getaffinity(0))
    return {"cpu": _first_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
            "cores": os.cpu_count(), "cores_available": available, "memory_gib": memory_gib,
            "os": f"{platform.system()} {platform.release()}", "platform": platform.platform(),
            "python": platform.python_version()}
