"""Accuracy comparison of SR-GNN and baselines: every model x grid point x seed, then a report.

    python -m benchmarks.compare --config benchmarks/configs/retailrocket-sample.yaml
    python -m benchmarks.compare --config benchmarks/configs/smoke.yaml --out /tmp/smoke
    python -m benchmarks.compare --config ... --only-report        # rebuild the report only
    python -m benchmarks.compare --config ... --models SRGNN NARM  # run only these rows now
    python -m benchmarks.compare --config ... --dry-run            # plan + runs in progress, no run

Every run goes through ``recbole_srgnn.pipeline.run`` (the pipeline of ``run.py``: validation
every epoch, early stopping, the best epoch's model tested). Its results JSON is stored as
``<out>/runs/<row>/<tag>-seed<k>.json`` (``<out>`` defaults to ``benchmarks/results/<name>``),
written atomically, with a ``compare`` block holding a hash of the run's settings: a run whose
JSON exists, is complete and has the same hash is not run again, so an interrupted comparison
resumes where it stopped (a changed setting reruns the runs it affects). A run that was cut off
during training continues from its last finished epoch: after every validation its whole training
state is kept in ``<out>/partial/<row>/<tag>-seed<k>-<hash>.pth`` (not committed; deleted when the
run completes), and the continued run ends exactly as an uninterrupted one would.

Several processes may run the same command on one results folder (one per core, or per machine on
a shared disk): each claims a run before starting it (``<resume file>.lock``, an exclusive lock the
system drops when its process ends) and skips the runs another process holds.

Selection: for every row, the grid point with the best mean *validation* score
(``valid_metric``) over the tuning seeds is chosen; its test metrics over all seeds are reported.
Test metrics never choose anything. ``tuning.seeds: k`` (default: all seeds) evaluates the grid
on the first k seeds only and runs the remaining seeds for the chosen point.

By default each run is a separate Python process (``isolate: true``) so that peak memory is the
run's own; ``--in-process`` runs everything in this process (faster start, shared peak memory).

The config format is documented in ``benchmarks/configs/smoke.yaml``. Errors in the config or the
options print one line and exit with status 2; failed runs are reported and exit with status 1
(their logs are kept under ``<out>/failed/``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime as _dt
import hashlib
import io
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from recbole_srgnn.errors import InputError, cli_errors, sigterm_as_interrupt
from recbole_srgnn.files import claimed, held_elsewhere, live_claim
from recbole_srgnn.run_identity import HASH_EXEMPT, without_added_defaults

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
FORMAT = "compare-1"  # part of every run's settings hash; bump when a run means something else

TOP_KEYS = {"name", "description", "dataset", "seeds", "threads", "isolate", "settings", "tuning",
            "reference", "models"}
ENTRY_KEYS = {"name", "model", "settings", "grid", "tunable"}
TUNING_KEYS = {"budget", "seeds"}
# Set by the runner itself, never by a config.
RESERVED = {"seed", "model", "dataset", "checkpoint_dir", "benchmark_filename"}
EPOCH_MARK = "@@compare-epoch "  # a child process's line that reports a validation epoch
CHILD_GRACE_S = 30.0  # seconds a run's child gets to end after Ctrl-C before it is killed
SHORT = {"learning_rate": "lr", "embedding_size": "d", "hidden_size": "h", "weight_decay": "wd",
         "embedding_dropout": "emb_drop", "hidden_dropout": "hid_drop", "dropout_prob": "drop",
         "dropout_probs": "drops", "train_batch_size": "batch"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelEntry:
    """One row of the comparison: a model class with its own settings and grid."""

    name: str                       # row name (unique), e.g. "SRGNN-niser"
    model: str                      # model to resolve, e.g. "SRGNN"
    settings: dict                  # variant settings (above the shared ones)
    points: tuple                   # grid points: tuple of (tag, dict), in grid order
    tunable: bool = True

    @property
    def tags(self) -> list[str]:
        return [tag for tag, _ in self.points]

    def point(self, tag: str) -> dict:
        return dict(self.points)[tag]


@dataclass(frozen=True)
class Experiment:
    name: str
    dataset: str
    seeds: tuple
    tune_seeds: int                 # the grid is evaluated on seeds[:tune_seeds]
    budget: int                     # grid points per tunable row
    settings: dict
    models: tuple                   # ModelEntry, in config order
    reference: str
    threads: int | None = 1
    isolate: bool = True
    description: str = ""
    path: str = ""

    def entry(self, name: str) -> ModelEntry:
        for entry in self.models:
            if entry.name == name:
                return entry
        raise KeyError(name)

    @property
    def tuning_seeds(self) -> list[int]:
        return list(self.seeds[: self.tune_seeds])

    @property
    def other_seeds(self) -> list[int]:
        return list(self.seeds[self.tune_seeds:])

    def planned_runs(self, entry: ModelEntry) -> int:
        return len(entry.points) * self.tune_seeds + len(self.other_seeds)

    @property
    def total_runs(self) -> int:
        return sum(self.planned_runs(entry) for entry in self.models)


def _scalar_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_scalar_text(item) for item in value)
    if isinstance(value, dict):
        return ",".join(f"{k}:{_scalar_text(v)}" for k, v in value.items())
    if isinstance(value, float):
        return repr(value)
    return str(value)


def point_tag(point: Mapping[str, Any]) -> str:
    """File-name tag of a grid point: ``learning_rate=0.001_step=2``; ``default`` when empty."""
    if not point:
        return "default"
    text = "_".join(f"{key}={_scalar_text(value)}" for key, value in point.items())
    return re.sub(r"[^A-Za-z0-9._=,:+-]", "-", text).replace(":", "-")


def point_label(point: Mapping[str, Any]) -> str:
    """Short display form: ``lr=0.001 step=2``; ``(no grid)`` when empty."""
    if not point:
        return "(no grid)"
    return " ".join(f"{SHORT.get(key, key)}={_scalar_text(value)}" for key, value in point.items())


def _check_settings(where: str, settings: Any) -> dict:
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise InputError(f"{where} must be a mapping of option names to values")
    bad = sorted(str(key) for key in settings if str(key) in RESERVED)
    if bad:
        raise InputError(f"{where} sets {', '.join(bad)}: the runner sets these itself "
                         "(seeds come from 'seeds', the dataset from 'dataset')")
    return {str(key): copy.deepcopy(value) for key, value in settings.items()}


def _grid_points(where: str, grid: Any) -> tuple:
    if grid is None:
        grid = {}
    if not isinstance(grid, dict):
        raise InputError(f"{where}: grid must map option names to lists of values")
    grid = _check_settings(f"{where}: grid", grid)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise InputError(f"{where}: grid value of {key!r} must be a non-empty list of values")
        texts = [json.dumps(value, sort_keys=True) for value in values]
        if len(set(texts)) != len(texts):
            raise InputError(f"{where}: grid values of {key!r} repeat")
    keys = list(grid)
    points = []
    for combo in itertools.product(*(grid[key] for key in keys)):
        point = dict(zip(keys, combo))
        points.append((point_tag(point), point))
    tags = [tag for tag, _ in points]
    if len(set(tags)) != len(tags):
        raise InputError(f"{where}: two grid points give the same file tag; use distinct values")
    return tuple(points)


def _reject_unknown_keys(mapping: dict, allowed: set[str], where: str) -> None:
    """InputError naming the keys of ``mapping`` outside ``allowed`` (and what is allowed)."""
    unknown = sorted(set(map(str, mapping)) - set(allowed))
    if unknown:
        raise InputError(f"{where} unknown key(s) {', '.join(unknown)}; "
                         f"allowed: {', '.join(sorted(allowed))}")


def parse_experiment(data: Any, path: str = "<config>") -> Experiment:
    """Validate a loaded config mapping; InputError (one line) on anything wrong."""
    if not isinstance(data, dict):
        raise InputError(f"{path}: the config must be a mapping")
    _reject_unknown_keys(data, TOP_KEYS, f"{path}:")
    for key in ("name", "dataset", "seeds", "models"):
        if data.get(key) in (None, "", [], {}):
            raise InputError(f"{path}: '{key}' is required")
    name = data["name"]
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InputError(f"{path}: name {name!r} must be a plain name (letters, digits, . _ + -)")
    dataset = data["dataset"]
    if not isinstance(dataset, str) or not NAME_RE.match(dataset):
        raise InputError(f"{path}: dataset {dataset!r} must be a plain dataset name")
    seeds = data["seeds"]
    if (not isinstance(seeds, list)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise InputError(f"{path}: seeds must be a list of whole numbers >= 0, e.g. [1, 2, 3]")
    if len(set(seeds)) != len(seeds):
        raise InputError(f"{path}: seeds repeat")
    threads = data.get("threads", 1)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise InputError(f"{path}: threads must be a whole number >= 1 or null, got {threads!r}")
    isolate = data.get("isolate", True)
    if not isinstance(isolate, bool):
        raise InputError(f"{path}: isolate must be true or false")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise InputError(f"{path}: description must be text")
    settings = _check_settings(f"{path}: settings", data.get("settings"))

    tuning = data.get("tuning") or {}
    if not isinstance(tuning, dict):
        raise InputError(f"{path}: tuning must be a mapping with 'budget' (and optionally 'seeds')")
    _reject_unknown_keys(tuning, TUNING_KEYS, f"{path}: tuning")
    budget = tuning.get("budget")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise InputError(f"{path}: tuning.budget (grid points per tunable model, the same for "
                         f"every model) must be a whole number >= 1, got {budget!r}")
    tune_seeds = tuning.get("seeds", len(seeds))
    if tune_seeds == "all":
        tune_seeds = len(seeds)
    if (isinstance(tune_seeds, bool) or not isinstance(tune_seeds, int)
            or not 1 <= tune_seeds <= len(seeds)):
        raise InputError(f"{path}: tuning.seeds must be 'all' or a whole number from 1 to "
                         f"{len(seeds)}, got {tune_seeds!r}")

    models_raw = data["models"]
    if not isinstance(models_raw, list):
        raise InputError(f"{path}: models must be a list")
    entries: list[ModelEntry] = []
    for index, raw in enumerate(models_raw, start=1):
        where = f"{path}: models[{index}]"
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict):
            raise InputError(f"{where} must be a model name or a mapping with 'name'")
        _reject_unknown_keys(raw, ENTRY_KEYS, f"{where}:")
        row = raw.get("name")
        if not isinstance(row, str) or not NAME_RE.match(row):
            raise InputError(f"{where}: name {row!r} must be a plain name (letters, digits, . _ + -)")
        model = raw.get("model", row)
        if not isinstance(model, str) or not model.strip():
            raise InputError(f"{where} ({row}): model must be a model name")
        tunable = raw.get("tunable", True)
        if not isinstance(tunable, bool):
            raise InputError(f"{where} ({row}): tunable must be true or false")
        entry_settings = _check_settings(f"{where} ({row}): settings", raw.get("settings"))
        points = _grid_points(f"{where} ({row})", raw.get("grid"))
        if tunable and len(points) != budget:
            raise InputError(
                f"{where} ({row}): its grid has {len(points)} point(s) but tuning.budget is "
                f"{budget}: every tunable model gets the same budget (set tunable: false only for "
                f"a model without hyperparameters)")
        if not tunable and len(points) != 1:
            raise InputError(f"{where} ({row}): tunable: false means no grid, got {len(points)} points")
        entries.append(ModelEntry(row, model.strip(), entry_settings, points, tunable))
    names = [entry.name for entry in entries]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"{path}: model name(s) {', '.join(repeated)} repeat; give variants "
                         "their own name, e.g. {name: SRGNN-x, model: SRGNN, settings: {...}}")
    reference = data.get("reference", "SRGNN" if "SRGNN" in names else names[0])
    if reference not in names:
        raise InputError(f"{path}: reference {reference!r} is not one of the models "
                         f"({', '.join(names)})")
    return Experiment(
        name=name, dataset=dataset, seeds=tuple(seeds), tune_seeds=tune_seeds, budget=budget,
        settings=settings, models=tuple(entries), reference=reference, threads=threads,
        isolate=isolate, description=description.strip(), path=str(path),
    )


def load_experiment(path: str | os.PathLike) -> Experiment:
    from recbole_srgnn.pipeline import load_yaml  # RecBole-compatible YAML (1e-3 is a float)

    return parse_experiment(load_yaml(path), str(path))


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Executing one run
# ---------------------------------------------------------------------------------------------
def _load_average() -> list[float] | None:
    with contextlib.suppress(OSError, AttributeError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def run_one(job: Mapping[str, Any], on_epoch: Callable[[dict], Any] | None = None) -> dict:
    """Train/test one run through ``pipeline.run`` and write its JSON atomically (used in the
    child process and in-process). ``job``: model, dataset, config_dict, path, compare, threads,
    scratch, resume_file (optional: continue from / keep the training state there).
    ``on_epoch({"epoch", "score", "seconds"})`` follows each validation."""
    import torch

    from recbole_srgnn import pipeline

    scratch = Path(job["scratch"])
    scratch.mkdir(parents=True, exist_ok=True)
    config = dict(job["config_dict"])
    config["checkpoint_dir"] = str(scratch / "saved")
    threads = job.get("threads")
    previous_threads = torch.get_num_threads()
    if threads:
        config["threads"] = int(threads)  # the pipeline sets it; not part of the run's identity
    load_start = _load_average()
    started = time.perf_counter()
    try:
        tmp_result = scratch / f"result-{os.getpid()}-{time.monotonic_ns()}.json"
        resume_file = job.get("resume_file")
        if resume_file:
            Path(resume_file).parent.mkdir(parents=True, exist_ok=True)
        results = pipeline.run(job["model"], job["dataset"], config_dict=config,
                               result_file=tmp_result, saved=False, show_progress=False,
                               quiet=True, epoch_callback=_epoch_callback(on_epoch),
                               resume_file=resume_file)
        with contextlib.suppress(FileNotFoundError):
            tmp_result.unlink()
    finally:
        if threads:
            torch.set_num_threads(previous_threads)
    final = Path(job["path"])
    results = dict(results)
    results["result_file"] = str(final)
    results["compare"] = {
        **job["compare"],
        "threads": threads,
        "isolated": bool(job.get("isolated", False)),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "load_average_start": load_start,
        "load_average_end": _load_average(),
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    pipeline.write_results(results, final)
    if resume_file:
        _remove_empty_parents(Path(resume_file), stop=final.parents[2])
    return results


def _remove_empty_parents(path: Path, stop: Path) -> None:
    """Remove ``path``'s folders up to (not including) ``stop`` while they are empty."""
    for folder in path.parents:
        if folder == stop or stop not in folder.parents:
            break
        try:
            folder.rmdir()
        except OSError:
            break


def _epoch_callback(on_epoch: Callable[[dict], Any] | None):
    if on_epoch is None:
        return None
    last = [time.perf_counter()]

    def callback(epoch: int, valid_result: Mapping, valid_score: float) -> None:
        now = time.perf_counter()
        on_epoch({"epoch": int(epoch) + 1, "score": float(valid_score), "seconds": now - last[0]})
        last[0] = now

    return callback


class RunProgress:
    """A line per validation epoch under the run's ``[i/n] ...`` line, then its result."""

    def __init__(self, metric: str, stream):
        self.metric, self.stream, self.epochs = metric, stream, 0

    def epoch(self, info: Mapping[str, Any]) -> None:
        if not self.epochs:
            print(file=self.stream)  # ends the "[i/n] ... " line
        self.epochs += 1
        print(f"    epoch {info['epoch']}: valid {self.metric} {info['score']:.4f} "
              f"({_duration(info['seconds'])})", file=self.stream, flush=True)

    def end(self, text: str) -> None:
        print(("    done: " if self.epochs else "") + text, file=self.stream, flush=True)


def _job(spec: RunSpec, exp: Experiment, scratch: Path, isolated: bool, out: Path) -> dict:
    return {
        "model": spec.model, "dataset": spec.dataset, "config_dict": spec.config_dict,
        "path": str(spec.path.resolve()), "threads": exp.threads, "isolated": isolated,
        "scratch": str(scratch), "resume_file": str(resume_path(out, spec).resolve()),
        "compare": {"experiment": exp.name, "name": spec.name, "model": spec.model,
                    "tag": spec.tag, "grid_point": spec.point, "seed": spec.seed,
                    "phase": spec.phase, "spec_hash": spec.spec_hash},
    }


def _failure_log(out: Path, spec: RunSpec) -> Path:
    return Path(out) / "failed" / spec.name / f"{spec.tag}-seed{spec.seed}.log"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def execute(spec: RunSpec, exp: Experiment, out: Path, scratch: Path, isolate: bool,
            progress: RunProgress | None = None) -> tuple[dict | None, str]:
    """Run one spec; (results, "") or (None, one-line reason). Failures leave a log in out/failed.
    ``progress`` shows the run's validation epochs as they finish."""
    on_epoch = progress.epoch if progress is not None else None
    job = _job(spec, exp, scratch / f"{spec.name}-{spec.tag}-seed{spec.seed}", isolate, out)
    log_path = _failure_log(out, spec)
    with contextlib.suppress(FileNotFoundError):
        log_path.unlink()  # an earlier failure's log; this attempt writes its own if it fails
        for folder in (log_path.parent, log_path.parent.parent):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
    if not isolate:
        captured = io.StringIO()  # the registry's and RecBole's prints would break the progress line
        try:
            with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
                return run_one(job, on_epoch=on_epoch), ""
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a failed run must not stop the others
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text(captured.getvalue() + traceback.format_exc(), encoding="utf-8")
            return None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    job_file = scratch / f"job-{spec.name}-{spec.tag}-seed{spec.seed}.json"
    job_file.write_text(json.dumps(job), encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.compare", "--run-one", str(job_file)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    lines = []
    try:
        for line in proc.stdout:  # the child's epoch lines are shown; the rest is kept for the log
            if line.startswith(EPOCH_MARK):
                if on_epoch is not None:
                    on_epoch(json.loads(line[len(EPOCH_MARK):]))
            else:
                lines.append(line)
        proc.wait()
    except BaseException:  # the parent alone was stopped: never leave the child training on
        stop_child(proc)
        raise
    finally:
        proc.stdout.close()
    output = "".join(lines)
    run, why = read_run(spec.path, spec.spec_hash)
    if proc.returncode == 0 and run is not None:
        return run, ""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(output, encoding="utf-8")
    if proc.returncode in (130, -2):  # Ctrl-C reached the child too
        raise KeyboardInterrupt
    reason = _last_line(output) if proc.returncode else f"no complete results ({why})"
    return None, f"exit {proc.returncode}: {reason[:300]}"


def stop_child(proc: subprocess.Popen, grace: float = CHILD_GRACE_S) -> None:
    """Stop a run's child process: Ctrl-C first (it keeps its last finished epoch in the resume
    state either way), then a kill if it has not ended within ``grace`` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _progress_metric(run: Mapping[str, Any]) -> str:
    test = run.get("test_result") or {}
    metric = str(run.get("valid_metric") or "").lower()
    parts = []
    if "hit@10" in test:
        parts.append(f"hit@10 {test['hit@10']:.4f}")
    value = valid_score(run)
    if metric and value is not None:
        parts.append(f"valid {metric} {value:.4f}")
    return ", ".join(parts)


def run_status(out: Path, spec: RunSpec) -> str:
    """What ``--dry-run`` says about a run still to do: how far an interrupted attempt got (its
    resume state) and whether a live process holds it now; "" for a run not started yet."""
    from recbole_srgnn.trainer import resume_progress

    state = resume_path(out, spec)
    notes = []
    try:
        progress = resume_progress(state)
    except InputError as exc:
        progress = None
        notes.append(str(exc))  # the runner will stop on it with the same message
    if progress is not None and progress["epochs"]:
        metric = str(spec.config_dict.get("valid_metric", "score"))
        spent = (f", {_duration(progress['seconds'])} in {progress['parts']} part(s)"
                 if progress["seconds"] is not None and progress["parts"] else "")
        notes.append(f"{progress['epochs']} epoch(s) done{spent}; valid {metric} "
                     f"{progress['last_score']:.4f} last, {progress['best_score']:.4f} best "
                     f"(epoch {progress['best_epoch']})"
                     + ("; training ended, testing left" if progress["finished"] else ""))
    holder = live_claim(state)
    if holder:
        notes.append(f"running now ({holder})")
    return "; ".join(notes)


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise InputError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m benchmarks.compare",
        description="Train and evaluate every model x grid point x seed of a comparison config "
                    "through the run.py pipeline (resuming finished runs), select each model's "
                    "grid point on validation, and write report.md, summary.csv, runs.csv and "
                    "plots.",
        allow_abbrev=False,
    )
    parser.add_argument("--config", help="comparison config (benchmarks/configs/*.yaml)")
    parser.add_argument("--out", help="results folder (default benchmarks/results/<name>)")
    parser.add_argument("--only-report", action="store_true",
                        help="run nothing; rebuild the report from the finished runs")
    parser.add_argument("--models", nargs="+", metavar="NAME",
                        help="run only these rows now (the report still covers all of them)")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="SEED",
                        help="run only these seeds now, e.g. to give each core its own seed "
                             "of one row (the report still covers all of them)")
    parser.add_argument("--data-path", help="override data_path (where datasets are built/read); "
                                            "not part of a run's identity")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch threads per run, overriding the config's threads (e.g. 2 "
                             "for one run alone on a 2-core machine); not part of a run's "
                             "identity")
    parser.add_argument("--in-process", action="store_true",
                        help="run in this process instead of one process per run "
                             "(faster start; peak memory is then process-wide)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan (how far cut-off runs got, which run now) and exit")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)  # internal: the child process
    return parser


def _command_line(args, exp: Experiment, out: Path) -> str:
    def rel(path: str | os.PathLike) -> str:
        path = Path(path).resolve()
        with contextlib.suppress(ValueError):
            return str(path.relative_to(REPO))
        return str(path)

    parts = ["python -m benchmarks.compare", f"--config {rel(args.config)}"]
    if out.resolve() != (RESULTS_DIR / exp.name).resolve():
        parts.append(f"--out {rel(out)}")
    if args.data_path:
        parts.append(f"--data-path {args.data_path}")
    if args.in_process:
        parts.append("--in-process")
    return " ".join(parts)


def _resolve_models(exp: Experiment) -> None:
    from recbole_srgnn import pipeline

    for entry in exp.models:
        try:
            pipeline.resolve_model(entry.model)
        except InputError as exc:
            raise InputError(f"{exp.path}: model {entry.name}: {exc}") from None


def _preflight(exp: Experiment, todo: Sequence[RunSpec]) -> None:
    """Check names and settings, and build a registered dataset once, before any run."""
    from recbole_srgnn import pipeline

    checked = set()
    for spec in todo:
        if spec.name in checked:
            continue
        config = dict(spec.config_dict)
        config["checkpoint_dir"] = tempfile.gettempdir()
        # The first check may build the dataset (its progress is worth seeing); the others
        # would only repeat "reusing the conversion".
        quiet = contextlib.redirect_stdout(io.StringIO()) if checked else contextlib.nullcontext()
        checked.add(spec.name)
        try:
            with quiet:
                pipeline.build_config(spec.model, spec.dataset, None, config)
        except InputError as exc:
            raise InputError(f"{exp.path}: model {spec.name}: {exc}") from None


def _child(job_file: str) -> int:
    # A parent started in the background (`cmd &`) passes on an ignored SIGINT: restore Ctrl-C so
    # that stop_child's SIGINT ends the run cleanly; `kill` (SIGTERM) does the same.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sigterm_as_interrupt()
    job = json.loads(Path(job_file).read_text(encoding="utf-8"))
    run_one(job, on_epoch=lambda info: print(EPOCH_MARK + json.dumps(info), flush=True))
    return 0


@cli_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.run_one:
        return _child(args.run_one)
    if not args.config:
        raise InputError("--config is required (e.g. --config benchmarks/configs/smoke.yaml)")
    exp = load_experiment(args.config)
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be a whole number >= 1, got {args.threads}")
    # the runs get --threads; the report keeps the config's threads and marks the runs that differ
    run_exp = dataclasses.replace(exp, threads=args.threads) if args.threads else exp
    out = Path(args.out) if args.out else RESULTS_DIR / exp.name
    if args.models:
        names = [entry.name for entry in exp.models]
        unknown = [name for name in args.models if name not in names]
        if unknown:
            raise InputError(f"--models: {', '.join(unknown)} not in {exp.path} "
                             f"(models: {', '.join(names)})")
    _resolve_models(exp)
    isolate = exp.isolate and not args.in_process
    command = _command_line(args, exp, out)

    from benchmarks import report

    failures: list[tuple[RunSpec, str]] = []
    elsewhere: list[RunSpec] = []  # runs another process held when this one came to them
    if not args.only_report:
        if args.seeds and not set(args.seeds) <= set(exp.seeds):
            raise InputError(f"--seeds: {', '.join(map(str, sorted(set(args.seeds) - set(exp.seeds))))} "
                             f"not in {exp.path} (seeds: {', '.join(map(str, exp.seeds))})")
        todo, done, waiting = plan(exp, out, args.data_path, args.models, args.seeds)
        total = exp.total_runs
        print(f"{exp.name}: {len(exp.models)} models, {len(exp.seeds)} seeds, grid budget "
              f"{exp.budget} (tuned on {exp.tune_seeds} seed(s)): {total} runs; "
              f"{len(done)} finished, {len(todo)} to run now"
              + (f", {waiting} waiting for a grid selection" if waiting else ""), flush=True)
        if args.dry_run:
            for spec in todo:
                status = run_status(out, spec)
                print(f"  {spec.describe()} -> {spec.path}"
                      + (f"\n      {status}" if status else ""))
            return 0
        if todo:
            _preflight(exp, todo)
        counter = len(done)
        scratch = Path(tempfile.mkdtemp(prefix=f"compare-{exp.name}-"))
        try:
            while todo:
                for spec in todo:
                    with claimed(resume_path(out, spec)) as mine:
                        if not mine:  # another process runs the same command on this folder
                            print("  " + held_elsewhere(spec.describe(), resume_path(out, spec)),
                                  flush=True)
                            elsewhere.append(spec)
                            continue
                        if read_run(spec.path, spec.spec_hash)[0] is not None:
                            continue  # finished by another process since the plan was made
                        counter += 1
                        resuming = resume_path(out, spec).is_file()
                        print(f"[{counter}/{total}] {spec.describe()}"
                              + (" (continuing an interrupted run)" if resuming else "") + " ...",
                              end=" ", flush=True)
                        started = time.perf_counter()
                        progress = RunProgress(str(spec.config_dict.get("valid_metric", "score")),
                                               sys.stdout)
                        run, reason = execute(spec, run_exp, out, scratch, isolate, progress)
                        took = _duration(time.perf_counter() - started)
                        if run is None:
                            failures.append((spec, reason))
                            progress.end(f"FAILED ({took}): {reason}")
                        else:
                            progress.end(f"{_progress_metric(run)} ({took})")
                    _remove_empty_parents(resume_path(out, spec), stop=Path(out))
                # phase 2 becomes plannable once a row's grid is complete
                todo, _, _ = plan(exp, out, args.data_path, args.models, args.seeds)
                skipped = {f.path for f, _ in failures} | {spec.path for spec in elsewhere}
                todo = [spec for spec in todo if spec.path not in skipped]
        except KeyboardInterrupt:
            rerun = command + "".join(f" --{option} {' '.join(map(str, values))}" for option, values
                                      in (("models", args.models), ("seeds", args.seeds),
                                          ("threads", [args.threads] if args.threads else None))
                                      if values)
            print(f"\ninterrupted: rerun the same command to resume ({rerun})", file=sys.stderr)
            raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    elif args.dry_run:
        raise InputError("--dry-run and --only-report do not go together")

    written, summary = report.write_report(exp, out, command=command, data_path=args.data_path)
    status = (f"{summary.finished} of {summary.planned} runs finished"
              + ("" if summary.finished == summary.planned else "; PARTIAL"))
    print(f"report: {written['report']} ({status})")
    if elsewhere:
        print(f"{len(elsewhere)} run(s) were left to the other process(es) running them; rerun "
              "the command once they end to finish what is left and rebuild the report")
    if failures:
        print(f"{len(failures)} run(s) failed; logs under {Path(out) / 'failed'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # Run the imported module's main, so that benchmarks.report and this code share one module.
    from benchmarks.compare import main as _main

    sigterm_as_interrupt()  # `kill` on the parent also stops the run's child (see execute)
    sys.exit(_main())
