"""One fusion seed: train it (or reuse a training), sweep the grid on validation, test; refit it.

Training is the plain model's (the rules only rank, at evaluation), so each seed trains once,
through the same pipeline as ``run.py``, in a work folder that keeps its training state after
every epoch: a cut-off seed continues at its next epoch, or goes straight to the sweep if its
training ended. The sweep (``fusion_rank``) evaluates the best checkpoint with each scorer on
the validation split for every alpha (x repeat boost for the rules); the chosen (scorer, point)
and alpha = 0 are tested. The refit is one more training of the seed, with the run settings of
:func:`refit_settings`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Mapping

from recbole_srgnn.errors import InputError
from recbole_srgnn.experiments.fusion_plan import RULES, FusionPlan, point_text
from recbole_srgnn.experiments.fusion_rank import (
    Ranking,
    best_per_scorer,
    best_point,
    scorer_grid,
    scorer_of,
)
from recbole_srgnn.files import atomic_outputs, held_elsewhere


def refit_settings(record: Mapping) -> dict:
    """The run settings of a recorded seed's final fit: the training *and* validation cases
    (``train_on_valid``), for the number of epochs its validation chose."""
    return {"train_on_valid": True, "epochs": int(record["best_epoch"]) + 1}


def _finished_training(path: Path) -> dict | None:
    """The training result a cut-off seed left behind, if it and its checkpoint are complete."""
    try:
        trained = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    checkpoint = trained.get("checkpoint")
    return trained if checkpoint and Path(checkpoint).is_file() else None


def train_seed(plan: FusionPlan, seed: int, scratch: Path, say=print, *,
               refit: Mapping | None = None) -> dict:
    """Train the plan's model for ``seed`` in ``scratch`` (or reuse a training finished there;
    a cut-off one continues at its next epoch). Returns the pipeline's training result.

    ``refit``: train the final fit instead, with these run settings on top of the plan's
    (:func:`refit_settings`)."""
    import torch

    from recbole_srgnn.training import runs

    if plan.threads:  # also for the ensemble's rebuilds, which call this directly
        torch.set_num_threads(plan.threads)
    name = "refit" if refit else "train"
    trained = _finished_training(scratch / f"{name}.json")
    if trained is not None:
        if not refit:
            say(f"    training finished before an interruption (best epoch "
                f"{trained['best_epoch'] + 1})", flush=True)
        return trained
    scratch.mkdir(parents=True, exist_ok=True)
    resume_file = scratch / f"{name}.resume.pth"
    if resume_file.is_file():
        say(f"    continuing the {'refit' if refit else 'training'} cut off before", flush=True)
    config_dict = {**plan.settings, "seed": seed, "checkpoint_dir": str(scratch),
                   "threads": plan.threads, **(refit or {})}
    epochs = (refit or {}).get("epochs")

    def progress(epoch: int, result, score: float) -> None:
        say(f"    refit epoch {epoch + 1}/{epochs} done" if refit
            else f"    epoch {epoch + 1}: valid {score:.4f}", flush=True)

    trained = runs.run(
        plan.model, plan.dataset, plan.config_paths(), config_dict, saved=True, quiet=True,
        test=False, result_file=scratch / f"{name}.json", resume_file=resume_file,
        epoch_callback=progress)
    if not trained.get("checkpoint"):
        raise InputError(f"seed {seed}: {'the refit' if refit else 'training'} wrote no checkpoint")
    return trained


def run_seed(plan: FusionPlan, seed: int, scratch: Path, *, progress: bool = True,
             trained: Mapping | None = None) -> dict:
    """Train (unless ``trained``, a run.py results JSON of this seed, is given), sweep, test.

    ``scratch`` keeps the training state, checkpoint and training result: a call after an
    interruption continues training there, or reuses the finished training."""
    import torch

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
    ranking = Ranking(plan, [trained["checkpoint"]])
    metric = ranking.metric
    boosts = plan.repeat_boosts or ([ranking.rules.repeat_boost] if ranking.rules else [])
    sweep = ranking.sweep(scorer_grid(plan, boosts), say, prefix="    ")
    best = best_point(sweep, metric)
    chosen = scorer_of(best)
    named = chosen if ranking.named else None
    test_plain, test_fused = ranking.tested((best["alpha"], best["repeat_boost"]), chosen)
    say(f"    chose {point_text(best['alpha'], best['repeat_boost'], named)} on validation; "
        f"test {metric}: {test_plain[metric]:.4f} (alpha 0) -> {test_fused[metric]:.4f}",
        flush=True)
    record = {
        "seed": seed,
        "valid_metric": metric,
        "chosen_alpha": best["alpha"],
        "chosen_repeat_boost": best["repeat_boost"],
    }
    if ranking.rules is not None:
        record["rules"] = {"rule_steps": ranking.rules.steps, "rule_repeat_boost": boosts}
    if ranking.named:
        record["chosen_scorer"] = chosen
        record["scorers"] = scorer_summary(plan, sweep, metric)
    return {
        **record,
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


def scorer_summary(plan: FusionPlan, sweep, metric: str) -> list[dict]:
    """Per scorer of the config: its options, alphas and best validation row (for the report)."""
    from recbole_srgnn.model.scorers import full_options

    best = best_per_scorer(sweep, metric)
    summary = []
    for spec in plan.scorer_specs():
        row = best.get(spec.name)
        summary.append({
            "name": spec.name, "alphas": plan.alphas_of(spec),
            "options": {} if spec.name == RULES else full_options(spec.name, spec.options),
            "best_valid": None if row is None else row["valid"][metric],
            "best_alpha": None if row is None else row["alpha"],
            "best_repeat_boost": None if row is None else row["repeat_boost"]})
    return summary


def refit_seed(plan: FusionPlan, record: Mapping, scratch: Path, *, progress: bool = True) -> dict:
    """Train the seed's final fit (:func:`refit_settings`), then test it alone and with the
    scorer at the alpha (and repeat boost) its validation sweep chose. Nothing is chosen here:
    the validation cases are training data now. The scorer comes from the same training +
    validation cases."""
    import torch

    if plan.threads:
        torch.set_num_threads(plan.threads)
    say = print if progress else (lambda *a, **k: None)
    settings = refit_settings(record)
    epochs = settings["epochs"]
    trained = train_seed(plan, record["seed"], scratch, say, refit=settings)
    chosen = scorer_of(record)
    ranking = Ranking(plan, [trained["checkpoint"]],
                      scorers=None if plan.scorers is None else [chosen] if chosen else [])
    test_plain, test_fused = ranking.tested((record["chosen_alpha"],
                                             record.get("chosen_repeat_boost")), chosen)
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

