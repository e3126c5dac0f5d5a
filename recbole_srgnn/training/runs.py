"""``run``: one training of a model on a dataset, validated every epoch, its best epoch tested,
the results written as JSON; resumable after an interruption (``resume_file``).

The steps: merge the configuration layers, make the dataset ready on disk, build RecBole's
``Config``, data and model, train with :class:`~recbole_srgnn.trainer.SessionTrainer`, test.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
from recbole.utils import init_seed

from recbole_srgnn.bundle import check_output_folder
from recbole_srgnn.errors import InputError
from recbole_srgnn.files import check_output_file
from recbole_srgnn.prepared_data import prepare_data
from recbole_srgnn.provenance import data_fingerprint
from recbole_srgnn.trainer import SessionTrainer
from recbole_srgnn.training.config import make_config
from recbole_srgnn.training.datasets import ready_settings
from recbole_srgnn.training.export import check_exportable, export_bundle
from recbole_srgnn.training.results import (
    default_result_path,
    max_memory,
    peak_memory,
    results_table,
    run_results,
    write_results,
)
from recbole_srgnn.training.startup import quiet_logging, start
from recbole_srgnn.training_state import plain


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
    export: str | os.PathLike | None = None,
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
    the results are written. ``seconds_total`` and the peak memory cover every part of the run;
    ``model_build_s`` (constructing the model from the training split: a kNN model's index, the
    rules' table, a network's initialisation) is this part's, as the model is built again.
    ``test_eval_s`` is the test evaluation (loading the best weights and scoring the test split).

    ``export``: a folder where the best model is then written as a bundle
    (:func:`~recbole_srgnn.training.export.export_bundle`; needs ``saved``; checked first).
    """
    for option, path in (("result_file", result_file), ("resume_file", resume_file)):
        if path is not None:
            check_output_file(path, option)  # a bad output path fails now, not after training
    if export is not None:
        check_output_folder(export, "export")
        check_exportable(model)
        if not saved:
            raise InputError("export needs the checkpoint: it cannot go with saved=False")
    name, model_class, settings = ready_settings(model, dataset, config_files, config_dict)
    config = make_config(model_class, dataset, settings)
    with quiet_logging(quiet):
        start(config, quiet)
        log = logging.getLogger()
        log.info(config)
        data, train_data, valid_data, test_data = prepare_data(config)
        log.info(data)
        init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
        build_started = time.perf_counter()  # kNN/rules models build their index here
        net = model_class(config, train_data._dataset).to(config["device"])
        _synchronize(config["device"])
        model_build_s = time.perf_counter() - build_started
        log.info(net)
        trainer = SessionTrainer(config, net, model_name=name)
        trainer.settings = settings
        trainer.data_fingerprint = data_fingerprint(data, settings["data_path"], dataset)
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
        test_result, test_eval_s = None, None
        if test:
            eval_started = time.perf_counter()
            test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=progress)
            _synchronize(config["device"])
            test_eval_s = time.perf_counter() - eval_started
        wall = time.perf_counter() - started + earlier.get("seconds_total", 0.0)

    results = run_results(
        name=name, dataset=dataset, config=config, trainer=trainer,
        best_valid_score=best_valid_score, best_valid_result=best_valid_result,
        test_result=test_result, seconds_total=wall, parts=int(earlier.get("parts", 0)) + 1,
        memory=max_memory(peak_memory(config["device"]), earlier.get("peak_memory", {})),
        splits=(data, train_data, valid_data, test_data),
        model_build_s=model_build_s, test_eval_s=test_eval_s,
    )
    writer = config["single_spec"] or config["local_rank"] == 0
    if writer:
        path = Path(result_file) if result_file else default_result_path(config, name, dataset)
        results["result_file"] = str(path.resolve())
        write_results(results, path)
        if not quiet:
            print(f"\n{name} on {dataset}: best epoch {results['best_epoch']}, "
                  f"{results['epochs_trained']} epochs trained")
            print(results_table(results["best_valid_result"], results["test_result"],
                                list(config["metrics"])))
            if results.get("checkpoint"):
                print(f"checkpoint: {results['checkpoint']}  (evaluate again: python run.py "
                      f"--checkpoint={results['checkpoint']})")
            print(f"results: {path}")
        if resume_file is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(resume_file)  # the run is complete: nothing left to resume
        if export is not None:
            results["bundle"] = str(export_bundle(results["checkpoint"], export, quiet=True))
            write_results(results, path)  # again, naming the bundle (written first: a failed
            if not quiet:                 # export still leaves the results)
                print(f"bundle: {results['bundle']}")
    if not config["single_spec"] and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return results


def _synchronize(device) -> None:
    """Wait for queued CUDA work, so that a timing covers it (nothing to do on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
        done = int(state["epoch"]) + 1
        logging.getLogger().info(  # RecBole's log lines count epochs from 0
            f"resumed from {resume_file}: {done} epoch(s) done, going on with epoch {done} "
            f"(counted from 0 as in the lines below)")
    before = float(earlier.get("seconds_total", 0.0))
    memory_before = dict(earlier.get("peak_memory", {}))
    parts = int(earlier.get("parts", 0)) + 1
    started = time.perf_counter()

    def spent() -> dict:  # stored in each resume state: the run's time and memory so far
        return {"seconds_total": before + time.perf_counter() - started, "parts": parts,
                "peak_memory": max_memory(peak_memory(trainer.config["device"]), memory_before)}

    trainer.resume_spent = spent
    return earlier
