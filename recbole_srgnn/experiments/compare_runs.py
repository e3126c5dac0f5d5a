"""The runs of a comparison: their settings and identity, where their results are, which
are finished, which grid point validation selects, and what is left to run.

A run's results JSON (``<out>/runs/<row>/<tag>-seed<k>.json``) holds a ``compare`` block with a
hash of the run's settings; a complete JSON with the current hash is a finished run, so an
interrupted comparison resumes where it stopped. Selection looks at validation scores only.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from recbole_srgnn.errors import InputError
from recbole_srgnn.experiments.compare_config import Experiment, ModelEntry, point_label
from recbole_srgnn.experiments.tables import duration_text
from recbole_srgnn.files import live_claim
from recbole_srgnn.run_identity import HASH_EXEMPT, without_added_defaults

FORMAT = "compare-1"  # part of every run's settings hash; bump when a run means something else


@dataclass
class RunSpec:
    name: str
    model: str
    dataset: str
    tag: str
    point: dict
    seed: int
    phase: int                       # 1: grid on the tuning seeds; 2: chosen point, other seeds
    config_dict: dict
    spec_hash: str
    path: Path
    label: str = ""

    def describe(self) -> str:
        point = f" {point_label(self.point)}" if self.point else ""
        return f"{self.name}{point} seed {self.seed}"


def run_config(exp: Experiment, entry: ModelEntry, tag: str, seed: int,
               data_path: str | None = None) -> dict:
    """The config_dict of one run: shared < variant < grid point < seed."""
    config = {**copy.deepcopy(exp.settings), **copy.deepcopy(entry.settings),
              **copy.deepcopy(entry.point(tag)), "seed": seed}
    if data_path is not None:
        config["data_path"] = data_path
    return config


def settings_hash(model: str, dataset: str, config: Mapping[str, Any]) -> str:
    kept = without_added_defaults(
        {key: value for key, value in config.items() if key not in HASH_EXEMPT})
    text = json.dumps({"format": FORMAT, "model": model, "dataset": dataset, "config": kept},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def run_path(out: Path, name: str, tag: str, seed: int) -> Path:
    return Path(out) / "runs" / name / f"{tag}-seed{seed}.json"


def resume_path(out: Path, spec: RunSpec) -> Path:
    """Where a run in progress keeps its training state between epochs (pipeline ``resume_file``)."""
    return Path(out) / "partial" / spec.name / f"{spec.tag}-seed{spec.seed}-{spec.spec_hash}.pth"


def make_spec(exp: Experiment, entry: ModelEntry, tag: str, seed: int, phase: int, out: Path,
              data_path: str | None = None) -> RunSpec:
    config = run_config(exp, entry, tag, seed, data_path)
    return RunSpec(
        name=entry.name, model=entry.model, dataset=exp.dataset, tag=tag,
        point=entry.point(tag), seed=seed, phase=phase, config_dict=config,
        spec_hash=settings_hash(entry.model, exp.dataset, config),
        path=run_path(out, entry.name, tag, seed),
    )


def read_run(path: Path, spec_hash: str | None = None) -> tuple[dict | None, str]:
    """(results, "") for a complete run JSON (with the expected hash), else (None, why)."""
    path = Path(path)
    if not path.is_file():
        return None, "missing"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None, "unreadable"
    if not isinstance(data, dict):
        return None, "unreadable"
    block = data.get("compare")
    test = data.get("test_result")
    valid = data.get("best_valid_result")
    if (not isinstance(block, dict) or not isinstance(test, dict) or not test
            or not isinstance(valid, dict) or not valid
            or not isinstance(data.get("valid_curve"), list)):
        return None, "incomplete"
    if spec_hash is not None and block.get("spec_hash") != spec_hash:
        return None, "stale"
    return data, ""


def valid_score(run: Mapping[str, Any]) -> float | None:
    """The run's best validation value of its ``valid_metric`` (what selection compares)."""
    metric = str(run.get("valid_metric") or "").lower()
    valid = run.get("best_valid_result") or {}
    value = valid.get(metric, run.get("best_valid_score"))
    return None if value is None else float(value)


@dataclass
class Selection:
    tag: str
    mean: float
    n: int
    provisional: bool               # not every grid point had all its tuning seeds
    scores: dict = field(default_factory=dict)   # tag -> list of validation scores


def select_point(entry: ModelEntry, runs: Mapping[tuple[str, int], Mapping],
                 tuning_seeds: Sequence[int]) -> Selection | None:
    """The grid point with the best mean validation score over the tuning seeds.

    ``runs`` maps (tag, seed) to a finished run. Points with all tuning seeds finished are
    preferred; only when none is complete does a partial point get chosen (provisional). Ties go
    to the earlier grid point. Test metrics are not looked at.
    """
    scores: dict[str, list[float]] = {}
    for tag in entry.tags:
        values = [valid_score(runs[(tag, seed)]) for seed in tuning_seeds if (tag, seed) in runs]
        scores[tag] = [v for v in values if v is not None]
    complete = [tag for tag in entry.tags if len(scores[tag]) == len(tuning_seeds)]
    candidates = complete or [tag for tag in entry.tags if scores[tag]]
    if not candidates:
        return None
    best = None
    for tag in candidates:  # strict ">" keeps the earlier point on ties
        mean = sum(scores[tag]) / len(scores[tag])
        if best is None or mean > best[1]:
            best = (tag, mean)
    provisional = len(complete) < len(entry.tags)
    return Selection(best[0], best[1], len(scores[best[0]]), provisional, scores)


def finished_runs(exp: Experiment, entry: ModelEntry, out: Path,
                  data_path: str | None = None) -> dict[tuple[str, int], dict]:
    """Every complete, current run of ``entry`` on disk, by (tag, seed)."""
    found = {}
    for tag in entry.tags:
        for seed in exp.seeds:
            spec = make_spec(exp, entry, tag, seed, 1, out, data_path)
            run, _ = read_run(spec.path, spec.spec_hash)
            if run is not None:
                found[(tag, seed)] = run
    return found


def plan(exp: Experiment, out: Path, data_path: str | None = None,
         only: Iterable[str] | None = None,
         seeds: Iterable[int] | None = None) -> tuple[list[RunSpec], list[RunSpec], int]:
    """(runs to do now, runs already finished, runs waiting for a selection).

    Phase 1 (grid on the tuning seeds) is ordered seed, row, grid point, so that an interrupted
    comparison has every model on the first seed early. Phase 2 (chosen point on the other
    seeds) is planned for a row once its phase 1 is complete.
    """
    only = set(only) if only is not None else None
    seeds = set(seeds) if seeds else None

    def wanted(entry: ModelEntry, seed: int) -> bool:  # --models / --seeds: only these now
        return (only is None or entry.name in only) and (seeds is None or seed in seeds)

    todo: list[RunSpec] = []
    done: list[RunSpec] = []
    waiting = 0
    for seed in exp.tuning_seeds:
        for entry in exp.models:
            for tag in entry.tags:
                spec = make_spec(exp, entry, tag, seed, 1, out, data_path)
                run, _ = read_run(spec.path, spec.spec_hash)
                if run is not None:
                    done.append(spec)
                elif wanted(entry, seed):
                    todo.append(spec)
    for seed in exp.other_seeds:
        for entry in exp.models:
            runs = finished_runs(exp, entry, out, data_path)
            selection = select_point(entry, runs, exp.tuning_seeds)
            if selection is None or selection.provisional:
                waiting += 1
                continue
            spec = make_spec(exp, entry, selection.tag, seed, 2, out, data_path)
            if (selection.tag, seed) in runs:
                done.append(spec)
            elif wanted(entry, seed):
                todo.append(spec)
    return todo, done, waiting



def run_status(out: Path, spec: RunSpec) -> str:
    """What ``--dry_run`` says about a run still to do: how far an interrupted attempt got (its
    resume state) and whether a live process holds it now; "" for a run not started yet."""
    from recbole_srgnn.training_state import resume_progress

    state = resume_path(out, spec)
    notes = []
    try:
        progress = resume_progress(state)
    except InputError as exc:
        progress = None
        notes.append(str(exc))  # the runner will stop on it with the same message
    if progress is not None and progress["epochs"]:
        metric = str(spec.config_dict.get("valid_metric", "score"))
        spent = (f", {duration_text(progress['seconds'])} in {progress['parts']} part(s)"
                 if progress["seconds"] is not None and progress["parts"] else "")
        notes.append(f"{progress['epochs']} epoch(s) done{spent}; valid {metric} "
                     f"{progress['last_score']:.4f} last, {progress['best_score']:.4f} best "
                     f"(epoch {progress['best_epoch']})"
                     + ("; training ended, testing left" if progress["finished"] else ""))
    holder = live_claim(state)
    if holder:
        notes.append(f"running now ({holder})")
    return "; ".join(notes)

