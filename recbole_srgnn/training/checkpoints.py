"""A saved model rebuilt from its checkpoint alone: ``load_trained`` (model, data, trainer, ready
to evaluate) and ``evaluate_checkpoint`` (its test split, written as a results JSON).

Checkpoints store the merged settings they were trained with, so the same ``Config`` is built
again without the original command line; ``config_dict`` goes on top (another ``data_path``,
``gpu_id``). Its content checksum and the fingerprint of the data it was trained on are
verified first (``recbole_srgnn.provenance``): a changed file or dataset is refused.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recbole.config import Config
from recbole.utils import init_seed

from recbole_srgnn.errors import InputError
from recbole_srgnn.files import check_output_file
from recbole_srgnn.prepared_data import prepare_data
from recbole_srgnn.provenance import DATA_KEY, check_data, data_fingerprint
from recbole_srgnn.trainer import SessionTrainer
from recbole_srgnn.training.config import make_config, merge_layers, parse_dict
from recbole_srgnn.training.datasets import ensure_dataset
from recbole_srgnn.training.models import resolve_model_name
from recbole_srgnn.training.results import (
    default_result_path,
    evaluation_results,
    results_table,
    write_results,
)
from recbole_srgnn.training.startup import quiet_logging, start
from recbole_srgnn.training_state import load_checkpoint


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
    every option), with ``config_dict`` on top (e.g. another ``data_path`` or ``gpu_id``).
    """
    state = load_checkpoint(checkpoint, map_location="cpu")
    name, dataset = state.get("model"), state.get("dataset")
    saved_settings = state.get("settings")
    if not isinstance(name, str) or not isinstance(dataset, str) or not isinstance(saved_settings, dict):
        raise InputError(f"checkpoint {checkpoint} lacks its model, dataset or settings")
    name, model_class = resolve_model_name(name)
    settings = merge_layers([("checkpoint", saved_settings), ("config_dict", parse_dict(config_dict))])
    ensure_dataset(dataset, settings)
    config = make_config(model_class, dataset, settings)
    start(config, quiet)
    data, train_data, valid_data, test_data = prepare_data(config)
    fingerprint = data_fingerprint(data, settings["data_path"], dataset)
    check_data(state.get(DATA_KEY), fingerprint, checkpoint)  # before weights meet other items
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    net = model_class(config, train_data._dataset).to(config["device"])
    trainer = SessionTrainer(config, net, model_name=name)
    trainer.settings = settings
    trainer.data_fingerprint = fingerprint
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
    if result_file is not None:
        check_output_file(result_file, "result_file")
    with quiet_logging(quiet):
        loaded = load_trained(checkpoint, config_dict, quiet=quiet)
        started = time.perf_counter()
        test_result = loaded.trainer.evaluate(loaded.test_data, load_best_model=False)
        seconds = time.perf_counter() - started
    config = loaded.config
    name, dataset = loaded.name, config["dataset"]

    results = evaluation_results(
        name=name, dataset=dataset, config=config, checkpoint=checkpoint, state=loaded.state,
        test_result=test_result, seconds=seconds,
        splits=(loaded.data, loaded.train_data, loaded.valid_data, loaded.test_data),
    )
    path = Path(result_file) if result_file else default_result_path(config, name, dataset, "-eval")
    results["result_file"] = str(path.resolve())
    write_results(results, path)
    if not quiet:
        print(f"\n{name} on {dataset} from {checkpoint} (epoch {results['checkpoint_epoch']})")
        print(results_table(None, results["test_result"], list(config["metrics"])))
        print(f"results: {path}")
    return results
