"""The fusion runner's ``ensemble`` step: rank with every seed's model together, plus a scorer.

Once every seed of a fusion config is recorded (and refitted, with ``refit: true``), the kept
model files (``<out>/models/``, git-ignored) rank together through ``fusion_rank``: a
:class:`~recbole_srgnn.model.fused.FusedRanker` of all seeds' models, the mean of their softmax
probabilities plus ``alpha`` times the sequence rules (or, where the config lists ``scorers``,
each of them in turn). Protocol, as for one seed:

1. every member must reproduce its record before it counts (trained models: their validation
   scores at alpha 0; refit models: their test scores at alpha 0), so a kept or retrained file
   stands for exactly the recorded model;
2. ``alpha`` (the config's alphas, and 0) and the scorer are chosen on the **validation**
   split, the rules at the repeat boost(s) the seeds' own sweeps chose; the ensemble of the
   models trained on the training split is tested at alpha 0 and at the chosen point;
3. with refits, the ensemble of the refit models (scorer counted on training + validation cases)
   is tested at the same point: nothing is chosen on it.

The result is ``<out>/ensemble.json``; ``fusion_report`` adds it to the report. A seed whose
model file is missing is trained again (same settings and seed, resumable in ``partial/``).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Mapping, Sequence

from recbole_srgnn.errors import InputError
from recbole_srgnn.experiments import fusion_seed
from recbole_srgnn.experiments.fusion_plan import (
    METRICS,
    FusionPlan,
    model_path,
    needs_refit,
    point_text,
    read_seed,
    refit_path,
    seed_path,
)
from recbole_srgnn.experiments.fusion_rank import Ranking, best_point, scorer_grid, scorer_of
from recbole_srgnn.files import atomic_outputs, claimed

FORMAT = "ensemble-1"
TOLERANCE = 1e-3  # a member's metrics may differ this much from its record (float noise only)


def result_path(out: Path) -> Path:
    return out / "ensemble.json"


def read(out: Path, expected: str, plan: FusionPlan) -> dict | None:
    """The stored ensemble result if it belongs to these records and is complete."""
    try:
        result = json.loads(result_path(out).read_text())
    except (OSError, ValueError):
        return None
    if (result.get("format") != FORMAT or result.get("settings_hash") != expected
            or result.get("seeds") != list(plan.seeds)
            or (plan.refit and not result.get("refit"))):
        return None
    return result


def _records(plan: FusionPlan, out: Path, expected: str) -> dict[int, dict] | None:
    records = {s: read_seed(seed_path(out, s), expected) for s in plan.seeds}
    if any(r is None or needs_refit(plan, r) for r in records.values()):
        return None
    return records


def missing_models(plan: FusionPlan, out: Path, expected: str) -> list[tuple[int, bool]]:
    """(seed, refit) of the members whose model file is not in ``<out>/models/``."""
    return [(seed, refit) for seed in plan.seeds for refit in ([False, True] if plan.refit else [False])
            if not model_path(out, seed, expected, refit).is_file()]


def ensure_models(plan: FusionPlan, out: Path, expected: str, records: Mapping[int, dict],
                  seeds: Sequence[int], say=print) -> None:
    """Put the members' model files in place: retrain what is missing for ``seeds`` (the seeds
    this process runs; other processes may build the others)."""
    for seed in seeds:
        for refit in ([False, True] if plan.refit else [False]):
            target = model_path(out, seed, expected, refit)
            if target.is_file():
                continue
            what = "refit" if refit else "trained"
            scratch = (refit_path(out, seed, expected) if refit
                       else out / "partial" / f"seed{seed}-{expected}-model")
            with claimed(scratch) as mine:  # another process may rebuild the same file
                if not mine:
                    fusion_seed.say_held(say, f"ensemble: seed {seed}'s {what} model", scratch)
                    continue
                if target.is_file():
                    continue  # kept by another process meanwhile
                say(f"ensemble: seed {seed}'s {what} model was not kept; training it again "
                    "(same settings and seed)", flush=True)
                settings = fusion_seed.refit_settings(records[seed]) if refit else None
                source = fusion_seed.train_seed(plan, seed, scratch, say,
                                                refit=settings)["checkpoint"]
                fusion_seed.keep_model(source, target)
                shutil.rmtree(scratch, ignore_errors=True)
            with contextlib.suppress(OSError):
                scratch.parent.rmdir()  # partial/, when nothing else is in progress


def _check(seed: int, what: str, got: Mapping, recorded: Mapping) -> float:
    diff = max(abs(got[m] - recorded[m]) for m in METRICS if m in recorded)
    if diff > TOLERANCE:
        raise InputError(f"ensemble: the {what} model file of seed {seed} does not reproduce its "
                         f"record (metrics differ by up to {diff:.4f}); delete it to train it again")
    return diff


def evaluate(plan: FusionPlan, out: Path, expected: str, records: Mapping[int, dict],
             say=print) -> dict:
    """Check the members, choose alpha on validation, test (and test the refit ensemble)."""
    # the trainer makes its checkpoint folder; nothing is saved there, so a throw-away one
    scratch = tempfile.mkdtemp(prefix="fusion-ensemble-")
    try:
        return _evaluate(plan, out, expected, records, say, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _evaluate(plan: FusionPlan, out: Path, expected: str, records: Mapping[int, dict],
              say, scratch: str) -> dict:
    import torch

    if plan.threads:
        torch.set_num_threads(plan.threads)
    seeds = list(plan.seeds)
    metric = records[seeds[0]]["valid_metric"]
    boosts = sorted({r["chosen_repeat_boost"] for r in records.values()
                     if r.get("chosen_repeat_boost") is not None}) or [None]
    t0 = time.perf_counter()

    def load(refit: bool) -> Ranking:
        return Ranking(plan, [model_path(out, s, expected, refit) for s in seeds],
                       checkpoint_dir=scratch)

    checks = []
    ranking = load(refit=False)
    for index, seed in enumerate(seeds):
        got = ranking.alone(index, ranking.loaded.valid_data)
        diff = _check(seed, "trained", got, records[seed]["sweep"][0]["valid"])
        checks.append({"seed": seed, "model": "trained", "split": "valid", "max_diff": diff})
        say(f"ensemble: seed {seed}'s model reproduces its record (valid {metric} "
            f"{got[metric]:.4f})", flush=True)
    sweep = ranking.sweep(scorer_grid(plan, boosts), say, prefix="ensemble: ")
    best = best_point(sweep, metric)
    chosen = (best["alpha"], best["repeat_boost"])
    scorer = scorer_of(best)
    test_plain, test_fused = ranking.tested(chosen, scorer)
    say(f"ensemble: chose {point_text(*chosen, scorer if ranking.named else None)} on "
        f"validation; test {metric} {test_plain[metric]:.4f} (alpha 0) -> "
        f"{test_fused[metric]:.4f}", flush=True)
    result = {
        "format": FORMAT, "settings_hash": expected, "seeds": seeds, "valid_metric": metric,
        "repeat_boosts": boosts, "sweep": sweep, "chosen_alpha": best["alpha"],
        "chosen_repeat_boost": best["repeat_boost"], "test_plain": test_plain,
        "test_fused": test_fused, "member_checks": checks, "refit": None,
    }
    if ranking.named:
        result["chosen_scorer"] = scorer
    del ranking
    if plan.refit:
        ranking = load(refit=True)
        for index, seed in enumerate(seeds):
            got = ranking.alone(index, ranking.loaded.test_data)
            diff = _check(seed, "refit", got, records[seed]["refit"]["test_plain"])
            checks.append({"seed": seed, "model": "refit", "split": "test", "max_diff": diff})
        refit_plain, refit_fused = ranking.tested(chosen, scorer)
        result["refit"] = {"test_plain": refit_plain, "test_fused": refit_fused}
        say(f"ensemble of the refits: test {metric} {refit_plain[metric]:.4f} (alpha 0) -> "
            f"{refit_fused[metric]:.4f}", flush=True)
    result["seconds"] = time.perf_counter() - t0
    return result


def run(plan: FusionPlan, out: Path, expected: str, *, seeds: Sequence[int] | None = None,
        progress: bool = True) -> dict | None:
    """Do the ensemble step if every seed is recorded and it is not done yet; returns its result.

    Missing model files are rebuilt for ``seeds`` only (default: all); the ensemble is evaluated
    once every member's file is there."""
    say = print if progress else (lambda *a, **k: None)
    records = _records(plan, out, expected)
    if records is None:
        say("ensemble: waits until every seed is recorded"
            + (" and refitted" if plan.refit else ""), flush=True)
        return None
    done = read(out, expected, plan)
    if done is not None:
        return done
    ensure_models(plan, out, expected, records, plan.seeds if seeds is None else seeds, say)
    missing = missing_models(plan, out, expected)
    if missing:
        others = sorted({seed for seed, _ in missing})
        say(f"ensemble: waits for the model files of seed(s) {', '.join(map(str, others))} "
            f"(built by: --seeds {' '.join(map(str, others))})", flush=True)
        return None
    work = out / "partial" / f"ensemble-{expected}"  # claimed while evaluated (nothing in it)
    with claimed(work) as mine:
        if not mine:
            fusion_seed.say_held(say, "ensemble: evaluation", work)
            return None
        done = read(out, expected, plan)
        if done is not None:
            return done  # evaluated by another process meanwhile
        say(f"ensemble of seeds {', '.join(map(str, plan.seeds))}: checking the members, then "
            "choosing alpha on validation", flush=True)
        result = evaluate(plan, out, expected, records, say)
        with atomic_outputs([result_path(out)]) as (tmp,):
            Path(tmp).write_text(json.dumps(result, indent=1, sort_keys=True))
    with contextlib.suppress(OSError):
        work.parent.rmdir()  # partial/, when nothing else is in progress
    return result
