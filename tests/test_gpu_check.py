"""benchmarks/gpu_check.sh on this machine: its syntax, the refusal without a CUDA device (one
line, exit status 2, nothing written), and, with a stand-in Python that reports a CUDA card and
a budget too small to start any step, a complete results folder put in place in one rename."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def _run(out: Path, python: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHON": python, "PYTHONPATH": str(REPO),
                   "RECBOLE_SRGNN_SHARED_DATA": str(out.parent / "no-shared-data"), **env}
    return subprocess.run(["bash", str(SCRIPT), str(out)], env=environment, capture_output=True,
                          text=True, timeout=300)


def test_script_parses():
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_without_cuda_it_refuses_and_writes_nothing(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    out = tmp_path / "results" / "gpu-check"
    proc = _run(out, sys.executable)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no CUDA device present"), proc.stderr
    assert not (tmp_path / "results").exists()  # not even the parent folder


def test_a_run_puts_a_complete_folder_in_place(tmp_path):
    fake = tmp_path / "python"  # reports a CUDA card to the script's device check only
    fake.write_text('#!/usr/bin/env bash\n'
                    'if [[ "${1:-}" == "-c" && "${2:-}" == *torch.cuda.device_count* ]]; then\n'
                    '    echo "Stand-in CUDA card"; exit 0\n'
                    f'fi\nexec {sys.executable} "$@"\n')
    fake.chmod(0o755)
    out = tmp_path / "results" / "gpu-check"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("from an earlier run")
    proc = _run(out, str(fake), GPU_CHECK_SECONDS="20")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # no step could start
    summary = json.loads((out / "summary.json").read_text())
    assert summary["card"] == "Stand-in CUDA card" and summary["failed"] is True
    steps = {s["step"]: s for s in summary["steps"]}
    assert list(steps) == ["gpu-tests", "speed", "cotrec"]
    assert steps["gpu-tests"]["status"] == "FAIL" and "not started" in steps["gpu-tests"]["detail"]
    assert steps["cotrec"]["status"] == "SKIP" and "RECBOLE_SRGNN_SHARED_DATA" in \
        steps["cotrec"]["detail"]
    env = (out / "env.txt").read_text()
    assert "card (torch): Stand-in CUDA card" in env and "torch: " in env
    assert "| speed | FAIL |" in (out / "summary.md").read_text()
    assert not (out / "stale.txt").exists()  # the previous folder was replaced as a whole
    assert sorted(p.name for p in out.parent.iterdir()) == ["gpu-check"]  # no temp folders left
