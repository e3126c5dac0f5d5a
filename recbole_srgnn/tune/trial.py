"""One trial of a search, run by Ray in a worker process: the ``run.py`` pipeline with the
trial's sampled values, the validation metric reported to Ray after every epoch, never a test.

What a trial writes in its folder: ``starts.txt`` (a line per start), the run's results
(``pipeline_result.json``), ``summary.json`` once its training finished, ``error_line.txt`` when
it raised, and its best checkpoint under ``checkpoints/``. Every report carries ``node_id``, the
Ray node the trial runs on (Ray adds its IP as ``node_ip``): on a cluster, trials.csv says where
each one ran. On a cluster the search folder must be one every node sees at the same path.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from recbole_srgnn.json_safe import finite_or_none
from recbole_srgnn.tune.records import (
    ERROR_LINE_FILE,
    RUN_RESULT_FILE,
    STARTS_FILE,
    SUMMARY_FILE,
    write_text,
)
from recbole_srgnn.tune.space import Space

METRIC = "best_valid_score"  # what Ray's scheduler and searcher compare: best so far, per epoch
NODE_KEY = "node_id"  # the reporting trial's Ray node (hex id), in every report


def this_node() -> str:
    """The id of the Ray node this process runs on (Ray must be initialised)."""
    import ray

    return str(ray.get_runtime_context().get_node_id())


def require_shared_output(cache: str | None, node_ip: str) -> None:
    """The dataset cache the driver wrote must be visible here: on a cluster, ``--output`` is a
    folder every node mounts at the same path."""
    if cache and not os.path.exists(cache):
        raise FileNotFoundError(
            f"the search's dataset cache {cache} is not on this Ray node ({node_ip}): on a cluster "
            f"--output must be a folder every node mounts at the same path (docs/design.md, "
            f"On a Ray cluster)"
        )


def run_trial(params: dict, job: dict) -> None:
    """Train one sampled configuration with the pipeline; report validation every epoch."""
    fn_start = time.time()
    import ray
    from ray.air import session

    trial_dir = Path(session.get_trial_dir())
    node_id = this_node()
    with open(trial_dir / STARTS_FILE, "a", encoding="utf-8") as handle:
        handle.write(f"{fn_start:.3f} pid={os.getpid()}\n")
    require_shared_output(job["options"].get("prepared_data_path"), ray.util.get_node_ip_address())

    from recbole_srgnn.training.runs import run

    space: Space = job["space"]
    values = space.config_values(params)
    config_dict = {**job["options"], **values}
    config_dict["checkpoint_dir"] = str(trial_dir / "checkpoints")
    config_dict["threads"] = max(1, int(job["cpus_per_trial"]))  # the CPUs Ray gave this trial
    config_dict["show_progress"] = False
    config_dict["data_progress"] = False
    # RecBole sets CUDA_VISIBLE_DEVICES from gpu_id: keep the GPUs Ray gave this trial.
    config_dict["gpu_id"] = (os.environ.get("CUDA_VISIBLE_DEVICES", "")
                             if job["gpus_per_trial"] > 0 else "")

    bigger = job["bigger"]
    best = {"score": None, "epoch": None}
    report_times: list[float] = []
    pending: list[dict] = []

    def report(epoch: int, valid_result: dict, valid_score: float) -> None:
        epoch = int(epoch) + 1  # RecBole counts from 0
        score = float(valid_score)
        # strict improvement, like the trainer's early stopping (ties keep the earlier epoch)
        if best["score"] is None or (score > best["score"] if bigger else score < best["score"]):
            best["score"], best["epoch"] = score, epoch
        metrics = {"epoch": epoch, "valid_score": score, METRIC: best["score"],
                   "best_epoch": best["epoch"], NODE_KEY: node_id}
        metrics.update({f"valid_{key}": float(value) for key, value in valid_result.items()})
        report_times.append(time.time())
        if epoch >= job["max_epochs"]:
            # The scheduler stops a trial at its epoch budget, inside this report, before the
            # pipeline tests and returns: report the last epoch once the run is complete.
            pending.append(metrics)
        else:
            session.report(metrics)

    result_file = trial_dir / RUN_RESULT_FILE
    try:
        results = run(job["model"], job["dataset"], job["config_files"], config_dict,
                      epoch_callback=report, result_file=result_file, saved=True,
                      show_progress=False, quiet=True, test=False)
    except Exception as exc:  # not SystemExit: that is how Ray stops a trial early
        # One line for the driver's progress output (Ray writes error.txt only after its
        # callbacks have run); the exception still fails the trial.
        message = " ".join(str(exc).split()) or "(no message)"
        with contextlib.suppress(OSError):
            (trial_dir / ERROR_LINE_FILE).write_text(f"{type(exc).__name__}: {message}\n",
                                                     encoding="utf-8")
        raise
    fn_end = time.time()
    # Trials never evaluate on test (test=False): selection sees validation only.
    write_text(result_file, json.dumps(finite_or_none(results), indent=2, allow_nan=False) + "\n")

    curve = results.get("valid_curve") or []
    epoch_seconds = [float(e.get("seconds") or 0.0) + float(e.get("valid_seconds") or 0.0)
                     for e in curve]
    summary = {
        "completed": True,
        "best_valid_score": results.get("best_valid_score"),
        "best_epoch": None if results.get("best_epoch") is None else int(results["best_epoch"]) + 1,
        "epochs_trained": results.get("epochs_trained"),
        "train_seconds": sum(epoch_seconds),
        "function_seconds": fn_end - fn_start,
        "setup_seconds": (report_times[0] - fn_start - epoch_seconds[0]
                          if report_times and epoch_seconds else None),
        "tail_seconds": fn_end - report_times[-1] if report_times else None,
        "checkpoint": results.get("checkpoint"),
        "device": results.get("device"),
        NODE_KEY: node_id,
        "values": values,
    }
    write_text(trial_dir / SUMMARY_FILE, json.dumps(finite_or_none(summary), indent=2) + "\n")
    for metrics in pending:
        session.report(metrics)


def trial_name(trial) -> str:
    """Ray's name and folder name of a trial."""
    return f"trial_{trial.trial_id}"
