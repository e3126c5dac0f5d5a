"""The dataset step of a run: make ``<data_path>/<dataset>/`` ready before RecBole reads it.

A registered dataset (``recbole_srgnn.data.registry``) is built on first use and reused while
its inputs and options are unchanged; any other name must already be a folder of RecBole files.
Nothing is ever downloaded: RecBole would try to download a dataset it cannot find, so every
file it will read is checked here first (docs/design.md §4.5). Callers run this step explicitly
(``ready_settings`` / ``ready_config``) before building the run's ``Config``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from recbole.config import Config

from recbole_srgnn.errors import InputError
from recbole_srgnn.training.config import layered_settings, make_config, validate_dataset_name


def ensure_dataset(dataset: str, settings: dict) -> Path:
    """Build/reuse a registered dataset, or check an unregistered one is on disk. Never downloads.

    Updates ``settings["data_path"]`` to the absolute folder that holds ``<dataset>/``.
    """
    from recbole_srgnn.data import registry

    settings.setdefault("data_path", "dataset/")
    folder = registry.prepare_dataset(dataset, settings)
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


def ready_settings(
    model: str,
    dataset: str,
    config_files: str | Iterable[str] | None = None,
    config_dict: Mapping[str, Any] | None = None,
) -> tuple[str, type, dict]:
    """The merged layers (``config.layered_settings``) with the dataset made ready on disk and
    ``data_path`` pointing at it: (canonical model name, model class, settings)."""
    name, model_class, settings = layered_settings(model, dataset, config_files, config_dict)
    ensure_dataset(validate_dataset_name(dataset), settings)
    return name, model_class, settings


def ready_config(
    model: str,
    dataset: str,
    config_files: list[str] | None = None,
    config_dict: dict | None = None,
) -> Config:
    """RecBole Config from the layers, its dataset built first if registered (never downloaded)."""
    _, model_class, settings = ready_settings(model, dataset, config_files, config_dict)
    return make_config(model_class, validate_dataset_name(dataset), settings)
