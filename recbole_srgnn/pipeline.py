"""The training / evaluation pipeline around stock RecBole: config layers, data, trainer, results.

Public API (used by ``run.py``, the Ray Tune module and the comparison runner)::

    resolve_model(name) -> type
    build_config(model, dataset, config_files=None, config_dict=None) -> recbole.config.Config
    run(model, dataset, config_files=None, config_dict=None, *, epoch_callback=None,
        result_file=None, saved=True, show_progress=True, quiet=False, resume_file=None) -> dict
    evaluate_checkpoint(checkpoint, config_dict=None, *, result_file=None) -> dict
    run_distributed(model, dataset, ..., nproc=..., world_size=..., ...) -> dict | None

Configuration layers, lowest priority first: ``recbole_srgnn/properties/overall.yaml`` <
``recbole_srgnn/properties/model/<Model>.yaml`` < ``recbole_srgnn/properties/dataset/<dataset>.yaml`` < ``config_files`` (in
order) < ``config_dict``. All of them sit above RecBole's own defaults. Keys merge at the top level
(a nested dict such as ``eval_args`` is replaced as a whole), as RecBole merges its inputs. String
values in ``config_dict`` are parsed once, like RecBole parses command-line values; ``sys.argv`` is
never read here (``run.py`` passes its ``--key=value`` options through ``config_dict``).
"""

from __future__ import annotations

import ast
import contextlib
import copy
import importlib.metadata
import json
import logging
import os
import platform
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from recbole.config import Config
from recbole.utils import get_model, init_logger, init_seed

import recbole_srgnn
from recbole_srgnn.errors import InputError
from recbole_srgnn.experiments.json_safe import finite_or_none
from recbole_srgnn.files import atomic_outputs
from recbole_srgnn.threads import apply_threads
from recbole_srgnn.prepared_data import load_dataset, prepare_data  # noqa: F401 (load_dataset: API)
from recbole_srgnn.yaml_files import parse_yaml
from recbole_srgnn.trainer import (
    SessionTrainer,
    load_checkpoint,
    plain,
    plain_config,
)

PROPERTIES_DIR = Path(__file__).resolve().parent / "properties"  # package data (setup.py)
BUILTIN_SRGNN = "RecBoleSRGNN"  # RecBole's own (dense, CPU-graph) SR-GNN: our speed baseline

logger = logging.getLogger(__name__)

# RecBole 1.2.1's recbole/model/sequential_recommender/sine.py calls
# torch.autograd.set_detect_anomaly(True) when it is imported, and importing any of RecBole's
# sequential models (GRU4Rec, NARM, its SRGNN, ... through get_model) imports it. From then on the
# whole process records a Python stack trace for every autograd operation: measured here, a
# GRU4Rec training batch ran 1.5x slower, and nothing is computed differently.
_SINE_MODULE = "recbole.model.sequential_recommender.sine"


def _import_recbole_models() -> None:
    """Import RecBole's model packages now and undo the anomaly switch that SINE's import flips.

    If SINE was imported before this module, the switch is assumed to be its doing and is turned
    off as well. To debug with anomaly detection, turn it on after importing this module: run()
    then warns that training is slower."""
    enabled, check_nan = torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled()
    if _SINE_MODULE in sys.modules:
        enabled = False
    import recbole.model.general_recommender  # noqa: F401
    import recbole.model.sequential_recommender  # noqa: F401

    torch.autograd.set_detect_anomaly(enabled, check_nan=check_nan)


_import_recbole_models()


# ---------------------------------------------------------------------------------------------
# Model names
# ---------------------------------------------------------------------------------------------
def _plugin_models() -> dict[str, type]:
    from recbole_srgnn.model import MODELS

    return dict(MODELS)


def _builtin_model_names() -> list[str]:
    """Class names of RecBole's sequential and general models (for messages and case matching)."""
    import recbole.model.general_recommender as general
    import recbole.model.sequential_recommender as sequential

    names = set()
    for module in (sequential, general):
        names.update(
            name for name, obj in vars(module).items()
            if isinstance(obj, type) and not name.startswith("_") and hasattr(obj, "type")
        )
    names.discard("SRGNN")  # reachable only as RecBoleSRGNN
    return sorted(names)


def _resolve(name: str) -> tuple[str, type]:
    """(canonical name, class): plugin models first, ``RecBoleSRGNN``, then RecBole built-ins."""
    if not isinstance(name, str) or not name.strip():
        raise InputError("model name is empty")
    name = name.strip()
    plugins = _plugin_models()
    if name in plugins:
        return name, plugins[name]
    if name == BUILTIN_SRGNN:
        return name, get_model("SRGNN")
    if name == "SRGNN":
        # RecBole would hand out its dense built-in under this name; ours must not fall back to it.
        raise InputError(
            "model SRGNN (the plugin model) is not available: recbole_srgnn.model.MODELS has no "
            f"'SRGNN'; RecBole's built-in SR-GNN is '{BUILTIN_SRGNN}'"
        )
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        with contextlib.suppress(Exception):
            return name, get_model(name)
    builtins = _builtin_model_names()
    by_lower: dict[str, str] = {}
    for choice in sorted(plugins) + [BUILTIN_SRGNN] + builtins:
        by_lower.setdefault(choice.lower(), choice)
    match = by_lower.get(name.lower())  # e.g. "gru4rec" -> "GRU4Rec"
    if match is not None:
        return _resolve(match)
    raise InputError(
        f"unknown model {name!r}; plugin models: {', '.join(sorted(plugins)) or 'none yet'}; "
        f"RecBole's built-in SR-GNN: {BUILTIN_SRGNN}; RecBole models: {', '.join(builtins)}"
    )


def resolve_model(name: str) -> type:
    """The model class for ``name``: plugin ``MODELS`` first, then RecBole's ``get_model``.

    ``RecBoleSRGNN`` is RecBole's built-in SRGNN class; ``SRGNN`` is only ever the plugin's.
    Names match case-insensitively when there is no exact match. Unknown -> InputError.
    """
    return _resolve(name)[1]


# ---------------------------------------------------------------------------------------------
# Configuration layers
# ---------------------------------------------------------------------------------------------
def load_yaml(path: str | os.PathLike) -> dict:
    """One config file as a dict; InputError if it is missing, unreadable or not a mapping."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read config file {path}: {exc}") from None
    data = parse_yaml(text, f"config file {path}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"config file {path} must hold a mapping of option names to values")
    return data


def parse_value(text: str) -> Any:
    """Parse one command-line value the way RecBole does: literals, then true/false, else text."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        lowered = text.strip().lower()
        if lowered == "true":
            return True
        if lowered == "false":
            return False
        return text
    if value is not None and not isinstance(value, (str, int, float, list, tuple, dict, bool)):
        return text
    return value


def parse_dict(config_dict: Mapping[str, Any] | None) -> dict:
    """A copy of ``config_dict`` with its string values parsed by :func:`parse_value`."""
    return {
        str(key): parse_value(value) if isinstance(value, str) else copy.deepcopy(value)
        for key, value in (config_dict or {}).items()
    }


def _split_files(config_files: str | Iterable[str] | None) -> list[str]:
    if config_files is None:
        return []
    if isinstance(config_files, (str, os.PathLike)):
        return [part for part in str(config_files).split() if part]
    return [os.fspath(item) for item in config_files]


def config_layers(
    model: str,
    dataset: str,
    config_files: str | Iterable[str] | None = None,
    config_dict: Mapping[str, Any] | None = None,
    properties_dir: str | os.PathLike | None = None,
) -> list[tuple[str, dict]]:
    """The configuration layers for ``model`` (a resolved name) and ``dataset``, lowest first."""
    props = Path(properties_dir) if properties_dir is not None else PROPERTIES_DIR
    layers: list[tuple[str, dict]] = []
    overall = props / "overall.yaml"
    if overall.is_file():
        layers.append((str(overall), load_yaml(overall)))
    for path in (props / "model" / f"{model}.yaml", props / "dataset" / f"{dataset}.yaml"):
        if path.is_file():
            layers.append((str(path), load_yaml(path)))
    for file in _split_files(config_files):
        layers.append((file, load_yaml(file)))
    if config_dict:
        layers.append(("config_dict", parse_dict(config_dict)))
    return layers


def merge_layers(layers: Iterable[tuple[str, Mapping[str, Any]]]) -> dict:
    merged: dict = {}
    for _, layer in layers:
        merged.update(copy.deepcopy(dict(layer)))
    merged.pop("model", None)  # model and dataset are arguments, never settings
    merged.pop("dataset", None)
    return merged


def _validate_dataset_name(dataset: str) -> str:
    if not isinstance(dataset, str) or not dataset.strip():
        raise InputError("dataset name is empty")
    if "/" in dataset or "\\" in dataset or dataset in {".", ".."}:
        raise InputError(
            f"dataset name {dataset!r} must be a plain name; use --data_path for its folder"
        )
    return dataset.strip()


def ensure_dataset(dataset: str, settings: dict) -> Path:
    """Build/reuse a registered dataset, or check an unregistered one is on disk. Never downloads.

    Updates ``settings["data_path"]`` to the absolute folder that holds ``<dataset>/``.
    """
    from recbole_srgnn.data.registry import prepare_dataset

    settings.setdefault("data_path", "dataset/")
    folder = prepare_dataset(dataset, settings)
    if folder is not None:
        folder = Path(folder).resolve()
        if folder.name != dataset:
            raise InputError(
                f"the registry prepared {folder} for dataset {dataset!r}; RecBole needs a folder "
                f"named {dataset!r}"
            )
    else:
        folder = (Path(settings["data_path"]) / dataset).resolve()
        if not folder.is_dir():
            raise InputError(
                f"dataset {dataset!r} not found: no folder {folder} (data_path="
                f"{settings['data_path']!r}) and {dataset!r} is not a registered dataset"
            )
    settings["data_path"] = str(folder.parent) + os.sep
    suffixes = settings.get("benchmark_filename")
    if suffixes:
        if isinstance(suffixes, str):
            suffixes = [suffixes]
        names = [f"{dataset}.{suffix}.inter" for suffix in suffixes]
    else:
        names = [f"{dataset}.inter"]
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise InputError(f"dataset {dataset!r}: {folder} lacks {', '.join(missing)}")
    return folder


class _LayeredConfig(Config):
    """RecBole's Config fed with one pre-merged, pre-parsed dict.

    It does not read ``sys.argv`` (RecBole's Config does, which would pick up any ``--x=y`` of
    the host program, pytest's included) and does not parse string values a second time.
    """

    def _load_variable_config_dict(self, config_dict):
        return dict(config_dict) if config_dict else {}

    def _load_cmd_line(self):
        return {}


def _make_config(model_class: type, dataset: str, settings: Mapping[str, Any]) -> Config:
    try:
        return _LayeredConfig(
            model=model_class, dataset=dataset, config_dict=copy.deepcopy(dict(settings))
        )
    except (ValueError, KeyError, TypeError, NotImplementedError, AssertionError) as exc:
        message = str(exc).strip() or type(exc).__name__
        raise InputError(f"invalid configuration: {message}") from exc


def _settings(
    model: str, dataset: str, config_files, config_dict, properties_dir=None
) -> tuple[str, type, dict]:
    name, model_class = _resolve(model)
    dataset = _validate_dataset_name(dataset)
    settings = merge_layers(config_layers(name, dataset, config_files, config_dict, properties_dir))
    ensure_dataset(dataset, settings)
    return name, model_class, settings


def build_config(
    model: str,
    dataset: str,
    config_files: list[str] | None = None,
    config_dict: dict | None = None,
) -> Config:
    """RecBole Config from the layers; registered datasets are built first (never downloaded)."""
    _, model_class, settings = _settings(model, dataset, config_files, config_dict)
    return _make_config(model_class, _validate_dataset_name(dataset), settings)


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_logging(quiet: bool):
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


def _start(config: Config, quiet: bool) -> None:
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


def _version(distribution: str, module: str) -> str | None:
    loaded = sys.modules.get(module)
    if loaded is not None and getattr(loaded, "__version__", None):
        return str(loaded.__version__)
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict:
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


def _max_memory(memory: dict, other: Mapping) -> dict:
    """Per key the larger peak of ``memory`` and ``other`` (another part of the same run)."""
    merged = dict(memory)
    for key, value in other.items():
        merged[key] = max(merged.get(key, 0.0), float(value))
    return merged


def _metrics(result: Mapping | None) -> dict | None:
    if result is None:
        return None
    return {str(key): float(value) for key, value in result.items()}


def _data_summary(dataset, train_data, valid_data, test_data) -> dict:
    return {
        "num_items": int(dataset.item_num) - 1,  # RecBole's item_num counts the padding id 0
        "train_cases": int(train_data._dataset.inter_num),
        "valid_cases": int(valid_data._dataset.inter_num) if valid_data is not None else 0,
        "test_cases": int(test_data._dataset.inter_num) if test_data is not None else 0,
    }


def _default_result_path(config: Config, name: str, dataset: str, tag: str = "") -> Path:
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


def run(
    model: str,
    dataset: str,
    config_files: list[str] | None = None,
    config_dict: dict | None = None,
    *,
    epoch_callback: Callable[[int, dict, float], Any] | None = None,
    result_file: str | os.PathLike | None = None,
    saved: bool = True,
    show_progress: bool = True,
    quiet: bool = False,
    test: bool = True,
    resume_file: str | os.PathLike | None = None,
) -> dict:
    """Train ``model`` on ``dataset`` with validation each epoch, test the best model.

    Returns the results dict and writes it as JSON (``result_file`` or
    ``<checkpoint_dir>/<model>-<dataset>-<timestamp>.json``; only rank 0 writes under DDP).
    ``epoch_callback(epoch, valid_result, valid_score)`` runs after each validation.
    ``saved=False`` writes no checkpoint (the best weights are kept in memory). ``quiet``
    silences RecBole's INFO logging, progress bars and the printed table. ``test=False`` skips
    the test evaluation (``test_result`` is None): searches select on validation only.

    ``resume_file``: after every validation the complete training state is written there; if the
    file already exists, training continues from it (its settings must equal this call's, else
    InputError) and the result is the one an uninterrupted run gives. The file is deleted once
    the results are written. ``seconds_total`` and the peak memory cover every part of the run.
    """
    name, model_class, settings = _settings(model, dataset, config_files, config_dict)
    config = _make_config(model_class, dataset, settings)
    with _quiet_logging(quiet):
        _start(config, quiet)
        log = logging.getLogger()
        log.info(config)
        data, train_data, valid_data, test_data = prepare_data(config)
        log.info(data)
        init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
        net = model_class(config, train_data._dataset).to(config["device"])
        log.info(net)
        trainer = SessionTrainer(config, net, model_name=name)
        trainer.settings = settings
        progress = bool(show_progress and config["show_progress"] and not quiet)
        earlier = _resume(trainer, resume_file, train_data, settings)
        started = time.perf_counter()
        if trainer.training_finished:  # the saved run had stopped; only the test was left
            trainer.persist_checkpoints = bool(saved)
            best_valid_score, best_valid_result = (trainer.best_valid_score,
                                                   trainer.best_valid_result)
        else:
            best_valid_score, best_valid_result = trainer.fit(
                train_data, valid_data, verbose=not quiet, saved=saved,
                show_progress=progress, epoch_callback=epoch_callback,
            )
        test_result = (
            trainer.evaluate(test_data, load_best_model=True, show_progress=progress)
            if test else None
        )
        wall = time.perf_counter() - started + earlier.get("seconds_total", 0.0)

    memory = _max_memory(peak_memory(config["device"]), earlier.get("peak_memory", {}))
    results = {
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
        "seconds_total": wall,
        "training_parts": int(earlier.get("parts", 0)) + 1,  # > 1: resumed after interruptions
        **memory,
        "checkpoint": (
            str(Path(trainer.saved_model_file).resolve()) if trainer.checkpoint_written else None
        ),
        "device": str(config["device"]),
        "torch_threads": torch.get_num_threads(),
        **_data_summary(data, train_data, valid_data, test_data),
        "config": plain_config(config),
        "versions": versions(),
    }
    results = finite_or_none(results)
    writer = config["single_spec"] or config["local_rank"] == 0
    if writer:
        path = Path(result_file) if result_file else _default_result_path(config, name, dataset)
        results["result_file"] = str(path.resolve())
        write_results(results, path)
        if not quiet:
            print(f"\n{name} on {dataset}: best epoch {results['best_epoch']}, "
                  f"{results['epochs_trained']} epochs trained")
            print(results_table(results["best_valid_result"], results["test_result"],
                                list(config["metrics"])))
            print(f"results: {path}")
        if resume_file is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(resume_file)  # the run is complete: nothing left to resume
    if not config["single_spec"] and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return results


def _resume(trainer: SessionTrainer, resume_file, train_data, settings: dict) -> dict:
    """Set ``trainer`` up to write resume states to ``resume_file`` and, if that file exists,
    continue from it. Returns what the earlier parts of the run spent: ``seconds_total``,
    ``peak_memory`` and ``parts`` (empty for a fresh start)."""
    if resume_file is None:
        return {}
    resume_file = os.fspath(resume_file)
    trainer.resume_file = resume_file
    earlier: dict = {}
    if os.path.isfile(resume_file):
        state = trainer.load_resume_state(resume_file, train_data, settings=plain(settings))
        earlier = dict(state.get("spent") or {})
        logging.getLogger().info(f"resumed from {resume_file} after epoch {state['epoch'] + 1}")
    before = float(earlier.get("seconds_total", 0.0))
    memory_before = dict(earlier.get("peak_memory", {}))
    parts = int(earlier.get("parts", 0)) + 1
    started = time.perf_counter()

    def spent() -> dict:  # stored in each resume state: the run's time and memory so far
        return {"seconds_total": before + time.perf_counter() - started, "parts": parts,
                "peak_memory": _max_memory(peak_memory(trainer.config["device"]), memory_before)}

    trainer.resume_spent = spent
    return earlier


@dataclass
class Trained:
    """A saved model rebuilt for evaluation: its config, data splits, model and trainer."""

    name: str
    config: Config
    state: dict
    data: Any
    train_data: Any
    valid_data: Any
    test_data: Any
    trainer: SessionTrainer


def load_trained(
    checkpoint: str | os.PathLike, config_dict: dict | None = None, *, quiet: bool = False
) -> Trained:
    """Rebuild a saved model with its data splits, weights loaded, ready to ``trainer.evaluate``.

    The Config comes from the settings stored in the checkpoint (model, dataset, data_path,
    every option), with ``config_dict`` on top (e.g. another ``data_path``, ``gpu_id`` or an
    evaluation-time option such as ``rule_fusion``).
    """
    state = load_checkpoint(checkpoint, map_location="cpu")
    name, dataset = state.get("model"), state.get("dataset")
    saved_settings = state.get("settings")
    if not isinstance(name, str) or not isinstance(dataset, str) or not isinstance(saved_settings, dict):
        raise InputError(f"checkpoint {checkpoint} lacks its model, dataset or settings")
    name, model_class = _resolve(name)
    settings = merge_layers([("checkpoint", saved_settings), ("config_dict", parse_dict(config_dict))])
    ensure_dataset(dataset, settings)
    config = _make_config(model_class, dataset, settings)
    _start(config, quiet)
    data, train_data, valid_data, test_data = prepare_data(config)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    net = model_class(config, train_data._dataset).to(config["device"])
    trainer = SessionTrainer(config, net, model_name=name)
    trainer.settings = settings
    trainer.load_weights(load_checkpoint(checkpoint, map_location=config["device"]))
    return Trained(name, config, state, data, train_data, valid_data, test_data, trainer)


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    config_dict: dict | None = None,
    *,
    result_file: str | os.PathLike | None = None,
    quiet: bool = False,
) -> dict:
    """Evaluate a saved model on its dataset's test split, without training.

    The Config is rebuilt from the settings stored in the checkpoint (model, dataset, data_path,
    every option), with ``config_dict`` on top (e.g. another ``data_path`` or ``gpu_id``).
    """
    with _quiet_logging(quiet):
        loaded = load_trained(checkpoint, config_dict, quiet=quiet)
        started = time.perf_counter()
        test_result = loaded.trainer.evaluate(loaded.test_data, load_best_model=False)
        seconds = time.perf_counter() - started
    config, data = loaded.config, loaded.data
    train_data, valid_data, test_data = loaded.train_data, loaded.valid_data, loaded.test_data
    name, dataset = loaded.name, config["dataset"]

    results = finite_or_none({
        "model": name,
        "dataset": dataset,
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_epoch": loaded.state.get("epoch"),
        "best_valid_score": loaded.state.get("best_valid_score"),
        "test_result": _metrics(test_result),
        "eval_seconds": seconds,
        **peak_memory(config["device"]),
        "device": str(config["device"]),
        **_data_summary(data, train_data, valid_data, test_data),
        "config": plain_config(config),
        "versions": versions(),
    })
    path = Path(result_file) if result_file else _default_result_path(config, name, dataset, "-eval")
    results["result_file"] = str(path.resolve())
    write_results(results, path)
    if not quiet:
        print(f"\n{name} on {dataset} from {checkpoint} (epoch {results['checkpoint_epoch']})")
        print(results_table(None, results["test_result"], list(config["metrics"])))
        print(f"results: {path}")
    return results


# ---------------------------------------------------------------------------------------------
# Multi-GPU (RecBole's DDP): one process per GPU, each running ``run`` with its rank
# ---------------------------------------------------------------------------------------------
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
    results = run(model, dataset, config_files,
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
    # Merge the layers here once: checks the names and builds a registered dataset before the
    # workers start, so they never race to build it.
    _, _, settings = _settings(model, dataset, config_files, config_dict)
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


__all__ = [
    "BUILTIN_SRGNN", "build_config", "config_layers", "evaluate_checkpoint", "load_yaml",
    "merge_layers", "parse_value", "resolve_model", "results_table", "run", "run_distributed",
    "versions", "write_results", "plain",
]
