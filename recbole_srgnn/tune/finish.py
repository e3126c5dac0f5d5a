"""After a search: the outputs in ``--output`` and the one test of the best trial.

``trials.csv`` (every trial), then, once every trial has finished: ``best_test.json`` (the best
trial's best checkpoint evaluated on the test split, in this process), ``best.yaml`` (the best
configuration with a commented header: ``run.py --config_files=DIR/best.yaml`` trains it again),
``valid_curves.png`` and ``report.md``. Only the best trial's checkpoint is kept (unless
``--keep_checkpoints all``) and the dataset cache is removed. An interrupted search stops after
``trials.csv`` and says how to resume.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping

from recbole_srgnn.tune import report
from recbole_srgnn.tune.records import (
    DATASET_CACHE,
    RUN_RESULT_FILE,
    STATUSES,
    best_trial,
    collect_trials,
    find_checkpoint,
    read_events,
    write_text,
)
from recbole_srgnn.tune.space import Space


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies under it (so a committed
    best.yaml names no machine's folders), else absolute."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def best_yaml_options(settings: Mapping, prepared: Mapping[str, Any]) -> dict:
    """The command-line options best.yaml repeats: those the user gave. The driver's absolute
    ``data_path`` (added so that Ray workers find the data from any folder) is kept only when
    the user set it; otherwise ``run.py`` finds the data where the search did, by default."""
    from recbole_srgnn.training.config import parse_dict

    given = parse_dict(settings.get("options") or {})
    return {key: value for key, value in prepared.items()
            if key != "data_path" or "data_path" in given}


def finish_search(settings: dict, space: Space, job_base: dict, experiment_dir: Path,
                  total: int) -> int:
    """Write the outputs of the search in ``experiment_dir``; the exit code (130: interrupted)."""
    output = Path(settings["output"])
    bigger = job_base["bigger"]
    metric_label = job_base["metric_label"]
    records = collect_trials(experiment_dir, bigger=bigger)
    param_names = [p.name for p in space.sampled]
    write_text(output / "trials.csv", report.trials_csv_text(records, param_names, metric_label))
    terminal = [r for r in records if r.status in ("completed", "stopped", "failed")]
    if len(terminal) < total:
        print(f"interrupted: {len(terminal)} of {total} trials finished (trials.csv has them); "
              f"continue with: python -m recbole_srgnn.tune --resume --output={output}",
              file=sys.stderr, flush=True)
        return 130

    best = best_trial(records, bigger=bigger)
    test = _test_best(best, settings) if best is not None else None
    searched = list(space.keys)
    fixed_values = {p.key: p.value for p in space.params if not p.sampled and p.index is None}
    if best is not None:
        header = [
            f"Best configuration of a Ray Tune search (python -m recbole_srgnn.tune), {report.now()}.",
            f"Model {settings['model']}, dataset {settings['dataset']}; {settings['search']} search, "
            f"{settings['scheduler']} scheduler, {len(records)} trials of at most "
            f"{settings['max_epochs']} epochs, space {shown_path(Path(settings['space']))}.",
            f"Selected on validation only: best validation {metric_label} "
            f"{best.best_valid_score:.4f} at epoch {best.best_epoch}, trial {best.trial_id}.",
        ]
        if test and test.get("test_result"):
            shown = ", ".join(f"{k} {v:.4f}" for k, v in test["test_result"].items()
                              if k.endswith("@10") or k == "hit@1")
            header.append(f"Test of that trial's best checkpoint (after the search): {shown}.")
        files = " ".join([*(settings["config_files"] or []), shown_path(output / "best.yaml")])
        header.append(f"Train it again: python run.py --model={settings['model']} "
                      f"--dataset={settings['dataset']} --config_files=\"{files}\"")
        options = best_yaml_options(settings, job_base["options"])
        write_text(output / "best.yaml", report.best_yaml_text(
            best, searched=searched, fixed=fixed_values, options=options,
            max_epochs=settings["max_epochs"], header=header))
    plot = report.plot_curves(records, best, metric_label, output / "valid_curves.png")
    space_lines = [f"{p.name}: {p.describe()}" for p in space.params]
    write_text(output / "report.md", report.report_text(
        settings={**settings, "space": shown_path(Path(settings["space"]))}, records=records, best=best, metric=metric_label,
        mode="max" if bigger else "min", test=test, param_names=param_names,
        space_lines=space_lines, plot_name=plot.name, expected_trials=total, started=report.now(),
        events=read_events(experiment_dir)))
    if settings.get("keep_checkpoints", "best") == "best":
        _prune_checkpoints(records, best)
    shutil.rmtree(output / DATASET_CACHE, ignore_errors=True)  # the search is over

    counts = {s: sum(r.status == s for r in records) for s in STATUSES}
    print(f"done: {counts['completed']} completed, {counts['stopped']} stopped early, "
          f"{counts['failed']} failed", flush=True)
    if best is None:
        print(f"error: no trial reported a validation score; see {output / 'trials.csv'}",
              file=sys.stderr)
        return 1
    line = (f"best: trial {best.trial_id}, valid {metric_label} {best.best_valid_score:.4f} "
            f"(epoch {best.best_epoch})")
    if test and test.get("test_result"):
        shown = ", ".join(f"{k} {v:.4f}" for k, v in test["test_result"].items()
                          if k.endswith("@10") or k == "hit@1")
        line += f"; test {shown}"
    print(line, flush=True)
    print(f"report: {output / 'report.md'}; config: {output / 'best.yaml'}", flush=True)
    return 0


def _test_best(best, settings: Mapping) -> dict:
    """Evaluate the best trial's checkpoint on the test split once (in this process)."""
    from recbole_srgnn.training.checkpoints import evaluate_checkpoint

    checkpoint = best.checkpoint
    if not checkpoint or not os.path.isfile(checkpoint):
        checkpoint = find_checkpoint(Path(best.trial_dir)) if best.trial_dir else None
    if not checkpoint:
        return {"why": f"trial {best.trial_id} left no checkpoint"}
    gpu = ""
    if float(settings["gpus_per_trial"]) > 0:
        import torch

        if torch.cuda.is_available():
            gpu = os.environ.get("CUDA_VISIBLE_DEVICES") or "0"
    output = Path(settings["output"])
    saved_cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        results = evaluate_checkpoint(checkpoint, {"gpu_id": gpu},
                                      result_file=output / "best_test.json", quiet=True)
    finally:
        if saved_cuda is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved_cuda
    valid = None
    summary = Path(best.trial_dir) / RUN_RESULT_FILE
    if summary.is_file():
        try:
            valid = json.loads(summary.read_text(encoding="utf-8")).get("best_valid_result")
        except (OSError, ValueError):
            valid = None
    return {"test_result": results.get("test_result"), "valid_result": valid,
            "checkpoint": checkpoint,
            "how": f"training.checkpoints.evaluate_checkpoint({Path(checkpoint).name})"}


def _prune_checkpoints(records, best) -> None:
    for r in records:
        if best is not None and r.trial_id == best.trial_id:
            continue
        folder = Path(r.trial_dir) / "checkpoints" if r.trial_dir else None
        if folder is not None and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
