"""What every run sets in its process before RecBole builds data and model: torch threads,
seeds, RecBole's logger, denormal flushing on CPU, the GPU peak-memory counter; and a warning
when autograd anomaly detection is on (it makes training much slower)."""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Iterator

import torch
from recbole.config import Config
from recbole.utils import init_logger, init_seed

from recbole_srgnn.threads import apply_threads

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_logging(quiet: bool) -> Iterator[None]:
    """Hide RecBole's pandas/torch FutureWarnings; with ``quiet`` also its INFO logging."""
    root = logging.getLogger()
    previous = root.level
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole(\.|$)")
        if quiet:
            root.setLevel(logging.WARNING)
        try:
            yield
        finally:
            root.setLevel(previous)


def start(config: Config, quiet: bool) -> None:
    """Set up this process for one run of ``config`` (``quiet``: no RecBole log files/output)."""
    threads = apply_threads(config["threads"])
    init_seed(config["seed"], config["reproducibility"])
    if not quiet:
        init_logger(config)
    logger.info(f"torch CPU threads: {threads} (threads: {config['threads']})")
    device = torch.device(config["device"])
    if config["flush_denormal"] and device.type == "cpu":
        torch.set_flush_denormal(True)  # docs/design.md §4: softmax over a big catalogue makes denormals
    if torch.is_anomaly_enabled():
        logger.warning("torch autograd anomaly detection is on (torch.autograd.set_detect_anomaly): "
                       "training is much slower")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # peak_gpu_mb per run, not per process
