"""A comparison config: its validation, and the rows and grid points it defines.

``benchmarks/configs/smoke.yaml`` documents the format. Everything wrong in a config is one
:class:`~recbole_srgnn.errors.InputError` line naming the file and the key, before anything runs.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

from recbole_srgnn.errors import InputError

TOP_KEYS = {"name", "description", "dataset", "seeds", "threads", "isolate", "keep_models",
            "settings", "tuning", "reference", "models"}
ENTRY_KEYS = {"name", "model", "settings", "grid", "tunable"}
TUNING_KEYS = {"budget", "seeds"}
# Set by the runner itself, never by a config.
RESERVED = {"seed", "model", "dataset", "checkpoint_dir", "benchmark_filename"}
SHORT = {"learning_rate": "lr", "embedding_size": "d", "hidden_size": "h", "weight_decay": "wd",
         "embedding_dropout": "emb_drop", "hidden_dropout": "hid_drop", "dropout_prob": "drop",
         "dropout_probs": "drops", "train_batch_size": "batch"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True)
class ModelEntry:
    """One row of the comparison: a model class with its own settings and grid."""

    name: str                       # row name (unique), e.g. "SRGNN-niser"
    model: str                      # model to resolve, e.g. "SRGNN"
    settings: dict                  # variant settings (above the shared ones)
    points: tuple                   # grid points: tuple of (tag, dict), in grid order
    tunable: bool = True

    @property
    def tags(self) -> list[str]:
        return [tag for tag, _ in self.points]

    def point(self, tag: str) -> dict:
        return dict(self.points)[tag]


@dataclass(frozen=True)
class Experiment:
    name: str
    dataset: str
    seeds: tuple
    tune_seeds: int                 # the grid is evaluated on seeds[:tune_seeds]
    budget: int                     # grid points per tunable row
    settings: dict
    models: tuple                   # ModelEntry, in config order
    reference: str
    threads: int | None = 1
    isolate: bool = True
    keep_models: bool = False       # keep each run's best checkpoint under <output>/models/
    description: str = ""
    path: str = ""

    def entry(self, name: str) -> ModelEntry:
        for entry in self.models:
            if entry.name == name:
                return entry
        raise KeyError(name)

    @property
    def tuning_seeds(self) -> list[int]:
        return list(self.seeds[: self.tune_seeds])

    @property
    def other_seeds(self) -> list[int]:
        return list(self.seeds[self.tune_seeds:])

    def planned_runs(self, entry: ModelEntry) -> int:
        return len(entry.points) * self.tune_seeds + len(self.other_seeds)

    @property
    def total_runs(self) -> int:
        return sum(self.planned_runs(entry) for entry in self.models)


def _scalar_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_scalar_text(item) for item in value)
    if isinstance(value, dict):
        return ",".join(f"{k}:{_scalar_text(v)}" for k, v in value.items())
    if isinstance(value, float):
        return repr(value)
    return str(value)


def point_tag(point: Mapping[str, Any]) -> str:
    """File-name tag of a grid point: ``learning_rate=0.001_step=2``; ``default`` when empty."""
    if not point:
        return "default"
    text = "_".join(f"{key}={_scalar_text(value)}" for key, value in point.items())
    return re.sub(r"[^A-Za-z0-9._=,:+-]", "-", text).replace(":", "-")


def point_label(point: Mapping[str, Any]) -> str:
    """Short display form: ``lr=0.001 step=2``; ``(no grid)`` when empty."""
    if not point:
        return "(no grid)"
    return " ".join(f"{SHORT.get(key, key)}={_scalar_text(value)}" for key, value in point.items())


def _check_settings(where: str, settings: Any) -> dict:
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise InputError(f"{where} must be a mapping of option names to values")
    bad = sorted(str(key) for key in settings if str(key) in RESERVED)
    if bad:
        raise InputError(f"{where} sets {', '.join(bad)}: the runner sets these itself "
                         "(seeds come from 'seeds', the dataset from 'dataset')")
    return {str(key): copy.deepcopy(value) for key, value in settings.items()}


def _grid_points(where: str, grid: Any) -> tuple:
    if grid is None:
        grid = {}
    if not isinstance(grid, dict):
        raise InputError(f"{where}: grid must map option names to lists of values")
    grid = _check_settings(f"{where}: grid", grid)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise InputError(f"{where}: grid value of {key!r} must be a non-empty list of values")
        texts = [json.dumps(value, sort_keys=True) for value in values]
        if len(set(texts)) != len(texts):
            raise InputError(f"{where}: grid values of {key!r} repeat")
    keys = list(grid)
    points = []
    for combo in itertools.product(*(grid[key] for key in keys)):
        point = dict(zip(keys, combo))
        points.append((point_tag(point), point))
    tags = [tag for tag, _ in points]
    if len(set(tags)) != len(tags):
        raise InputError(f"{where}: two grid points give the same file tag; use distinct values")
    return tuple(points)


def _reject_unknown_keys(mapping: dict, allowed: set[str], where: str) -> None:
    """InputError naming the keys of ``mapping`` outside ``allowed`` (and what is allowed)."""
    unknown = sorted(set(map(str, mapping)) - set(allowed))
    if unknown:
        raise InputError(f"{where} unknown key(s) {', '.join(unknown)}; "
                         f"allowed: {', '.join(sorted(allowed))}")


def parse_experiment(data: Any, path: str = "<config>") -> Experiment:
    """Validate a loaded config mapping; InputError (one line) on anything wrong."""
    if not isinstance(data, dict):
        raise InputError(f"{path}: the config must be a mapping")
    _reject_unknown_keys(data, TOP_KEYS, f"{path}:")
    for key in ("name", "dataset", "seeds", "models"):
        if data.get(key) in (None, "", [], {}):
            raise InputError(f"{path}: '{key}' is required")
    name = data["name"]
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InputError(f"{path}: name {name!r} must be a plain name (letters, digits, . _ + -)")
    dataset = data["dataset"]
    if not isinstance(dataset, str) or not NAME_RE.match(dataset):
        raise InputError(f"{path}: dataset {dataset!r} must be a plain dataset name")
    seeds = data["seeds"]
    if (not isinstance(seeds, list)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise InputError(f"{path}: seeds must be a list of whole numbers >= 0, e.g. [1, 2, 3]")
    if len(set(seeds)) != len(seeds):
        raise InputError(f"{path}: seeds repeat")
    threads = data.get("threads", 1)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise InputError(f"{path}: threads must be a whole number >= 1 or null, got {threads!r}")
    isolate = data.get("isolate", True)
    if not isinstance(isolate, bool):
        raise InputError(f"{path}: isolate must be true or false")
    keep_models = data.get("keep_models", False)
    if not isinstance(keep_models, bool):
        raise InputError(f"{path}: keep_models must be true or false")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise InputError(f"{path}: description must be text")
    settings = _check_settings(f"{path}: settings", data.get("settings"))

    tuning = data.get("tuning") or {}
    if not isinstance(tuning, dict):
        raise InputError(f"{path}: tuning must be a mapping with 'budget' (and optionally 'seeds')")
    _reject_unknown_keys(tuning, TUNING_KEYS, f"{path}: tuning")
    budget = tuning.get("budget")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise InputError(f"{path}: tuning.budget (grid points per tunable model, the same for "
                         f"every model) must be a whole number >= 1, got {budget!r}")
    tune_seeds = tuning.get("seeds", len(seeds))
    if tune_seeds == "all":
        tune_seeds = len(seeds)
    if (isinstance(tune_seeds, bool) or not isinstance(tune_seeds, int)
            or not 1 <= tune_seeds <= len(seeds)):
        raise InputError(f"{path}: tuning.seeds must be 'all' or a whole number from 1 to "
                         f"{len(seeds)}, got {tune_seeds!r}")

    models_raw = data["models"]
    if not isinstance(models_raw, list):
        raise InputError(f"{path}: models must be a list")
    entries: list[ModelEntry] = []
    for index, raw in enumerate(models_raw, start=1):
        where = f"{path}: models[{index}]"
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict):
            raise InputError(f"{where} must be a model name or a mapping with 'name'")
        _reject_unknown_keys(raw, ENTRY_KEYS, f"{where}:")
        row = raw.get("name")
        if not isinstance(row, str) or not NAME_RE.match(row):
            raise InputError(f"{where}: name {row!r} must be a plain name (letters, digits, . _ + -)")
        model = raw.get("model", row)
        if not isinstance(model, str) or not model.strip():
            raise InputError(f"{where} ({row}): model must be a model name")
        tunable = raw.get("tunable", True)
        if not isinstance(tunable, bool):
            raise InputError(f"{where} ({row}): tunable must be true or false")
        entry_settings = _check_settings(f"{where} ({row}): settings", raw.get("settings"))
        points = _grid_points(f"{where} ({row})", raw.get("grid"))
        if tunable and len(points) != budget:
            raise InputError(
                f"{where} ({row}): its grid has {len(points)} point(s) but tuning.budget is "
                f"{budget}: every tunable model gets the same budget (set tunable: false only for "
                f"a model without hyperparameters)")
        if not tunable and len(points) != 1:
            raise InputError(f"{where} ({row}): tunable: false means no grid, got {len(points)} points")
        entries.append(ModelEntry(row, model.strip(), entry_settings, points, tunable))
    names = [entry.name for entry in entries]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"{path}: model name(s) {', '.join(repeated)} repeat; give variants "
                         "their own name, e.g. {name: SRGNN-x, model: SRGNN, settings: {...}}")
    reference = data.get("reference", "SRGNN" if "SRGNN" in names else names[0])
    if reference not in names:
        raise InputError(f"{path}: reference {reference!r} is not one of the models "
                         f"({', '.join(names)})")
    return Experiment(
        name=name, dataset=dataset, seeds=tuple(seeds), tune_seeds=tune_seeds, budget=budget,
        settings=settings, models=tuple(entries), reference=reference, threads=threads,
        isolate=isolate, keep_models=keep_models, description=description.strip(),
        path=str(path),
    )


def load_experiment(path: str | os.PathLike) -> Experiment:
    from recbole_srgnn.training.config import load_yaml  # RecBole-compatible YAML (1e-3 is a float)

    return parse_experiment(load_yaml(path), str(path))

