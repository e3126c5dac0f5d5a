"""SR-GNN + sequence rules: choose the fusion weight on validation, report the test result.

The SRGNN option ``rule_fusion`` (``recbole_srgnn/model/srgnn.py``) ranks items by
``softmax(SR-GNN scores) + alpha * rules(session)`` at evaluation time only. Training does not
depend on ``alpha``, so this runner trains each seed once, through the same pipeline as
``run.py`` (or takes a model trained before with ``run.py``: ``--trained``), and then evaluates
the best checkpoint on the *validation* split for every ``alpha`` x rules' repeat boost of the
config. The point with the best validation metric is the only fused one tested; ``alpha = 0``
(the trained model alone) is always tested too, as the paired reference. Test metrics choose
nothing.

    python -m benchmarks.fusion --config benchmarks/configs/fusion/cotrec.yaml
    python -m benchmarks.fusion --config ... --seeds 2      # one seed (one per core in parallel)
    python -m benchmarks.fusion --config ... --trained 1=results.json  # seed 1 trained by run.py
    python -m benchmarks.fusion --config ... --only-report  # rebuild the report from finished seeds

With ``refit: true`` each recorded seed is then trained once more, on the training *and*
validation cases (the pipeline's ``train_on_valid``), for the number of epochs its validation
chose, and tested alone and fused at the alpha chosen before (a final fit: nothing is chosen on
it). The refit is added to the seed's record, which stays valid.

Every recorded seed's model (and refit) is kept in ``<out>/models/`` (git-ignored). With
``ensemble: true`` the seeds' models then also rank together, once all seeds are recorded
(``benchmarks/ensemble.py``: mean of their probabilities plus the rules, alpha chosen on
validation); ``--model-file``/``--refit-file SEED=CHECKPOINT`` supply models recorded before
they were kept, and a missing one is trained again.

Finished seeds (``benchmarks/results/<name>/runs/seed<N>.json``) are never redone. A seed cut off
mid-way goes on where it stopped: its training state after every epoch (``pipeline.run``'s
``resume_file``), its best checkpoint and its training result wait in
``<out>/partial/seed<N>-<settings hash>/`` (not committed, removed once the seed is recorded), so
a rerun continues training at the next epoch, or goes straight to the sweep if training ended.
The report (``report.md``, ``runs.csv``, ``alpha_valid.png``) covers the finished seeds and says
so when some are missing.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from recbole_srgnn.errors import InputError
from recbole_srgnn.experiments.machine import machine
from recbole_srgnn.experiments.stats import mean_std, paired_test
from recbole_srgnn.experiments.tables import csv_text, md_table, mean_std_text, p_text
from recbole_srgnn.files import atomic_outputs, claimed, held_elsewhere
from recbole_srgnn.run_identity import EVAL_ONLY, RESUME_EXEMPT, without_added_defaults

from .report import METRICS as METRIC_LABELS
from .report import SIGNIFICANCE_METRICS

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
FORMAT = "fusion-1"  # part of every seed's settings hash; bump when a record means something else
TOP_KEYS = {"name", "description", "dataset", "model", "config_files", "settings", "seeds",
            "threads", "alphas", "repeat_boosts", "references", "refit", "ensemble"}
RESERVED = {"seed", "rule_fusion", "checkpoint_dir", "model", "dataset", "train_on_valid"}
METRICS = [key for key, _ in METRIC_LABELS]  # the comparison report's metrics and labels
LABELS = dict(METRIC_LABELS)


def label(metric: str) -> str:
    """``hit@10`` -> ``Hit@10`` (``hit@1`` also says it is next-item accuracy)."""
    if metric in LABELS:
        return LABELS[metric]
    family, _, k = metric.partition("@")
    return {"hit": "Hit", "mrr": "MRR", "ndcg": "NDCG"}.get(family, family) + "@" + k


@dataclass
class FusionPlan:
    name: str
    dataset: str
    model: str = "SRGNN"
    description: str = ""
    config_files: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    threads: int | None = 1
    alphas: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    repeat_boosts: list[float] | None = None  # rule_repeat_boost values swept with alpha (None: the setting's)
    references: dict = field(default_factory=dict)  # label -> [compare run JSONs]
    refit: bool = False  # also train each recorded seed again on train + valid (train_on_valid)
    ensemble: bool = False  # also rank with all seeds' models together (benchmarks/ensemble.py)


def _fail(where: str, message: str) -> None:
    raise InputError(f"{where}: {message}")


def parse_plan(data: Any, where: str = "<config>") -> FusionPlan:
    """Validate a fusion config (YAML mapping); every mistake is one InputError line."""
    if not isinstance(data, dict):
        _fail(where, "expected a mapping at the top level")
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        _fail(where, f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(TOP_KEYS))})")
    for key in ("name", "dataset"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            _fail(where, f"'{key}' must be a non-empty string")
    plan = FusionPlan(name=data["name"], dataset=data["dataset"])
    if not all(c.isalnum() or c in "-_." for c in plan.name):
        _fail(where, f"'name' {plan.name!r} may hold only letters, digits, '-', '_' and '.'")
    if "model" in data:
        if data["model"] != "SRGNN":
            _fail(where, "'model' must be SRGNN (the model with the rule_fusion option)")
    plan.description = str(data.get("description") or "").strip()
    files = data.get("config_files") or []
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        _fail(where, "'config_files' must be a list of YAML paths")
    for name in files:
        if not _resolve(name).is_file():
            _fail(where, f"config file {name} not found")
    plan.config_files = files
    settings = data.get("settings") or {}
    if not isinstance(settings, dict):
        _fail(where, "'settings' must be a mapping of RecBole options")
    clash = sorted(set(settings) & RESERVED)
    if clash:
        _fail(where, f"'settings' may not set {', '.join(clash)} (the runner sets them)")
    plan.settings = settings
    seeds = data.get("seeds", plan.seeds)
    if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        _fail(where, "'seeds' must be a non-empty list of distinct integers")
    plan.seeds = seeds
    threads = data.get("threads", plan.threads)
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        _fail(where, "'threads' must be a positive integer or null")
    plan.threads = threads
    alphas = data.get("alphas", plan.alphas)
    if (not isinstance(alphas, list) or not alphas
            or not all(isinstance(a, (int, float)) and not isinstance(a, bool) and a > 0 for a in alphas)):
        _fail(where, "'alphas' must be a non-empty list of positive numbers (0 is always evaluated)")
    plan.alphas = sorted({float(a) for a in alphas})
    boosts = data.get("repeat_boosts")
    if boosts is not None:
        if (not isinstance(boosts, list) or not boosts or not all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and b >= 0 for b in boosts)):
            _fail(where, "'repeat_boosts' must be a non-empty list of numbers >= 0")
        if "rule_repeat_boost" in plan.settings:
            _fail(where, "set the rules' repeat boost in 'repeat_boosts' or in 'settings', not both")
        plan.repeat_boosts = sorted({float(b) for b in boosts})
    references = data.get("references") or {}
    if not isinstance(references, dict) or not all(
            isinstance(v, list) and all(isinstance(p, str) for p in v) for v in references.values()):
        _fail(where, "'references' must map a label to a list of result JSON paths")
    plan.references = {str(k): v for k, v in references.items()}
    refit = data.get("refit", False)
    if not isinstance(refit, bool):
        _fail(where, "'refit' must be true or false")
    plan.refit = refit
    ensemble = data.get("ensemble", False)
    if not isinstance(ensemble, bool):
        _fail(where, "'ensemble' must be true or false")
    if ensemble and len(plan.seeds) < 2:
        _fail(where, "'ensemble' needs at least two seeds")
    plan.ensemble = ensemble
    return plan


def load_plan(path: str | os.PathLike) -> FusionPlan:
    from recbole_srgnn.yaml_files import parse_yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(f"config {path} not found")
    return parse_plan(parse_yaml(path.read_text(), str(path)), str(path))


def settings_hash(plan: FusionPlan) -> str:
    """What a seed's record depends on: model, dataset, config files' text, settings, alphas
    (not ``refit`` or ``ensemble``: both are added to finished records, which stay valid)."""
    files = {name: _read(name) for name in plan.config_files}
    blob = json.dumps([FORMAT, plan.model, plan.dataset, files,
                       without_added_defaults(plan.settings), plan.alphas, plan.repeat_boosts],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _resolve(name: str) -> Path:
    """A path as written in a config: relative to the repository if it is there, else as given."""
    return REPO / name if (REPO / name).is_file() else Path(name)


def _read(name: str) -> str:
    return _resolve(name).read_text()


def _config_paths(plan: FusionPlan) -> list[str]:
    return [str(_resolve(f)) for f in plan.config_files]


def seed_path(out: Path, seed: int) -> Path:
    return out / "runs" / f"seed{seed}.json"


def partial_path(out: Path, seed: int, expected_hash: str) -> Path:
    """The work folder of a seed in progress (training state, checkpoint, training result)."""
    return out / "partial" / f"seed{seed}-{expected_hash}"


def refit_path(out: Path, seed: int, expected_hash: str) -> Path:
    """The work folder of a seed's refit in progress."""
    return out / "partial" / f"seed{seed}-{expected_hash}-refit"


def model_path(out: Path, seed: int, expected_hash: str, refit: bool = False) -> Path:
    """Where a recorded seed's model is kept (git-ignored): its best checkpoint, or its refit."""
    return out / "models" / f"seed{seed}-{expected_hash}{'-refit' if refit else ''}.pth"


def needs_refit(plan: FusionPlan, record: Mapping | None) -> bool:
    return bool(plan.refit and record is not None and not record.get("refit"))


def _finished_training(path: Path) -> dict | None:
    """The training result a cut-off seed left behind, if it and its checkpoint are complete."""
    try:
        trained = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    checkpoint = trained.get("checkpoint")
    return trained if checkpoint and Path(checkpoint).is_file() else None


def read_seed(path: Path, expected_hash: str) -> dict | None:
    """A finished seed's record, or None when missing, unreadable or from other settings."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("settings_hash") == expected_hash else None


# ---------------------------------------------------------------------------------------------
# One seed: train, sweep alpha on validation, test the chosen alpha and alpha = 0
# ---------------------------------------------------------------------------------------------
def _metrics(result: Mapping | None) -> dict:
    return {str(k).lower(): float(v) for k, v in (result or {}).items()}


def expected_settings(plan: FusionPlan, seed: int) -> dict:
    """The options a seed's training uses: the config files, then ``settings``, then the seed."""
    from recbole_srgnn import pipeline

    merged: dict = {}
    for path in _config_paths(plan):
        merged.update(pipeline.load_yaml(path))
    merged.update(plan.settings)
    merged["seed"] = seed
    return merged


def check_trained(plan: FusionPlan, seed: int, trained: Mapping, where: str,
                  extra: Mapping | None = None) -> None:
    """InputError unless ``trained`` (a run.py results JSON) is this plan's model for ``seed``
    (``extra``: settings a refit adds, e.g. ``train_on_valid``)."""
    config = trained.get("config") or {}
    if trained.get("model") != plan.model or trained.get("dataset") != plan.dataset:
        raise InputError(f"{where} is {trained.get('model')} on {trained.get('dataset')}, "
                         f"not {plan.model} on {plan.dataset}")
    # where files go / how progress shows (the trainer's list), and what only evaluation reads
    ignored = {*RESUME_EXEMPT, *EVAL_ONLY}
    for key, value in {**expected_settings(plan, seed), **(extra or {})}.items():
        if key in ignored:
            continue
        if json.dumps(config.get(key), sort_keys=True) != json.dumps(value, sort_keys=True):
            raise InputError(f"{where} was trained with {key}={config.get(key)!r}, "
                             f"the config asks for {value!r}")
    if not trained.get("checkpoint") or not Path(trained["checkpoint"]).is_file():
        raise InputError(f"{where}: its checkpoint {trained.get('checkpoint')} is missing")


def train_seed(plan: FusionPlan, seed: int, scratch: Path, say=print, *,
               refit_epochs: int | None = None) -> dict:
    """Train the plan's model for ``seed`` in ``scratch`` (or reuse a training finished there;
    a cut-off one continues at its next epoch). Returns the pipeline's training result.

    ``refit_epochs``: train the final fit instead, on training + validation cases
    (``train_on_valid``) for exactly that many epochs."""
    import torch

    from recbole_srgnn import pipeline

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

    trained = pipeline.run(
        plan.model, plan.dataset, _config_paths(plan), config_dict, saved=True, quiet=True,
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

    from recbole_srgnn import pipeline

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
    loaded = pipeline.load_trained(trained["checkpoint"],
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
        return _metrics(trainer.evaluate(data, load_best_model=False))

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

    from recbole_srgnn import pipeline

    if plan.threads:
        torch.set_num_threads(plan.threads)
    say = print if progress else (lambda *a, **k: None)
    seed, epochs = record["seed"], int(record["best_epoch"]) + 1
    trained = train_seed(plan, seed, scratch, say, refit_epochs=epochs)
    evaluation = {k: plan.settings[k] for k in EVAL_ONLY if k in plan.settings}
    alpha, boost = record["chosen_alpha"], record.get("chosen_repeat_boost")
    loaded = pipeline.load_trained(trained["checkpoint"],
                                   {**evaluation, "rule_fusion": alpha or max(plan.alphas),
                                    "threads": plan.threads}, quiet=True)
    net, trainer = loaded.trainer.model, loaded.trainer

    def evaluate(a: float) -> dict:
        net.rule_fusion = a
        if boost is not None:
            net.rules.repeat_boost = boost
        return _metrics(trainer.evaluate(loaded.test_data, load_best_model=False))

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


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def _reference_rows(plan: FusionPlan) -> dict[str, list[dict]]:
    rows = {}
    for name, paths in plan.references.items():
        found = []
        for path in paths:
            try:
                found.append(json.loads(_read(path)))
            except (OSError, ValueError):
                continue
        rows[name] = found
    return rows


def _row(label: str, tests: Sequence[Mapping]) -> list[str]:
    cells = [label, str(len(tests))]
    for m in METRICS:
        cells.append(mean_std_text(*mean_std([t[m] for t in tests if m in t])))
    return cells


def _chosen(record: Mapping, point: Mapping) -> bool:
    return (point["alpha"] == record["chosen_alpha"]
            and point.get("repeat_boost") == record.get("chosen_repeat_boost"))


def _point(alpha: float, boost: float | None) -> str:
    return f"alpha {alpha:g}" + ("" if boost is None else f", repeat boost {boost:g}")


def _boosts(records: Sequence[dict], plan: FusionPlan) -> list[float]:
    if plan.repeat_boosts:
        return plan.repeat_boosts
    found = sorted({b for r in records for b in (r.get("rules") or {}).get("rule_repeat_boost") or []})
    return found or [float(plan.settings.get("rule_repeat_boost", 0.0))]


def _rule_text(records: Sequence[dict]) -> str:
    found = {json.dumps(r.get("rules"), sort_keys=True) for r in records}
    if len(found) != 1 or not records or not records[0].get("rules"):
        return "`rule_steps`, `rule_repeat_boost` as each seed's record says"
    return f"`rule_steps: {records[0]['rules']['rule_steps']}`"


def _paired_table(records: Sequence[dict], first, second) -> list[str]:
    """Paired tests over seeds of ``first(record)`` − ``second(record)`` test metrics."""
    rows = []
    for m in SIGNIFICANCE_METRICS:
        test = paired_test({r["seed"]: first(r)[m] for r in records},
                           {r["seed"]: second(r)[m] for r in records})
        rows.append([label(m), str(test["n"]),
                     f"{test['diff']:+.4f}" if test["diff"] is not None else "–",
                     p_text(test["t_p"]), p_text(test["w_p"]), test["note"]])
    return md_table(["metric", "n", "diff", "t-test p", "Wilcoxon p", "note"], rows)


def render(plan: FusionPlan, records: Sequence[dict], command: str,
           ensembled: Mapping | None = None) -> str:
    missing = [s for s in plan.seeds if s not in {r["seed"] for r in records}]
    metric = records[0]["valid_metric"] if records else "mrr@10"
    lines = [f"# SR-GNN + sequence rules (rule_fusion): `{plan.name}`", ""]
    if missing:
        lines += [f"> **PARTIAL: {len(records)} of {len(plan.seeds)} seeds finished** (missing: "
                  f"{', '.join(map(str, missing))}). Rerun the command at the end to resume.", ""]
    if plan.description:
        lines += [plan.description, ""]
    data = records[0]["data"] if records else {}
    lines += [
        f"- Dataset: `{plan.dataset}` ({data.get('num_items')} items; {data.get('train_cases')} train / "
        f"{data.get('valid_cases')} valid / {data.get('test_cases')} test cases).",
        f"- Trained model: `{plan.model}` with {', '.join(f'`{f}`' for f in plan.config_files) or 'its defaults'}"
        f" and settings `{json.dumps(plan.settings, sort_keys=True)}`; seeds "
        f"{', '.join(map(str, plan.seeds))}; torch threads {plan.threads}.",
        "- Protocol: each seed trains once (`rule_fusion: 0`; validation every epoch, early stopping "
        f"on validation {metric}), then its best checkpoint ranks items by "
        "`softmax(SR-GNN) + alpha * rules` for alpha in "
        f"{{0, {', '.join(f'{a:g}' for a in plan.alphas)}}} × the rules' repeat boost in "
        f"{{{', '.join(f'{b:g}' for b in _boosts(records, plan))}}} on the **validation** split; the "
        f"point with the best validation {metric} is tested, and so is alpha = 0 (the model alone) for "
        "the paired comparison. The rules are the SequenceRules scorer of the same training split "
        f"({_rule_text(records)}). Test metrics choose nothing.",
    ]
    refits = [r for r in records if r.get("refit")]
    if plan.refit or refits:
        lines.append(
            "- Refit (final fit): after its sweep, each seed's model is trained again, same "
            "settings and seed, on the training **and validation** cases (`train_on_valid`) for "
            "the number of epochs its validation chose (best epoch), and that last epoch is tested "
            "alone and with the rules (now counted on training + validation cases) at the alpha and "
            "repeat boost chosen before. Nothing is chosen on the refit: the validation cases are "
            f"training data there. Refitted seeds: {len(refits)} of {len(plan.seeds)}.")
    lines += ["", "## Test results (mean ± std over seeds)", ""]
    header = ["model", "seeds", *[label(m) for m in METRICS]]
    table = [_row("SR-GNN option alone (alpha = 0)", [r["test_plain"] for r in records]),
             _row("SR-GNN + rules (alpha chosen on validation)", [r["test_fused"] for r in records])]
    if refits:
        table += [_row("refit on train + valid, alone", [r["refit"]["test_plain"] for r in refits]),
                  _row("refit on train + valid + rules (same alpha)",
                       [r["refit"]["test_fused"] for r in refits])]
    if ensembled:
        from . import ensemble

        table += ensemble.table_rows(ensembled)
    for name, runs in _reference_rows(plan).items():
        table.append(_row(f"{name} (reference)", [_metrics(r.get("test_result")) for r in runs]))
    lines += md_table(header, table)
    lines += ["", "Chosen alpha per seed: " + (", ".join(
        f"seed {r['seed']}: {_point(r['chosen_alpha'], r.get('chosen_repeat_boost'))}"
        for r in records) or "–") + ".", ""]
    lines += ["## Fused vs the model alone: paired over seeds", "",
              "Two-sided paired t-test and Wilcoxon signed-rank test over training seeds on one "
              "fixed test set (p < 0.05 in bold); diff = fused − alone.", ""]
    lines += _paired_table(records, lambda r: r["test_fused"], lambda r: r["test_plain"])
    if refits:
        lines += ["", "## Refit on train + valid vs trained on train only (both with the rules)",
                  "", "Same tests, over the refitted seeds; diff = refit − train only.", ""]
        lines += _paired_table(refits, lambda r: r["refit"]["test_fused"], lambda r: r["test_fused"])
    if ensembled:
        lines += [""] + ensemble.report_lines(ensembled, data.get("test_cases"))
    elif plan.ensemble:
        lines += ["", "## Ensemble of the seeds' models", "",
                  "Not measured yet: it runs once every seed is recorded"
                  + (" and refitted." if plan.refit else ".")]
    lines += ["", f"## Validation {label(metric)} by alpha", ""]
    sweep_rows = []
    for r in records:
        for s in r["sweep"]:
            sweep_rows.append([str(r["seed"]), f"{s['alpha']:g}",
                               "–" if s.get("repeat_boost") is None else f"{s['repeat_boost']:g}",
                               f"{s['valid'][metric]:.4f}", f"{s['valid']['hit@10']:.4f}",
                               "yes" if _chosen(r, s) else ""])
    lines += md_table(["seed", "alpha", "repeat boost", f"valid {label(metric)}", "valid Hit@10",
                        "chosen"], sweep_rows)
    lines += ["", "![validation by alpha](alpha_valid.png)", "", "## Training", ""]
    lines += md_table(
        ["seed", "trained by", "epochs trained", "best epoch (from 1)", "train s/epoch", "peak RSS MB"],
        [[str(r["seed"]), r.get("trained_by", "–"), str(r["epochs_trained"]), str(r["best_epoch"] + 1),
          f"{r['seconds_per_epoch']:.1f}" if r["seconds_per_epoch"] else "–",
          f"{r['peak_rss_mb']:.0f}" if r.get("peak_rss_mb") else "–"] for r in records])
    if refits:
        lines += ["", "Refit on train + valid:", ""]
        lines += md_table(
            ["seed", "training cases", "epochs", "train s/epoch", "peak RSS MB"],
            [[str(r["seed"]), str(r["refit"].get("train_cases")), str(r["refit"]["epochs"]),
              f"{r['refit']['seconds_per_epoch']:.1f}" if r["refit"].get("seconds_per_epoch") else "–",
              f"{r['refit']['peak_rss_mb']:.0f}" if r["refit"].get("peak_rss_mb") else "–"]
             for r in refits])
    box = machine()
    versions = records[0]["versions"] if records else {}
    lines += ["", "## Machine and versions", "",
              f"- {box['cpu']}, {box['cores']} cores, {box['memory_gib']} GiB, {box['os']}, "
              f"Python {box['python']}; CPU only.",
              "- " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()) if v), "",
              "## Regenerate", "", f"    {command}", ""]
    return "\n".join(lines)


def run_rows(records: Sequence[dict]) -> list[dict]:
    rows = []
    for r in records:
        for s in r["sweep"]:
            row = {"seed": r["seed"], "alpha": s["alpha"], "repeat_boost": s.get("repeat_boost"),
                   "split": "valid", "chosen": _chosen(r, s)}
            row.update({m: s["valid"].get(m) for m in METRICS})
            rows.append(row)
        tested = [(0.0, None, r["test_plain"])]
        if r["chosen_alpha"]:
            tested.append((r["chosen_alpha"], r.get("chosen_repeat_boost"), r["test_fused"]))
        split = [("test", t) for t in tested]
        if r.get("refit"):
            refit = r["refit"]
            split.append(("test-refit", (0.0, None, refit["test_plain"])))
            if r["chosen_alpha"]:
                split.append(("test-refit", (r["chosen_alpha"], r.get("chosen_repeat_boost"),
                                             refit["test_fused"])))
        for name, (alpha, boost, test) in split:
            row = {"seed": r["seed"], "alpha": alpha, "repeat_boost": boost, "split": name,
                   "chosen": alpha == r["chosen_alpha"]}
            row.update({m: test.get(m) for m in METRICS})
            rows.append(row)
    return rows


def _plot(records: Sequence[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for r in records:
        metric = r["valid_metric"]
        plain = r["sweep"][0]
        for boost in sorted({s["repeat_boost"] for s in r["sweep"][1:]}):
            line = [plain] + [s for s in r["sweep"][1:] if s["repeat_boost"] == boost]
            ax.plot([s["alpha"] for s in line], [s["valid"][metric] for s in line], marker="o",
                    label=f"seed {r['seed']}, repeat boost {boost:g}")
    if records:
        ax.set_ylabel(f"validation {label(records[0]['valid_metric'])}")
    ax.set_xlabel("alpha (weight of the rules)")
    ax.set_xscale("symlog", linthresh=0.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def write_report(plan: FusionPlan, out: Path, command: str) -> Path:
    expected = settings_hash(plan)
    records = [r for s in plan.seeds if (r := read_seed(seed_path(out, s), expected))]
    from . import ensemble

    ensembled = ensemble.read(out, expected, plan) if plan.ensemble else None
    report = out / "report.md"
    with atomic_outputs([out / "runs.csv", out / "alpha_valid.png", report]) as (csv_file, png, md):
        Path(md).write_text(render(plan, records, command, ensembled))
        rows = run_rows(records) + (ensemble.csv_rows(ensembled) if ensembled else [])
        Path(csv_file).write_text(csv_text(rows, ["seed", "alpha", "repeat_boost", "split", "chosen", *METRICS]))
        _plot(records, Path(png))
    return report


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def _seed_and_path(item: str, flag: str, what: str) -> tuple[int, str]:
    """``"1=a.json"`` -> ``(1, "a.json")``; InputError naming ``flag`` and ``what`` otherwise."""
    seed_text, sep, name = item.partition("=")
    if not sep or not seed_text.strip().lstrip("-").isdigit() or not name:
        raise InputError(f"{flag} {item}: expected SEED={what}")
    return int(seed_text), name


def _parse_trained(items: Sequence[str], plan: FusionPlan) -> dict[int, dict]:
    """``["1=a.json", ...]`` -> {seed: results}; each checked against the plan (InputError)."""
    given = {}
    for item in items:
        seed, name = _seed_and_path(item, "--trained", "RESULTS_JSON")
        if seed not in plan.seeds:
            raise InputError(f"--trained {item}: seed {seed} is not in the config's seeds {plan.seeds}")
        try:
            trained = json.loads(Path(name).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"--trained {item}: cannot read {name} ({type(exc).__name__})") from None
        if not isinstance(trained, dict):
            raise InputError(f"--trained {item}: {name} is not a run.py results JSON")
        check_trained(plan, seed, trained, name)
        given[seed] = trained
    return given


def keep_model(source: str | os.PathLike, target: Path) -> None:
    """Put a checkpoint at ``target`` (atomically): moved out of a work folder, copied otherwise."""
    source = Path(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.resolve().parent.parent == target.resolve().parent.parent / "partial":
        os.replace(source, target)
        return
    with atomic_outputs([target]) as (tmp,):
        shutil.copyfile(source, tmp)


def _parse_model_files(items: Sequence[str], plan: FusionPlan, out: Path, expected: str, *,
                       refit: bool) -> dict[tuple[int, bool], Path]:
    """``["1=a.pth"]`` -> {(seed, refit): checkpoint}, each checked against the seed's record and
    the plan's settings (InputError otherwise)."""
    from recbole_srgnn.trainer import load_checkpoint

    flag = "--refit-file" if refit else "--model-file"
    given = {}
    for item in items:
        seed, name = _seed_and_path(item, flag, "CHECKPOINT")
        record = read_seed(seed_path(out, seed), expected)
        if record is None:
            raise InputError(f"{flag} {item}: seed {seed} has no finished record to stand for")
        try:
            state = load_checkpoint(name, map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - any unreadable file is one line
            raise InputError(f"{flag} {item}: cannot read {name} ({type(exc).__name__})") from None
        if not refit and (state.get("settings") or {}).get("train_on_valid"):
            raise InputError(f"{flag} {item}: {name} is a refit (train_on_valid); give it to --refit-file")
        extra = {"train_on_valid": True, "epochs": int(record["best_epoch"]) + 1} if refit else None
        check_trained(plan, seed, {"model": state.get("model"), "dataset": state.get("dataset"),
                                   "config": state.get("settings") or {}, "checkpoint": name},
                      f"{flag} {item}", extra)
        given[(seed, refit)] = Path(name)
    return given


def _write_record(out: Path, seed: int, record: Mapping, scratch: Path,
                  model: tuple[str, Path] | None = None) -> None:
    """Write a seed's record atomically, keep its model file (``model``: source, target), then
    drop the work folder it came from."""
    if model is not None:
        keep_model(*model)
    path = seed_path(out, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_outputs([path]) as (tmp,):
        Path(tmp).write_text(json.dumps(record, indent=1, sort_keys=True))
    shutil.rmtree(scratch, ignore_errors=True)  # recorded: its work files are done
    with contextlib.suppress(OSError):
        scratch.parent.rmdir()  # partial/, when no other seed is in progress


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m benchmarks.fusion", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="fusion config YAML (benchmarks/configs/)")
    parser.add_argument("--seeds", type=int, nargs="+", help="run only these seeds of the config")
    parser.add_argument("--only-report", action="store_true", help="train nothing; rebuild the report")
    parser.add_argument("--output", help="results folder (default benchmarks/results/<name>/)")
    parser.add_argument("--trained", nargs="+", default=[], metavar="SEED=JSON",
                        help="use a model trained before with run.py for SEED (its results JSON, "
                             "which names the checkpoint) instead of training it; its settings "
                             "must be the config's")
    parser.add_argument("--model-file", nargs="+", default=[], metavar="SEED=CHECKPOINT",
                        help="with 'ensemble': the best checkpoint of recorded SEED, when its "
                             "model file was not kept (checked: settings, then its numbers)")
    parser.add_argument("--refit-file", nargs="+", default=[], metavar="SEED=CHECKPOINT",
                        help="the same for the refit model of recorded SEED")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def say_held(say, what: str, work: Path) -> None:
    """Say that another process holds ``work`` (see ``recbole_srgnn.files.claimed``)."""
    say(held_elsewhere(what, work) + " (rerun once it ends)", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = load_plan(args.config)
        out = Path(args.output) if args.output else RESULTS_DIR / plan.name
        seeds = plan.seeds
        if args.seeds:
            unknown = sorted(set(args.seeds) - set(plan.seeds))
            if unknown:
                raise InputError(f"--seeds {' '.join(map(str, unknown))} not in the config's seeds "
                                 f"{plan.seeds}")
            seeds = [s for s in plan.seeds if s in args.seeds]
        given = _parse_trained(args.trained, plan)
        if (args.model_file or args.refit_file) and not plan.ensemble:
            raise InputError("--model-file/--refit-file are for configs with 'ensemble: true'")
        command = " ".join(["python -m benchmarks.fusion", "--config", shlex.quote(args.config)])
        expected = settings_hash(plan)
        records = {s: read_seed(seed_path(out, s), expected) for s in seeds}
        todo = [] if args.only_report else [
            s for s in seeds if records[s] is None or needs_refit(plan, records[s])]
        if not args.quiet:
            finished = sum(r is not None for r in records.values())
            refits = sum(r is None or needs_refit(plan, r) for r in records.values())
            print(f"{plan.name}: {len(seeds)} seed(s), {finished} finished, "
                  f"{len(seeds) - finished} to run"
                  + (f", {refits} to refit on train + valid" if plan.refit else ""), flush=True)
        say = (lambda *a, **k: None) if args.quiet else print
        for i, seed in enumerate(todo, 1):
            # another process may run the same command on this folder: claim each step's work
            # folder first, and read the record again once it is ours
            if records[seed] is None:
                scratch = partial_path(out, seed, expected)
                with claimed(scratch) as mine:
                    if not mine:
                        say_held(say, f"[{i}/{len(todo)}] seed {seed}: training", scratch)
                        continue
                    records[seed] = read_seed(seed_path(out, seed), expected)
                    if records[seed] is None:
                        say(f"[{i}/{len(todo)}] seed {seed}: "
                            f"{'trained before' if seed in given else 'training'} {plan.model} on "
                            f"{plan.dataset}", flush=True)
                        record = run_seed(plan, seed, scratch, progress=not args.quiet,
                                          trained=given.get(seed))
                        record["settings_hash"] = expected
                        checkpoint = record.pop("_checkpoint", None)
                        _write_record(out, seed, record, scratch,
                                      checkpoint and (checkpoint, model_path(out, seed, expected)))
                        records[seed] = record
            if needs_refit(plan, records[seed]):
                scratch = refit_path(out, seed, expected)
                with claimed(scratch) as mine:
                    if not mine:
                        say_held(say, f"[{i}/{len(todo)}] seed {seed}: refit", scratch)
                        continue
                    record = records[seed] = read_seed(seed_path(out, seed), expected)
                    if needs_refit(plan, record):
                        say(f"[{i}/{len(todo)}] seed {seed}: refitting {plan.model} on "
                            f"{plan.dataset}", flush=True)
                        record["refit"] = refit_seed(plan, record, scratch, progress=not args.quiet)
                        checkpoint = record["refit"].pop("_checkpoint", None)
                        _write_record(out, seed, record, scratch, checkpoint and (
                            checkpoint, model_path(out, seed, expected, refit=True)))
            with contextlib.suppress(OSError):
                (out / "partial").rmdir()  # when nothing else is in progress
        if plan.ensemble and not args.only_report:
            from . import ensemble

            adopted = {**_parse_model_files(args.model_file, plan, out, expected, refit=False),
                       **_parse_model_files(args.refit_file, plan, out, expected, refit=True)}
            ensemble.run(plan, out, expected, adopted, seeds=seeds, progress=not args.quiet)
        report = write_report(plan, out, command)
        if not args.quiet:
            print(f"report: {report}")
        return 0
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished seeds and the cut-off seed's last epoch are kept; rerun the "
              "command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
