"""The results of a run or a checkpoint evaluation: their fields, the JSON writer, the default
file name and the printed table.

A training run's JSON (:func:`run_results`) holds ``model``, ``dataset``, ``best_valid_score``,
``best_valid_result`` and ``test_result`` (metric -> value, e.g. ``mrr@10``), ``valid_metric``,
``valid_curve`` (one entry per epoch: loss, learning rate, seconds, validation metrics),
``best_epoch`` (from 0), ``epochs_trained``, ``seconds_per_epoch``, ``seconds_total``,
``training_parts`` (> 1: resumed), ``model_build_s`` (seconds to construct the model from the
training split: a kNN model's index, the sequence rules' table, a network's initialisation) and
``test_eval_s`` (seconds to load the best weights and score the test split; null without a test),
``peak_rss_mb`` (and ``peak_gpu_mb`` on CUDA), ``checkpoint``,
``device``, ``torch_threads``, the split sizes, the full ``config`` and the library ``versions``;
an evaluation's (:func:`evaluation_results`) the checkpoint's epoch and score instead of the
training record. Infinite and NaN values are written as null.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

import recbole_srgnn
from recbole_srgnn.json_safe import finite_or_none
from recbole_srgnn.files import atomic_outputs
from recbole_srgnn.trainer import SessionTrainer
from recbole_srgnn.training_state import plain_config


def _version(distribution: str, module: str) -> str | None:
    loaded = sys.modules.get(module)
    if loaded is not None and getattr(loaded, "__version__", None):
        return str(loaded.__version__)
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    """Versions of Python and the libraries a result depends on."""
    return {
        "python": platform.python_version(),
        "torch": _version("torch", "torch"),
        "recbole": _version("recbole", "recbole"),
        "torch_geometric": _version("torch_geometric", "torch_geometric"),
        "numpy": _version("numpy", "numpy"),
        "pandas": _version("pandas", "pandas"),
        "recbole_srgnn": recbole_srgnn.__version__,
    }


def peak_memory(device) -> dict:
    """Peak RSS of this process so far (MiB) and, on CUDA, the run's peak allocated GPU memory."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mb = rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024
    out = {"peak_rss_mb": round(rss_mb, 1)}
    device = torch.device(device)
    if device.type == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def max_memory(memory: dict, other: Mapping) -> dict:
    """Per key the larger peak of ``memory`` and ``other`` (another part of the same run)."""
    merged = dict(memory)
    for key, value in other.items():
        merged[key] = max(merged.get(key, 0.0), float(value))
    return merged


def _metrics(result: Mapping | None) -> dict | None:
    if result is None:
        return None
    return {str(key): float(value) for key, value in result.items()}


def _data_summary(splits: Sequence[Any]) -> dict:
    dataset, train_data, valid_data, test_data = splits
    return {
        "num_items": int(dataset.item_num) - 1,  # RecBole's item_num counts the padding id 0
        "train_cases": int(train_data._dataset.inter_num),
        "valid_cases": int(valid_data._dataset.inter_num) if valid_data is not None else 0,
        "test_cases": int(test_data._dataset.inter_num) if test_data is not None else 0,
    }


def run_results(
    *, name: str, dataset: str, config, trainer: SessionTrainer, best_valid_score: float,
    best_valid_result: Mapping | None, test_result: Mapping | None, seconds_total: float,
    parts: int, memory: Mapping, splits: Sequence[Any], model_build_s: float,
    test_eval_s: float | None,
) -> dict:
    """The results of a training run (``splits``: dataset, train, valid and test data;
    ``model_build_s`` and ``test_eval_s``: seconds, measured by the caller)."""
    return finite_or_none({
        "model": name,
        "dataset": dataset,
        "best_valid_score": float(best_valid_score),
        "best_valid_result": _metrics(best_valid_result),
        "test_result": _metrics(test_result),
        "valid_metric": str(config["valid_metric"]).lower(),
        "valid_curve": trainer.valid_curve,
        "best_epoch": trainer.best_epoch,
        "epochs_trained": len(trainer.valid_curve),
        "seconds_per_epoch": trainer.seconds_per_epoch,
        "seconds_total": seconds_total,
        "training_parts": int(parts),  # > 1: resumed after interruptions
        "model_build_s": float(model_build_s),
        "test_eval_s": None if test_eval_s is None else float(test_eval_s),
        **memory,
        "checkpoint": (
            str(Path(trainer.saved_model_file).resolve()) if trainer.checkpoint_written else None
        ),
        "device": str(config["device"]),
        "torch_threads": torch.get_num_threads(),
        **_data_summary(splits),
        "config": plain_config(config),
        "versions": versions(),
    })


def evaluation_results(
    *, name: str, dataset: str, config, checkpoint: str | os.PathLike, state: Mapping,
    test_result: Mapping | None, seconds: float, splits: Sequence[Any],
) -> dict:
    """The results of evaluating a saved model (``state``: the checkpoint's contents)."""
    return finite_or_none({
        "model": name,
        "dataset": dataset,
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_epoch": state.get("epoch"),
        "best_valid_score": state.get("best_valid_score"),
        "test_result": _metrics(test_result),
        "eval_seconds": seconds,
        **peak_memory(config["device"]),
        "device": str(config["device"]),
        **_data_summary(splits),
        "config": plain_config(config),
        "versions": versions(),
    })


def default_result_path(config, name: str, dataset: str, tag: str = "") -> Path:
    """``<checkpoint_dir>/<name>-<dataset><tag>-<time>.json``, numbered so as never to overwrite."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(config["checkpoint_dir"] or "saved") / f"{name}-{dataset}{tag}-{stamp}"
    path, n = base.with_name(f"{base.name}.json"), 1  # not with_suffix: names may hold dots
    while path.exists():
        path, n = base.with_name(f"{base.name}-{n}.json"), n + 1
    return path


def write_results(results: dict, path: str | os.PathLike) -> Path:
    """Write the results JSON atomically (inf/nan become null)."""
    path = Path(path)
    text = json.dumps(finite_or_none(results), indent=2, allow_nan=False) + "\n"
    with atomic_outputs([path]) as (tmp,):
        tmp.write_text(text, encoding="utf-8")
    return path


_DISPLAY = {"hit": "Hit", "mrr": "MRR", "ndcg": "NDCG", "recall": "Recall",
            "precision": "Precision", "map": "MAP"}


def _metric_order(key: str, families: list[str]) -> tuple:
    family, _, k = key.partition("@")
    rank = families.index(family) if family in families else len(families)
    return (rank, family, int(k) if k.isdigit() else 0)


def results_table(valid: Mapping | None, test: Mapping | None, metrics: list[str] | None = None) -> str:
    """A compact table, one row per metric, valid and test columns; Hit@1 is labelled."""
    families = [m.lower() for m in (metrics or ["Hit", "MRR", "NDCG"])]
    keys = sorted(set(valid or {}) | set(test or {}), key=lambda k: _metric_order(k, families))

    def label(key: str) -> str:
        family, _, k = key.partition("@")
        text = f"{_DISPLAY.get(family, family)}@{k}" if k else _DISPLAY.get(family, family)
        return text + " (next-item accuracy)" if key == "hit@1" else text

    def cell(result, key):
        return f"{result[key]:.4f}" if result and key in result else "-"

    labels = [label(key) for key in keys]
    width = max([len("metric")] + [len(text) for text in labels])
    lines = [f"{'metric':<{width}}  {'valid':>8}  {'test':>8}", "-" * (width + 20)]
    for key, text in zip(keys, labels):
        lines.append(f"{text:<{width}}  {cell(valid, key):>8}  {cell(test, key):>8}")
    return "\n".join(lines)
