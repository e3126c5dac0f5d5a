"""A fusion config (SR-GNN + a non-neural scorer), the identity of its seeds, where they are kept.

``benchmarks/configs/fusion/*.yaml`` are such configs. A seed's record is valid while the
settings hash (model, dataset, config files' text, settings, alphas, repeat boosts) matches; a
model trained before (``--trained``) must have been trained with the config's settings, less
those that do not change training (``run_identity``). Of the settings, the rules' options
(``rule_steps``, ``rule_repeat_boost``: ``EVAL_ONLY``) are read by the evaluation only.

``scorers`` (optional) lists the non-neural scorers tried with the model, each with its options
and, optionally, its own alphas: ``[SequenceRules, {SKNN: {k: 50, alphas: [0.01]}}, ...]``.
Without it the scorer is the sequence rules alone, exactly as before the key existed (same
settings hash, same records).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from recbole_srgnn.errors import InputError
from recbole_srgnn.experiments.compare_collect import METRICS as METRIC_LABELS
from recbole_srgnn.experiments.results_dir import config_checkout
from recbole_srgnn.run_identity import EVAL_ONLY, RESUME_EXEMPT, without_added_defaults

FORMAT = "fusion-1"  # part of every seed's settings hash; bump when a record means something else
TOP_KEYS = {"name", "description", "dataset", "model", "config_files", "settings", "seeds",
            "threads", "alphas", "repeat_boosts", "references", "refit", "ensemble", "scorers"}
RESERVED = {"seed", "rule_fusion", "checkpoint_dir", "model", "dataset", "train_on_valid"}
METRICS = [key for key, _ in METRIC_LABELS]  # the comparison report's metrics and labels
LABELS = dict(METRIC_LABELS)


def label(metric: str) -> str:
    """``hit@10`` -> ``Hit@10`` (``hit@1`` also says it is next-item accuracy)."""
    if metric in LABELS:
        return LABELS[metric]
    family, _, k = metric.partition("@")
    return {"hit": "Hit", "mrr": "MRR", "ndcg": "NDCG"}.get(family, family) + "@" + k


RULES = "SequenceRules"  # the scorer of a config without 'scorers'


@dataclass(frozen=True)
class ScorerSpec:
    """One scorer of a fusion config: its name, its options (kNN: the model's keys; the rules'
    options are ``settings.rule_steps`` and ``repeat_boosts``) and its alphas (None: the plan's)."""

    name: str
    options: dict = field(default_factory=dict)
    alphas: list[float] | None = None

    def as_json(self) -> dict:
        return {"name": self.name, "options": dict(self.options), "alphas": self.alphas}


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
    ensemble: bool = False  # also rank with all seeds' models together (fusion_ensemble)
    scorers: list[ScorerSpec] | None = None  # None: the sequence rules only (the records as before)
    root: Path | None = None  # the checkout the config's relative paths are written from

    def resolve(self, name: str) -> Path:
        """A path as written in the config: relative to the checkout if it is there, else as given."""
        if self.root is not None and (self.root / name).is_file():
            return self.root / name
        return Path(name)

    def read(self, name: str) -> str:
        """The text of a file the config names."""
        return self.resolve(name).read_text()

    def config_paths(self) -> list[str]:
        """The config files, resolved, in the config's order."""
        return [str(self.resolve(f)) for f in self.config_files]

    def scorer_specs(self) -> list[ScorerSpec]:
        """The scorers tried, in the config's order (default: the sequence rules)."""
        return list(self.scorers) if self.scorers is not None else [ScorerSpec(RULES)]

    def alphas_of(self, spec: ScorerSpec) -> list[float]:
        return spec.alphas if spec.alphas is not None else self.alphas


def _fail(where: str, message: str) -> None:
    raise InputError(f"{where}: {message}")


def _positive_numbers(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(a, (int, float)) and not isinstance(a, bool) and a > 0 for a in value)


def parse_scorers(value: Any, where: str) -> list[ScorerSpec]:
    """The ``scorers`` list: names, or ``{name: {option: value, ..., alphas: [...]}}``."""
    from recbole_srgnn.model import scorers

    if not isinstance(value, list) or not value:
        _fail(where, "'scorers' must be a non-empty list of scorer names or {name: options}")
    specs = []
    for entry in value:
        if isinstance(entry, str):
            name, options = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            name, options = next(iter(entry.items()))
            options = {} if options is None else options
        else:
            _fail(where, f"'scorers': {entry!r} is neither a scorer name nor {{name: options}}")
        if name not in scorers.NAMES:
            _fail(where, f"'scorers': unknown scorer {name!r} "
                         f"(scorers: {', '.join(scorers.NAMES)})")
        if not isinstance(options, dict):
            _fail(where, f"'scorers': the options of {name} must be a mapping")
        options = dict(options)
        alphas = options.pop("alphas", None)
        if alphas is not None and not _positive_numbers(alphas):
            _fail(where, f"'scorers': the alphas of {name} must be a non-empty list of positive "
                         "numbers")
        if name == RULES and options:
            _fail(where, f"'scorers': {RULES} takes only 'alphas' here (its options are "
                         "settings.rule_steps and repeat_boosts)")
        try:
            scorers.full_options(name, options)
        except ValueError as exc:
            _fail(where, f"'scorers': {exc}")
        specs.append(ScorerSpec(name, options, None if alphas is None
                                else sorted({float(a) for a in alphas})))
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        _fail(where, "'scorers': each scorer may be listed once")
    return specs


def parse_plan(data: Any, where: str = "<config>", root: Path | None = None) -> FusionPlan:
    """Validate a fusion config (YAML mapping) whose relative paths are written from the checkout
    ``root``; every mistake is one InputError line."""
    if not isinstance(data, dict):
        _fail(where, "expected a mapping at the top level")
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        _fail(where, f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(TOP_KEYS))})")
    for key in ("name", "dataset"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            _fail(where, f"'{key}' must be a non-empty string")
    plan = FusionPlan(name=data["name"], dataset=data["dataset"], root=root)
    if not all(c.isalnum() or c in "-_." for c in plan.name):
        _fail(where, f"'name' {plan.name!r} may hold only letters, digits, '-', '_' and '.'")
    if "model" in data:
        if data["model"] != "SRGNN":
            _fail(where, "'model' must be SRGNN (the trained model of 'SR-GNN + rules')")
    plan.description = str(data.get("description") or "").strip()
    files = data.get("config_files") or []
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        _fail(where, "'config_files' must be a list of YAML paths")
    for name in files:
        if not plan.resolve(name).is_file():
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
    if not _positive_numbers(alphas):
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
    if "scorers" in data:
        plan.scorers = parse_scorers(data["scorers"], where)
    return plan


def load_plan(path: str | os.PathLike) -> FusionPlan:
    from recbole_srgnn.yaml_files import parse_yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(f"config {path} not found")
    return parse_plan(parse_yaml(path.read_text(), str(path)), str(path), config_checkout(path))


def settings_hash(plan: FusionPlan) -> str:
    """What a seed's record depends on: model, dataset, config files' text, settings, alphas,
    the scorers when the config lists them (not ``refit`` or ``ensemble``: both are added to
    finished records, which stay valid)."""
    files = {name: plan.read(name) for name in plan.config_files}
    parts = [FORMAT, plan.model, plan.dataset, files, without_added_defaults(plan.settings),
             plan.alphas, plan.repeat_boosts]
    if plan.scorers is not None:  # a config without the key hashes as before it existed
        parts.append([spec.as_json() for spec in plan.scorers])
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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


def read_seed(path: Path, expected_hash: str) -> dict | None:
    """A finished seed's record, or None when missing, unreadable or from other settings."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("settings_hash") == expected_hash else None


def expected_settings(plan: FusionPlan, seed: int) -> dict:
    """The options a seed's training uses: the config files, then ``settings``, then the seed."""
    from recbole_srgnn.training.config import load_yaml

    merged: dict = {}
    for path in plan.config_paths():
        merged.update(load_yaml(path))
    merged.update(plan.settings)
    merged["seed"] = seed
    return merged


def check_trained(plan: FusionPlan, seed: int, trained: Mapping, where: str) -> None:
    """InputError unless ``trained`` (a run.py results JSON) is this plan's model for ``seed``."""
    config = trained.get("config") or {}
    if trained.get("model") != plan.model or trained.get("dataset") != plan.dataset:
        raise InputError(f"{where} is {trained.get('model')} on {trained.get('dataset')}, "
                         f"not {plan.model} on {plan.dataset}")
    # where files go / how progress shows (the trainer's list), and what only evaluation reads
    ignored = {*RESUME_EXEMPT, *EVAL_ONLY}
    for key, value in expected_settings(plan, seed).items():
        if key in ignored:
            continue
        if json.dumps(config.get(key), sort_keys=True) != json.dumps(value, sort_keys=True):
            raise InputError(f"{where} was trained with {key}={config.get(key)!r}, "
                             f"the config asks for {value!r}")
    if not trained.get("checkpoint") or not Path(trained["checkpoint"]).is_file():
        raise InputError(f"{where}: its checkpoint {trained.get('checkpoint')} is missing")


def point_text(alpha: float, boost: float | None, scorer: str | None = None) -> str:
    """``alpha 0.05, repeat boost 2`` (no boost when the sweep had none), ``SKNN, alpha 0.01``
    with a named scorer."""
    text = f"alpha {alpha:g}" + ("" if boost is None else f", repeat boost {boost:g}")
    return text if scorer is None else f"{scorer}, {text}"
