"""Multi-GPU training with RecBole's DDP (NCCL): one process per GPU, each running ``run`` with
its rank; rank 0 writes the results and hands them back."""

from __future__ import annotations

import os
from typing import Mapping

import torch

from recbole_srgnn.errors import InputError
from recbole_srgnn.training import runs
from recbole_srgnn.training.datasets import ready_settings


def distributed_config_dict(
    config_dict: Mapping | None, rank: int, *, nproc: int, world_size: int, ip: str,
    port: str | int, group_offset: int,
) -> dict:
    """The config keys RecBole's Config reads to join a process group (``local_rank`` last)."""
    out = dict(config_dict or {})
    out.update({"world_size": int(world_size), "ip": str(ip), "port": str(port),
                "nproc": int(nproc), "offset": int(group_offset), "local_rank": int(rank)})
    return out


def _distributed_worker(rank: int, model, dataset, config_files, config_dict, options, queue):
    kwargs = dict(options)
    dist = kwargs.pop("dist")
    results = runs.run(model, dataset, config_files,
                       distributed_config_dict(config_dict, rank, **dist), **kwargs)
    if rank == 0 and queue is not None:
        queue.put(results)


def run_distributed(
    model: str,
    dataset: str,
    config_files: list[str] | None = None,
    config_dict: dict | None = None,
    *,
    nproc: int = 1,
    world_size: int = -1,
    ip: str = "localhost",
    port: str | int = "5678",
    group_offset: int = 0,
    result_file: str | os.PathLike | None = None,
    saved: bool = True,
    show_progress: bool = True,
    quiet: bool = False,
) -> dict | None:
    """``run`` over ``nproc`` local GPU processes (RecBole's NCCL DDP); rank 0's results."""
    if nproc < 1:
        raise InputError(f"--nproc must be >= 1, got {nproc}")
    world_size = nproc if world_size == -1 else world_size
    if world_size < nproc:
        raise InputError(f"--world_size={world_size} is smaller than --nproc={nproc}")
    if not torch.cuda.is_available():
        raise InputError("distributed training (--nproc/--world_size) needs CUDA GPUs: "
                         "RecBole's DDP uses NCCL")
    # The dataset step runs here once: it checks the names and builds a registered dataset
    # before the workers start, so they never race to build it.
    _, _, settings = ready_settings(model, dataset, config_files, config_dict)
    gpu_id = settings.get("gpu_id", "0")
    gpu_id = ",".join(map(str, gpu_id)) if isinstance(gpu_id, (list, tuple)) else str(gpu_id)
    gpu_ids = [g for g in gpu_id.split(",") if g.strip()]
    if len(gpu_ids) < nproc:
        raise InputError(f"--nproc={nproc} needs gpu_id to list {nproc} GPUs "
                         f"(e.g. --gpu_id='{','.join(map(str, range(nproc)))}')")
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    options = {"result_file": result_file, "saved": saved, "show_progress": show_progress,
               "quiet": quiet,
               "dist": {"nproc": nproc, "world_size": world_size, "ip": ip, "port": port,
                        "group_offset": group_offset}}
    mp.spawn(_distributed_worker,
             args=(model, dataset, config_files, config_dict, options, queue),
             nprocs=nproc, join=True)
    return None if queue.empty() else queue.get()
