"""Configuration layers merged into RecBole's ``Config``; nothing but YAML files is read here.

Layers, lowest priority first: ``recbole_srgnn/properties/overall.yaml`` <
``properties/model/<Model>.yaml`` < ``properties/dataset/<dataset>.yaml`` < ``config_files`` (in
order) < ``config_dict``. All of them sit above RecBole's own defaults. Keys merge at the top level
(a nested dict such as ``eval_args`` is replaced as a whole), as RecBole merges its inputs. String
values in ``config_dict`` are parsed once, like RecBole parses command-line values; ``sys.argv`` is
never read (``run.py`` passes its ``--key=value`` options through ``config_dict``).

Building a dataset is a separate step (``training.datasets``): :func:`build_config` touches no
dataset, so it checks names and settings only.
"""

from __future__ import annotations

import ast
import copy
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from recbole.config import Config

from recbole_srgnn.errors import InputError
from recbole_srgnn.training.models import resolve_model_name
from recbole_srgnn.training.option_checks import check_layers
from recbole_srgnn.training.recbole_compat import LayeredConfig
from recbole_srgnn.yaml_files import parse_yaml

PROPERTIES_DIR = Path(__file__).resolve().parent.parent / "properties"  # package data (setup.py)


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
    """The layers' keys, a later layer winning; ``model`` and ``dataset`` are dropped."""
    merged: dict = {}
    for _, layer in layers:
        merged.update(copy.deepcopy(dict(layer)))
    merged.pop("model", None)  # model and dataset are arguments, never settings
    merged.pop("dataset", None)
    return merged


def validate_dataset_name(dataset: str) -> str:
    """``dataset`` stripped; InputError if it is empty or a path rather than a plain name."""
    if not isinstance(dataset, str) or not dataset.strip():
        raise InputError("dataset name is empty")
    if "/" in dataset or "\\" in dataset or dataset in {".", ".."}:
        raise InputError(
            f"dataset name {dataset!r} must be a plain name; use --data_path for its folder"
        )
    return dataset.strip()


def layered_settings(
    model: str,
    dataset: str,
    config_files: str | Iterable[str] | None = None,
    config_dict: Mapping[str, Any] | None = None,
    properties_dir: str | os.PathLike | None = None,
) -> tuple[str, type, dict]:
    """(canonical model name, model class, merged settings) for ``model`` on ``dataset``.

    The options a user gave (config files, ``config_dict``) are checked first
    (:func:`~recbole_srgnn.training.option_checks.check_layers`): a bad type, range, metric or
    a misspelled key is an InputError before any data is read."""
    name, model_class = resolve_model_name(model)
    dataset = validate_dataset_name(dataset)
    layers = config_layers(name, dataset, config_files, config_dict, properties_dir)
    check_layers(layers, model_class, properties_dir or PROPERTIES_DIR)  # before any work
    return name, model_class, merge_layers(layers)


def make_config(model_class: type, dataset: str, settings: Mapping[str, Any]) -> Config:
    """RecBole's Config from merged ``settings``; its complaints become one-line InputErrors."""
    try:
        return LayeredConfig(
            model=model_class, dataset=dataset, config_dict=copy.deepcopy(dict(settings))
        )
    except (ValueError, KeyError, TypeError, NotImplementedError, AssertionError) as exc:
        message = str(exc).strip() or type(exc).__name__
        raise InputError(f"invalid configuration: {message}") from exc


def build_config(
    model: str,
    dataset: str,
    config_files: list[str] | None = None,
    config_dict: dict | None = None,
) -> Config:
    """RecBole Config from the layers. No dataset is built or looked for: for a run's Config,
    with its dataset ready on disk, see ``training.datasets.ready_config``."""
    _, model_class, settings = layered_settings(model, dataset, config_files, config_dict)
    return make_config(model_class, validate_dataset_name(dataset), settings)
