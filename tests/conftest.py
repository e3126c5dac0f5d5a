"""Shared fixtures: where the team's real data lives, and a scratch directory per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RECBOLE_SRGNN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real Retail Rocket files); skips with a reason where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set RECBOLE_SRGNN_SHARED_DATA)")
    return SHARED_DATA


# One torch/OpenMP thread per test process (and the subprocesses tests start): the models here
# are tiny, and two threads per process on a 2-core machine that runs anything else in parallel
# was measured to slow small batches down by an order of magnitude.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
import torch  # noqa: E402  (after the environment is set)

torch.set_num_threads(1)
