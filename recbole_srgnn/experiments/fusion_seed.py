"""One fusion seed: train it (or reuse a training), sweep alpha on validation, test; refit it.

Training does not read the rule-fusion options, so each seed trains once, through the same
pipeline as ``run.py``, in a work folder that keeps its training state after every epoch: a
cut-off seed continues at its next epoch, or goes straight to the sweep if its training ended.
The sweep evaluates the best checkpoint on the validation split for every alpha x repeat boost;
the chosen point and alpha = 0 are tested.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Mapping

from recbole_srgnn.errors import InputError
from recbole_srgnn.experiments.fusion_plan import EVAL_ONLY, FusionPlan
from recbole_srgnn.files import atomic_outputs, held_elsewhere


def metrics_of(result: Mapping | None) -> dict:
    """An evaluation result with lower-case metric names and float values."""
    return {str(k).lower(): float(v) for k, v in (result or {}).items()}



def _finished_training(path: Path) -> dict | None:
    """The training result a cut-off seed left behind, if it and its checkpoint are complete."""
    try:
        trained = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    checkpoint = trained.get("checkpoint")
    return trained if checkpoint and Path(checkpoint).is_file() else None



def train_seed(plan: FusionPlan, seed: int, scratch: Path, say=print, *,
               refit_epochs: int | None = None) -> dict:
    """Train the plan's model for ``seed`` in ``scratch`` (or reuse a training finished there;
    a cut-off one continues at its next epoch). Returns the pipeline's training result.

    ``refit_epochs``: train the final fit instead, on training + validation cases
    (``train_on_valid``) for exactly that many epochs."""
    import torch

    from recbole_srgnn.training import runs

    if plan.threads:  # also for the ensemble's rebuilds, which call this directly
        torch.set_num_threads(plan.threads)
    name = "refit" if refit_epochs else "train"
    trained = _finished_training(scratch / f"{name}.json")
    if trained is not None:
        if not refit_epochs:
            say(f"    training finished before an interruption (best epoch "
                f"{trained['best_epoch'] + 1})", flush=True)
        return trained
    scratch.mkdir(parents=True, exist_ok=True)
    resume_file = scratch / f"{name}.resume.pth"
    if resume_file.is_file():
        say(f"    continuing the {'refit' if refit_epochs else 'training'} cut off before", flush=True)
    config_dict = {**plan.settings, "seed": seed, "checkpoint_dir": str(scratch), "rule_fusion": 0,
                   "threads": plan.threads}
    if refit_epochs:
        config_dict.update({"train_on_valid": True, "epochs": refit_epochs})

    def progress(epoch: int, result, score: float) -> None:
        say(f"    refit epoch {epoch + 1}/{refit_epochs} done" if refit_epochs
            else f"    epoch {epoch + 1}: valid {score:.4f}", flush=True)

    trained = runs.run(
        plan.model, plan.dataset, plan.config_paths(), config_dict, saved=True, quiet=True,
        test=False, result_file=scratch / f"{name}.json", resume_file=resume_file,
        epoch_callback=progress)
    if not trained.get("checkpoint"):
        raise InputError(f"seed {seed}: {'the refit' if refit_epochs else 'training'} wrote no checkpoint")
    return trained


def run_seed(plan: FusionPlan, seed: int, scratch: Path, *, progress: bool = True,
             trained: Mapping | None = None) -> dict:
    """Train (unless ``trained``, a run.py results JSON of this seed, is given), sweep, test.

    ``scratch`` keeps the training state, checkpoint and training result: a call after an
    interruption continues training there, or reuses the finished training."""
    import torch

    from recbole_srgnn.training import checkpoints

    if plan.threads:
        torch.set_num_threads(plan.threads)
    say = print if progress else (lambda *a, **k: None)

    trained_by = "this runner" if trained is None else "run.py, before (--trained)"
    if trained is None:
        trained = train_seed(plan, seed, scratch, say)
    else:
        say(f"    trained before: {trained['checkpoint']} (best epoch {trained['best_epoch'] + 1})",
            flush=True)
    train_seconds = trained.get("seconds_total")
    # Rebuild the best checkpoint with the rule scorer (largest alpha; the weight is set per sweep).
    evaluation = {k: plan.settings[k] for k in EVAL_ONLY if k in plan.settings}
    loaded = checkpoints.load_trained(trained["checkpoint"],
                                      {**evaluation, "rule_fusion": max(plan.alphas),
                                       "threads": plan.threads}, quiet=True)
    net, trainer = loaded.trainer.model, loaded.trainer
    metric = str(loaded.config["valid_metric"]).lower()
    boosts = plan.repeat_boosts or [net.rules.repeat_boost]
    points = [(0.0, None)] + [(a, b) for b in boosts for a in plan.alphas]

    def evaluate(data, alpha: float, boost: float | None) -> dict:
        net.rule_fusion = alpha
        if boost is not None:
            net.rules.repeat_boost = boost
        return metrics_of(trainer.evaluate(data, load_best_model=False))

    sweep = []
    for alpha, boost in points:
        t0 = time.perf_counter()
        valid = evaluate(loaded.valid_data, alpha, boost)
        sweep.append({"alpha": alpha, "repeat_boost": boost, "valid": valid,
                      "seconds": time.perf_counter() - t0})
        say(f"    alpha {alpha:g}" + (f", repeat boost {boost:g}" if boost is not None else "")
            + f": valid {metric} {valid[metric]:.4f}", flush=True)
    best = max(sweep, key=lambda row: row["valid"][metric])  # first of equals: alpha 0, smaller alpha
    test_plain = evaluate(loaded.test_data, 0.0, None)
    test_fused = (test_plain if best["alpha"] == 0
                  else evaluate(loaded.test_data, best["alpha"], best["repeat_boost"]))
    say(f"    chose alpha {best['alpha']:g}" + (f", repeat boost {best['repeat_boost']:g}"
        if best["repeat_boost"] is not None else "") + f" on validation; test {metric}: "
        f"{test_plain[metric]:.4f} (alpha 0) -> {test_fused[metric]:.4f}", flush=True)
    return {
        "seed": seed,
        "valid_metric": metric,
        "chosen_alpha": best["alpha"],
        "chosen_repeat_boost": best["repeat_boost"],
        "rules": {"rule_steps": net.rules.steps, "rule_repeat_boost": boosts},
        "sweep": sweep,
        "test_plain": test_plain,
        "test_fused": test_fused,
        "best_valid_result": trained["best_valid_result"],
        "best_epoch": trained["best_epoch"],
        "epochs_trained": trained["epochs_trained"],
        "valid_curve": trained["valid_curve"],
        "seconds_per_epoch": trained["seconds_per_epoch"],
        "train_seconds": train_seconds,
        "trained_by": trained_by,
        "training_parts": trained.get("training_parts", 1),
        "peak_rss_mb": trained.get("peak_rss_mb"),
        "data": {k: trained.get(k) for k in ("num_items", "train_cases", "valid_cases", "test_cases")},
        "config": trained["config"],
        "versions": trained["versions"],
        "threads": plan.threads,
        "_checkpoint": trained["checkpoint"],  # kept as the seed's model file, not recorded
    }


def refit_seed(plan: FusionPlan, record: Mapping, scratch: Path, *, progress: bool = True) -> dict:
    """Train the seed's model again on the training + validation cases (``train_on_valid``) for
    the number of epochs its validation chose, then test it alone and with the rules at the
    alpha and repeat boost its validation sweep chose. Nothing is chosen here: the validation
    cases are training data now. The rules come from the same training + validation cases."""
    import torch

    from recbole_srgnn.training import checkpoints

    if plan.threads:
        torch.set_num_threads(plan.threads)
    say = print if progress else (lambda *a, **k: None)
    seed, epochs = record["seed"], int(record["best_epoch"]) + 1
    trained = train_seed(plan, seed, scratch, say, refit_epochs=epochs)
    evaluation = {k: plan.settings[k] for k in EVAL_ONLY if k in plan.settings}
    alpha, boost = record["chosen_alpha"], record.get("chosen_repeat_boost")
    loaded = checkpoints.load_trained(trained["checkpoint"],
                                      {**evaluation, "rule_fusion": alpha or max(plan.alphas),
                                       "threads": plan.threads}, quiet=True)
    net, trainer = loaded.trainer.model, loaded.trainer

    def evaluate(a: float) -> dict:
        net.rule_fusion = a
        if boost is not None:
            net.rules.repeat_boost = boost
        return metrics_of(trainer.evaluate(loaded.test_data, load_best_model=False))

    test_plain = evaluate(0.0)
    test_fused = evaluate(alpha) if alpha else test_plain
    metric = record["valid_metric"]
    say(f"    refit on train + valid ({epochs} epochs): test {metric} {test_plain[metric]:.4f} "
        f"(alpha 0) -> {test_fused[metric]:.4f}", flush=True)
    return {
        "epochs": epochs,
        "test_plain": test_plain,
        "test_fused": test_fused,
        "train_cases": trained.get("train_cases"),
        "seconds_per_epoch": trained.get("seconds_per_epoch"),
        "train_seconds": trained.get("seconds_total"),
        "training_parts": trained.get("training_parts", 1),
        "peak_rss_mb": trained.get("peak_rss_mb"),
        "_checkpoint": trained["checkpoint"],  # kept as the refit's model file, not recorded
    }



def keep_model(source: str | os.PathLike, target: Path) -> None:
    """Put a checkpoint at ``target`` (atomically): moved out of a work folder, copied otherwise."""
    source = Path(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.resolve().parent.parent == target.resolve().parent.parent / "partial":
        os.replace(source, target)
        return
    with atomic_outputs([target]) as (tmp,):
        shutil.copyfile(source, tmp)



def say_held(say, what: str, work: Path) -> None:
    """Say that another process holds ``work`` (see ``recbole_srgnn.files.claimed``)."""
    say(held_elsewhere(what, work) + " (rerun once it ends)", flush=True)

