"""Hyperparameter search with Ray Tune for SR-GNN and the baselines (``python -m recbole_srgnn.tune``).

## Hyperparameter search (Ray Tune)

`python -m recbole_srgnn.tune` searches a model's hyperparameters with Ray Tune. Every trial
runs the same pipeline as `run.py` (RecBole's trainer, validation every epoch, early stopping)
with its sampled values, reports the validation metric (`valid_metric`, default MRR@10) to Ray
after every epoch, so the ASHA scheduler can stop weak trials early, and never looks at test
metrics. After the search, the best trial (best validation score over its epochs) is tested once,
on its best checkpoint, and that test result is reported.

    python -m recbole_srgnn.tune --model=SRGNN --dataset=retailrocket-cotrec \\
        --space=recbole_srgnn/properties/tune/SRGNN.yaml --num_samples=12 --max_epochs=10 \\
        --output=ray_results/srgnn-cotrec

    python -m recbole_srgnn.tune --model=GRU4Rec --space=recbole_srgnn/properties/tune/GRU4Rec.yaml --output=...
    python -m recbole_srgnn.tune --model=NARM --space=recbole_srgnn/properties/tune/NARM.yaml --output=...

Options (defaults in brackets):

- `--model` [SRGNN], `--dataset` [retailrocket-synthetic], `--config_files` ["a.yaml b.yaml"]:
  as for `run.py`. Every other `--key=value` (e.g. `--data_path=...`, `--valid_metric=Hit@10`,
  `--eval_batch_size=2048`) is a RecBole option given to every trial.
- `--space` [recbole_srgnn/properties/tune/<model>.yaml]: the search space file (below).
- `--num_samples` [10]: trials to sample; `--max_epochs` [the config's `epochs`]: the epoch budget
  of each trial (RecBole's early stopping, `stopping_step`, still applies).
- `--scheduler asha|fifo` [asha]: ASHA stops trials whose validation score is in the worse part
  at 1, 2, 4, ... epochs (`--grace_period` [1], `--reduction_factor` [2]); fifo runs every trial
  to the end.
- `--search random|optuna` [random], `--seed` [0]: random sampling, or Optuna's TPE (needs the
  extra: `pip install -e .[optuna]`; without it the command says so and exits with status 2).
- `--cpus_per_trial` [1], `--gpus_per_trial` [0]: resources of one trial (Ray runs as many
  trials at once as fit; `--max_concurrent` caps it). Trials with GPUs get theirs from Ray.
- `--num_cpus`: CPUs of the local Ray instance [all of this machine's]; on a shared machine
  give fewer. `--address=HOST:PORT` joins a running Ray cluster instead (its nodes need this
  package installed and the data at the same path).
- `--output=DIR` (required): where everything goes; Ray's experiment is in `DIR/experiment/`
  (`ray_results/` is ignored by git).
- `--resume`: continue an interrupted search in `DIR` (Ctrl-C once stops it cleanly and prints
  the command) with the settings it was started with (options given again must match);
  finished trials are not run again, trials that were running start over. `--retry_failed`
  also reruns failed trials.
- `--keep_checkpoints best|all` [best]: after the search, delete every trial's checkpoint but the
  best one's.

Space files (`recbole_srgnn/properties/tune/SRGNN.yaml`, `GRU4Rec.yaml`, `NARM.yaml`) map option names to
entries; every entry has a `type` and exactly that type's fields:

    learning_rate: {type: loguniform, low: 1.0e-4, high: 1.0e-2}   # log-uniform float
    hidden_dropout: {type: uniform, low: 0.0, high: 0.5}           # uniform float
    embedding_dropout: {type: quniform, low: 0.0, high: 0.5, q: 0.1}  # uniform, multiples of q
    step: {type: randint, low: 1, high: 3}                         # integer, both ends included
    readout: {type: choice, values: [hybrid, global]}              # one of the values
    embedding_size: {type: grid, values: [64, 128]}                # each value (random search only)
    loss_type: {type: fixed, value: CE}                            # the same in every trial
    dropout_probs: {type: list, items: [{type: uniform, low: 0.0, high: 0.5},
                                        {type: fixed, value: 0.5}]}  # a list-valued option

An option the model does not read is passed through; an unknown type, a missing or extra field,
`low >= high`, a missing file or a YAML error is reported in one line (exit status 2).

Outputs in `DIR`:

- `trials.csv`: one row per trial: its values, `status` (completed, stopped = stopped early by
  ASHA, failed, interrupted), the validation metric's best value, the epoch of the best (from 1),
  epochs run, the last value, wall/training/overhead seconds, the error of a failed trial;
- `best.yaml`: the best configuration, with a commented header saying how it was found:
  `python run.py --model=SRGNN --dataset=retailrocket-cotrec --config_files=DIR/best.yaml`
  trains it again;
- `best_test.json`: the test evaluation of the best trial's checkpoint;
- `report.md` and `valid_curves.png`: per-epoch validation curves of all trials and the best
  score per trial, the best configuration, its validation and test metrics, the trials table and
  the measured per-trial overhead (trial time beyond training and validation epochs).

A trial that raises (say, out of memory for a large batch) is recorded as failed; the search goes
on. Ray runs locally with the dashboard off and its session files in /tmp/ray; trials' output
goes to `DIR/experiment/<trial>/`, not to the terminal, which shows one line per finished trial.
The dataset is loaded and split once, before the trials (`prepared_data_path`, removed when the
search is over), and Ray reuses its CPU workers from trial to trial, so a worker reads that file
and imports the libraries only for its first trial. Trials are seeded like `run.py`
(`seed`, `reproducibility`), so `run.py` with `best.yaml` retrains the best trial's model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

from recbole_srgnn.errors import InputError, OneLineArgumentParser, cli_errors
from recbole_srgnn.experiments.json_safe import finite_or_none
from recbole_srgnn.experiments.options import split_options
from recbole_srgnn.tune_space import RESERVED, Space, load_space, parse_space

SPACE_DIR = Path(__file__).resolve().parent / "properties" / "tune"  # package data (setup.py)
SETTINGS_FILE = "tune_settings.json"
EXPERIMENT = "experiment"
ERROR_LINE_FILE = "error_line.txt"
DATASET_CACHE = "dataset_cache"
DEFAULT_MODEL = "SRGNN"
DEFAULT_DATASET = "retailrocket-synthetic"
METRIC = "best_valid_score"  # what Ray's scheduler and searcher compare: best so far, per epoch

# Settings fixed when a search starts; --resume refuses different values.
FIXED_SETTINGS = ("model", "dataset", "space", "config_files", "num_samples", "max_epochs",
                  "scheduler", "grace_period", "reduction_factor", "search", "seed",
                  "cpus_per_trial", "gpus_per_trial", "max_concurrent", "keep_checkpoints")
DEFAULTS = {"model": DEFAULT_MODEL, "dataset": DEFAULT_DATASET, "num_samples": 10,
            "scheduler": "asha", "grace_period": 1, "reduction_factor": 2, "search": "random",
            "seed": 0, "cpus_per_trial": 1.0, "gpus_per_trial": 0.0, "keep_checkpoints": "best"}

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="python -m recbole_srgnn.tune",
        description=(
            "Ray Tune hyperparameter search: each trial trains with run.py's pipeline, reports "
            "the validation metric every epoch (ASHA stops weak trials), the best trial by "
            "validation is tested once at the end. Writes trials.csv, best.yaml, report.md."
        ),
        epilog=(
            "Any other --key=value is a RecBole option for every trial (e.g. --data_path=DIR, "
            "--valid_metric=Hit@10). Bad options or space files print one line, exit status 2."
        ),
        allow_abbrev=False,
    )
    d = DEFAULTS
    parser.add_argument("--model", "-m", default=None, help=f"model name (default {d['model']})")
    parser.add_argument("--dataset", "-d", default=None,
                        help=f"dataset name (default {d['dataset']})")
    parser.add_argument("--space", default=None,
                        help="search space YAML (default recbole_srgnn/properties/tune/<model>.yaml)")
    parser.add_argument("--config_files", default=None,
                        help='extra YAML config files for every trial, space-separated')
    parser.add_argument("--output", "-o", default=None, help="output folder DIR (required)")
    parser.add_argument("--num_samples", type=int, default=None,
                        help=f"number of trials to sample (default {d['num_samples']})")
    parser.add_argument("--max_epochs", type=int, default=None,
                        help="epochs per trial at most (default: the config's epochs)")
    parser.add_argument("--scheduler", choices=("asha", "fifo"), default=None,
                        help="asha: stop weak trials early; fifo: run all to the end (default asha)")
    parser.add_argument("--grace_period", type=int, default=None,
                        help=f"ASHA: epochs before a trial can be stopped (default {d['grace_period']})")
    parser.add_argument("--reduction_factor", type=int, default=None,
                        help=f"ASHA: keep 1/this at each rung (default {d['reduction_factor']})")
    parser.add_argument("--search", choices=("random", "optuna"), default=None,
                        help="random sampling or Optuna TPE (needs the optuna extra; default random)")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"seed of the search algorithm (default {d['seed']})")
    parser.add_argument("--cpus_per_trial", type=float, default=None,
                        help=f"CPUs per trial (default {d['cpus_per_trial']:g})")
    parser.add_argument("--gpus_per_trial", type=float, default=None,
                        help=f"GPUs per trial (default {d['gpus_per_trial']:g})")
    parser.add_argument("--max_concurrent", type=int, default=None,
                        help="trials running at once at most (default: as resources allow)")
    parser.add_argument("--keep_checkpoints", choices=("best", "all"), default=None,
                        help="after the search keep the best trial's checkpoint only, or all "
                             "(default best)")
    parser.add_argument("--num_cpus", type=int, default=None,
                        help="CPUs of the local Ray instance (default: all of this machine's)")
    parser.add_argument("--address", default=None,
                        help="join this running Ray cluster (HOST:PORT or 'auto') instead of "
                             "starting a local Ray")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted search in --output with its settings")
    parser.add_argument("--retry_failed", action="store_true",
                        help="with --resume: run failed trials again from scratch")
    return parser


def _check_options(options: Mapping[str, str], space: Space) -> None:
    for key in options:
        if key in RESERVED:
            raise InputError(f"--{key} cannot be set for a search: {RESERVED[key]}")
        if key in space.keys:
            raise InputError(
                f"--{key} is also in the space file {space.source}: drop one of them "
                f"(a fixed value in a space is written {{type: fixed, value: ...}})"
            )


def _default_space(model: str) -> Path:
    exact = SPACE_DIR / f"{model}.yaml"
    if exact.is_file():
        return exact
    if SPACE_DIR.is_dir():
        for path in sorted(SPACE_DIR.glob("*.yaml")):
            if path.stem.lower() == model.lower():
                return path
    raise InputError(f"no space file for model {model!r}: {exact} does not exist; give --space=FILE")


def _numbers(settings: Mapping[str, Any]) -> None:
    if settings["num_samples"] < 1:
        raise InputError(f"--num_samples must be at least 1, got {settings['num_samples']}")
    if settings.get("max_epochs") is not None and settings["max_epochs"] < 1:
        raise InputError(f"--max_epochs must be at least 1, got {settings['max_epochs']}")
    if settings["grace_period"] < 1:
        raise InputError(f"--grace_period must be at least 1, got {settings['grace_period']}")
    if settings["reduction_factor"] < 2:
        raise InputError(f"--reduction_factor must be at least 2, got {settings['reduction_factor']}")
    if not settings["cpus_per_trial"] > 0:
        raise InputError(f"--cpus_per_trial must be > 0, got {settings['cpus_per_trial']}")
    if settings["gpus_per_trial"] < 0:
        raise InputError(f"--gpus_per_trial must be >= 0, got {settings['gpus_per_trial']}")
    if settings.get("max_concurrent") is not None and settings["max_concurrent"] < 1:
        raise InputError(f"--max_concurrent must be at least 1, got {settings['max_concurrent']}")


def _check_optuna(search: str) -> None:
    if search != "optuna":
        return
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise InputError(
            "--search optuna needs the optional dependency optuna: pip install -e '.[optuna]' "
            "(or use --search random)"
        ) from None


def _absolute(value: Any) -> Any:
    if isinstance(value, str) and value and not os.path.isabs(os.path.expanduser(value)):
        return str(Path(value).resolve())
    if isinstance(value, str) and value:
        return str(Path(os.path.expanduser(value)))
    return value


def _is_path_key(key: str) -> bool:
    return key.endswith(("_path", "_dir", "_file"))


# ---------------------------------------------------------------------------------------------
# The trial (runs in a Ray worker)
# ---------------------------------------------------------------------------------------------
def _trial(params: dict, job: dict) -> None:
    """Train one sampled configuration with the pipeline; report validation every epoch."""
    fn_start = time.time()
    from ray.air import session

    trial_dir = Path(session.get_trial_dir())
    with open(trial_dir / "starts.txt", "a", encoding="utf-8") as handle:
        handle.write(f"{fn_start:.3f} pid={os.getpid()}\n")

    from recbole_srgnn.training.runs import run
    from recbole_srgnn.tune_report import SUMMARY_FILE, write_text

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
                   "best_epoch": best["epoch"]}
        metrics.update({f"valid_{key}": float(value) for key, value in valid_result.items()})
        report_times.append(time.time())
        if epoch >= job["max_epochs"]:
            # The scheduler stops a trial at its epoch budget, inside this report, before the
            # pipeline tests and returns: report the last epoch once the run is complete.
            pending.append(metrics)
        else:
            session.report(metrics)

    result_file = trial_dir / "pipeline_result.json"
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
        "values": values,
    }
    write_text(trial_dir / SUMMARY_FILE, json.dumps(finite_or_none(summary), indent=2) + "\n")
    for metrics in pending:
        session.report(metrics)


def _trial_name(trial) -> str:
    return f"trial_{trial.trial_id}"


# ---------------------------------------------------------------------------------------------
# The driver's callback: one JSON line per trial event; printed lines per epoch and per finished trial
# ---------------------------------------------------------------------------------------------
def _make_callback(metric_label: str, space: Space, finished_before: int = 0):
    from ray.tune import Callback

    from recbole_srgnn import tune_report as tr

    class TrialLog(Callback):
        def __init__(self):
            self.total = None
            self.finished = finished_before

        def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
            self.total = total_num_samples

        @staticmethod
        def _where(trial) -> Path:
            return Path(trial.local_experiment_path)

        def _event(self, trial, kind: str, **data) -> None:
            tr.append_event(self._where(trial), {"event": kind, "trial_id": trial.trial_id,
                                                 "time": time.time(), **data})

        def on_trial_start(self, iteration, trials, trial, **info):
            params = {p.name: trial.config.get(p.name) for p in space.sampled}
            try:
                values = space.config_values(params)
            except KeyError:
                values = {}
            self._event(trial, "start", trial_dir=str(trial.local_path),
                        params=finite_or_none(_plain(params)), values=finite_or_none(_plain(values)))

        def on_trial_restore(self, iteration, trials, trial, **info):
            self.on_trial_start(iteration, trials, trial, **info)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self._event(trial, "result", epoch=result.get("epoch"),
                        valid_score=result.get("valid_score"), best=result.get(METRIC))
            seconds = result.get("time_this_iter_s")
            took = f", {seconds:.0f} s" if isinstance(seconds, (int, float)) else ""
            print(f"    trial {trial.trial_id} epoch {result.get('epoch')}: valid {metric_label} "
                  f"{_num(result.get('valid_score'))} (best {_num(result.get(METRIC))}{took})",
                  flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            summary = None
            path = Path(trial.local_path) / tr.SUMMARY_FILE
            if path.is_file():
                try:
                    summary = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    summary = None
            checkpoint = None if summary else _find_checkpoint(Path(trial.local_path))
            self._event(trial, "complete", summary=summary, checkpoint=checkpoint)
            last = trial.last_result or {}
            if summary:
                state = (f"completed: best valid {metric_label} {_num(summary.get('best_valid_score'))} "
                         f"at epoch {summary.get('best_epoch')} of {summary.get('epochs_trained')}")
            else:
                state = (f"stopped early by the scheduler after {last.get('epoch', '?')} epoch(s): "
                         f"best valid {metric_label} {_num(last.get(METRIC))}")
            self._print(trial, state)

        def on_trial_error(self, iteration, trials, trial, **info):
            error = _error_line(trial)
            self._event(trial, "error", error=error, checkpoint=_find_checkpoint(Path(trial.local_path)))
            self._print(trial, f"FAILED: {error} (see {trial.local_path}/error.txt)")

        def _print(self, trial, text: str) -> None:
            self.finished += 1
            total = f"/{self.total}" if self.total else ""
            params = ", ".join(f"{p.name}={_short_value(trial.config.get(p.name))}"
                               for p in space.sampled)
            print(f"[{self.finished}{total}] trial {trial.trial_id} {text} | {params}", flush=True)

    return TrialLog()


def _plain(value: Any) -> Any:
    from recbole_srgnn.tune_space import clean_value

    return clean_value(value)


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def _short_value(value: Any) -> str:
    from recbole_srgnn.tune_space import clean_value

    value = clean_value(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _error_line(trial) -> str:
    """The failed trial's exception in one line: from the trial's own note, else Ray's."""
    from recbole_srgnn.tune_report import error_line

    return error_line(trial.local_path) or " ".join(
        str(getattr(trial, "error_msg", None) or "error (see error.txt)").split())[:300]


def _find_checkpoint(trial_dir: Path) -> str | None:
    files = sorted((trial_dir / "checkpoints").glob("*.pth"), key=lambda p: p.stat().st_mtime)
    return str(files[-1]) if files else None


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
def _settings_from_args(args, options: dict, output: Path, argv: list[str]) -> dict:
    model = args.model or DEFAULT_MODEL
    settings = {key: getattr(args, key) for key in FIXED_SETTINGS}
    for key, value in DEFAULTS.items():
        if settings.get(key) is None:
            settings[key] = value
    settings["model"] = model
    settings["space"] = str(Path(args.space).resolve()) if args.space else str(_default_space(model))
    settings["config_files"] = ([str(Path(f).resolve()) for f in args.config_files.split()]
                                if args.config_files else None)
    settings["options"] = dict(options)
    settings["output"] = str(output)
    settings["cwd"] = os.getcwd()
    settings["command"] = " ".join(shlex.quote(a) for a in
                                   ["python", "-m", "recbole_srgnn.tune", *argv])
    return settings


def _check_resume(args, options: dict, saved: dict) -> None:
    """--resume takes the saved settings; anything given again must say the same."""
    given = {key: getattr(args, key) for key in FIXED_SETTINGS if getattr(args, key) is not None}
    if "space" in given:
        given["space"] = str(Path(given["space"]).resolve())
    if "config_files" in given:
        given["config_files"] = [str(Path(f).resolve()) for f in given["config_files"].split()]
    for key, value in given.items():
        if key == "model" and str(value).lower() == str(saved.get("model", "")).lower():
            continue
        if value != saved.get(key) and not (
            isinstance(value, (int, float)) and isinstance(saved.get(key), (int, float))
            and float(value) == float(saved[key])
        ):
            raise InputError(
                f"--resume continues the search with its saved settings: it was started with "
                f"--{key}={_show(saved.get(key))}, not {_show(value)} (drop --{key}, or start a "
                f"new search in another --output)"
            )
    if options and options != saved.get("options"):
        raise InputError(
            f"--resume continues the search with its saved settings: its options were "
            f"{_show_options(saved.get('options'))}, not {_show_options(options)}"
        )


def _show(value: Any) -> str:
    if isinstance(value, list):
        return '"' + " ".join(map(str, value)) + '"'
    return str(value)


def _show_options(options: Mapping | None) -> str:
    return " ".join(f"--{k}={v}" for k, v in (options or {}).items()) or "(none)"


def _load_settings(output: Path) -> dict:
    path = output / SETTINGS_FILE
    if not path.is_file():
        raise InputError(f"--resume: {output} holds no search ({SETTINGS_FILE} is missing)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"--resume: cannot read {path}: {exc}") from None


def _prepare(settings: dict, space: Space) -> dict:
    """Validate the base configuration (and build a registered dataset) in the driver.

    Returns what every trial needs: options with absolute paths, the epoch budget, the metric.
    """
    from recbole_srgnn.training.config import parse_dict
    from recbole_srgnn.training.datasets import ready_config
    from recbole_srgnn.training.models import resolve_model

    resolve_model(settings["model"])  # unknown model -> one line
    parsed = parse_dict(settings["options"])
    options = {key: (_absolute(value) if _is_path_key(key) else value)
               for key, value in parsed.items()}
    fixed = space.config_values({p.name: _first_value(p) for p in space.sampled})
    probe = {**options, **fixed}
    if settings.get("max_epochs") is not None:
        probe["epochs"] = settings["max_epochs"]
    probe["data_progress"] = True
    # RecBole's Config writes CUDA_VISIBLE_DEVICES from gpu_id; Ray must see the real value.
    saved_cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        config = ready_config(settings["model"], settings["dataset"],
                              settings["config_files"], probe)
    finally:
        if saved_cuda is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved_cuda
    data_path = Path(config["data_path"]).resolve().parent
    options["data_path"] = str(data_path) + os.sep
    max_epochs = settings.get("max_epochs") or int(config["epochs"])
    return {
        "options": options,
        "max_epochs": int(max_epochs),
        "metric_label": str(config["valid_metric"]),
        "bigger": bool(config["valid_metric_bigger"]),
        "config": config,
    }


def _prepared_cache(config, output: Path, reuse: bool = False) -> str | None:
    """Load the dataset and build its splits once here, for all trials (``prepared_data_path``).

    Each trial unpickles the file instead of parsing the benchmark files and building the
    splits again (a worker that Ray reuses for several trials reads it once); a trial whose
    sampled values change the dataset options builds its own (see ``prepared_data``).
    Not made when the options already name a prepared file.
    """
    if config["prepared_data_path"]:
        return None
    path = output / DATASET_CACHE / f"{config['dataset']}-for-{config['model']}.pth"
    if reuse and path.is_file():  # --resume: the search's own cache
        return str(path)
    from recbole_srgnn.prepared_data import save_prepared

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        save_prepared(config, path)
    print(f"dataset loaded and split once for all trials in {time.perf_counter() - started:.1f} s "
          f"({_shown_path(path)})", flush=True)
    return str(path)


def _first_value(param) -> Any:
    if param.type in ("choice", "grid"):
        return param.values[0]
    return param.low


def _expected_trials(settings: Mapping, space: Space) -> int:
    grid = 1
    for p in space.sampled:
        if p.type == "grid":
            grid *= len(p.values)
    return int(settings["num_samples"]) * grid


def _param_space(space: Space) -> dict:
    from ray import tune

    out = {}
    for p in space.sampled:
        if p.type == "loguniform":
            out[p.name] = tune.loguniform(p.low, p.high)
        elif p.type == "uniform":
            out[p.name] = tune.uniform(p.low, p.high)
        elif p.type == "quniform":
            out[p.name] = tune.quniform(p.low, p.high, p.q)
        elif p.type == "randint":
            out[p.name] = tune.randint(p.low, p.high + 1)  # Ray excludes the upper bound
        elif p.type == "choice":
            out[p.name] = tune.choice(list(p.values))
        elif p.type == "grid":
            out[p.name] = tune.grid_search(list(p.values))
    return out


def check_address(address: str | None) -> None:
    """A HOST:PORT that does not answer is an InputError at once (Ray itself retries for minutes)."""
    if not address or address in ("auto", "local") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"--address must be HOST:PORT (or 'auto'), got {address!r}")
    import socket

    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        raise InputError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def _init_ray(address: str | None, num_cpus: int | None) -> bool:
    """Start (or join) Ray; True when this process started it and should shut it down."""
    import ray

    if ray.is_initialized():
        return False
    common = dict(log_to_driver=False, logging_level=logging.WARNING)
    if address:
        try:
            ray.init(address=address, **common)
        except ConnectionError as exc:
            raise InputError(f"cannot join the Ray cluster at {address}: {exc}") from None
        return True
    ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
             object_store_memory=256 * 1024 * 1024, **common)
    return True


def _check_resources(settings: Mapping) -> None:
    """On a local Ray, a trial that asks for more than there is would wait forever."""
    import ray

    total = ray.cluster_resources()
    for kind, key in (("CPU", "cpus_per_trial"), ("GPU", "gpus_per_trial")):
        want, have = float(settings[key]), float(total.get(kind, 0.0))
        if want > have:
            raise InputError(f"--{key}={want:g} but the local Ray has {have:g} {kind}(s)"
                             + (" (see --num_cpus)" if kind == "CPU" else ""))


def _quiet_ray_logs() -> None:
    # Errors of failed trials are reported by our callback (one line) and kept in error.txt.
    for name in ("ray.tune.execution.tune_controller", "ray.tune.execution.trial_runner",
                 "ray.tune.execution.ray_trial_executor", "ray.tune.tune", "ray.tune.impl.tuner_internal"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    logging.getLogger("ray.tune").setLevel(logging.ERROR)


def run_search(settings: dict, *, resume: bool, address: str | None = None,
               num_cpus: int | None = None, retry_failed: bool = False,
               extra_callbacks: list | None = None) -> int:
    """Run (or resume) the search described by ``settings``; write the outputs. Exit code.

    ``extra_callbacks`` (Ray Tune ``Callback`` objects) join this run only; a resumed run gets
    its own (they are not restored from the experiment).
    """
    output = Path(settings["output"])
    space = parse_space(settings["space_text"], settings["space"])
    space.check_search(settings["search"])
    _check_optuna(settings["search"])

    if not resume:
        print(f"checking the configuration of {settings['model']} on {settings['dataset']} "
              f"(a registered dataset is built on first use) ...", flush=True)
    job_base = _prepare(settings, space)
    if settings.get("max_epochs") is None:
        settings["max_epochs"] = job_base["max_epochs"]
    output.mkdir(parents=True, exist_ok=True)

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    started = time.perf_counter()
    owns_ray = _init_ray(address, num_cpus)
    ray_seconds = time.perf_counter() - started
    try:
        if owns_ray and not address:
            _check_resources(settings)
        cache = _prepared_cache(job_base["config"], output, reuse=resume)
        if not resume:
            _write_json(output / SETTINGS_FILE, settings)  # from now on --resume applies
        from ray import air, tune

        _quiet_ray_logs()
        trial_options = {**job_base["options"], "epochs": job_base["max_epochs"]}
        if cache is not None:
            trial_options["prepared_data_path"] = cache
        job = {
            "model": settings["model"], "dataset": settings["dataset"],
            "config_files": settings["config_files"], "space": space,
            "options": trial_options,
            "bigger": job_base["bigger"], "max_epochs": job_base["max_epochs"],
            "cpus_per_trial": settings["cpus_per_trial"],
            "gpus_per_trial": settings["gpus_per_trial"],
        }
        trainable = tune.with_resources(
            tune.with_parameters(_trial, job=job),
            {"cpu": settings["cpus_per_trial"], "gpu": settings["gpus_per_trial"]},
        )
        mode = "max" if job_base["bigger"] else "min"
        metric_label = job_base["metric_label"]
        experiment_dir = output / EXPERIMENT
        from recbole_srgnn.tune_report import collect_trials

        finished_before = sum(r.status != "interrupted" for r in collect_trials(experiment_dir))
        callback = _make_callback(metric_label, space, finished_before)
        total = _expected_trials(settings, space)
        print(f"{'resuming' if resume else 'tuning'} {settings['model']} on {settings['dataset']}: "
              f"{total} trials ({settings['search']} search, {settings['scheduler']} scheduler), "
              f"at most {settings['max_epochs']} epochs each, {settings['cpus_per_trial']:g} CPU / "
              f"{settings['gpus_per_trial']:g} GPU per trial, selecting on validation "
              f"{metric_label}; Ray up in {ray_seconds:.1f} s; output {output}", flush=True)
        if resume:
            if not tune.Tuner.can_restore(str(experiment_dir)):
                raise InputError(f"--resume: {experiment_dir} holds no Ray Tune experiment to continue")
            tuner = tune.Tuner.restore(str(experiment_dir), trainable=trainable,
                                       resume_unfinished=True, resume_errored=False,
                                       restart_errored=retry_failed)
            _replace_callbacks(tuner, [callback, *(extra_callbacks or [])])
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=_param_space(space),
                tune_config=tune.TuneConfig(
                    metric=METRIC, mode=mode, num_samples=int(settings["num_samples"]),
                    search_alg=_search_alg(settings),
                    scheduler=_scheduler(settings, job_base["max_epochs"]),
                    max_concurrent_trials=settings.get("max_concurrent"),
                    # one worker process runs trial after trial, keeping imports and the loaded
                    # data (not with GPUs: Ray's own caution about device memory between trials)
                    reuse_actors=settings["gpus_per_trial"] == 0,
                    trial_name_creator=_trial_name, trial_dirname_creator=_trial_name,
                ),
                run_config=air.RunConfig(
                    name=EXPERIMENT, storage_path=str(output), verbose=0,
                    callbacks=[callback, *(extra_callbacks or [])],
                    failure_config=air.FailureConfig(max_failures=0, fail_fast=False),
                ),
            )
        from recbole_srgnn.tune_report import append_event

        experiment_dir.mkdir(parents=True, exist_ok=True)
        append_event(experiment_dir, {"event": "fit_start", "time": time.time(),
                                      "ray_start_seconds": ray_seconds})
        try:
            tuner.fit()
        finally:
            append_event(experiment_dir, {"event": "fit_end", "time": time.time()})
    finally:
        if owns_ray:
            import ray

            ray.shutdown()
    return _finish(settings, space, job_base, experiment_dir, total)


def _replace_callbacks(tuner, callbacks: list) -> None:
    """Tuner.restore brings back the pickled RunConfig; give it this process's callback."""
    internal = getattr(tuner, "_local_tuner", None)
    run_config = internal.get_run_config() if internal is not None else None
    if run_config is None:
        raise InputError("--resume: this Ray version's Tuner cannot be resumed here")
    run_config.callbacks = callbacks


def _search_alg(settings: Mapping):
    if settings["search"] == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)

        return OptunaSearch(seed=int(settings["seed"]))
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=int(settings["seed"]))


def _scheduler(settings: Mapping, max_epochs: int):
    if settings["scheduler"] == "fifo":
        from ray.tune.schedulers import FIFOScheduler

        return FIFOScheduler()
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", max_t=int(max_epochs),
                         grace_period=min(int(settings["grace_period"]), int(max_epochs)),
                         reduction_factor=int(settings["reduction_factor"]))


def _shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies under it (so a committed
    best.yaml names no machine's folders), else absolute."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _best_yaml_options(settings: Mapping, prepared: Mapping[str, Any]) -> dict:
    """The command-line options best.yaml repeats: those the user gave. The driver's absolute
    ``data_path`` (added so that Ray workers find the data from any folder) is kept only when
    the user set it; otherwise ``run.py`` finds the data where the search did, by default."""
    from recbole_srgnn.training.config import parse_dict

    given = parse_dict(settings.get("options") or {})
    return {key: value for key, value in prepared.items()
            if key != "data_path" or "data_path" in given}


def _finish(settings: dict, space: Space, job_base: dict, experiment_dir: Path, total: int) -> int:
    from recbole_srgnn import tune_report as tr

    output = Path(settings["output"])
    bigger = job_base["bigger"]
    metric_label = job_base["metric_label"]
    records = tr.collect_trials(experiment_dir, bigger=bigger)
    param_names = [p.name for p in space.sampled]
    tr.write_text(output / "trials.csv", tr.trials_csv_text(records, param_names, metric_label))
    terminal = [r for r in records if r.status in ("completed", "stopped", "failed")]
    if len(terminal) < total:
        print(f"interrupted: {len(terminal)} of {total} trials finished (trials.csv has them); "
              f"continue with: python -m recbole_srgnn.tune --resume --output={output}",
              file=sys.stderr, flush=True)
        return 130

    best = tr.best_trial(records, bigger=bigger)
    test = _test_best(best, settings) if best is not None else None
    searched = list(space.keys)
    fixed_values = {p.key: p.value for p in space.params if not p.sampled and p.index is None}
    if best is not None:
        header = [
            f"Best configuration of a Ray Tune search (python -m recbole_srgnn.tune), {tr.now()}.",
            f"Model {settings['model']}, dataset {settings['dataset']}; {settings['search']} search, "
            f"{settings['scheduler']} scheduler, {len(records)} trials of at most "
            f"{settings['max_epochs']} epochs, space {_shown_path(Path(settings['space']))}.",
            f"Selected on validation only: best validation {metric_label} "
            f"{best.best_valid_score:.4f} at epoch {best.best_epoch}, trial {best.trial_id}.",
        ]
        if test and test.get("test_result"):
            shown = ", ".join(f"{k} {v:.4f}" for k, v in test["test_result"].items()
                              if k.endswith("@10") or k == "hit@1")
            header.append(f"Test of that trial's best checkpoint (after the search): {shown}.")
        files = " ".join([*(settings["config_files"] or []), _shown_path(output / "best.yaml")])
        header.append(f"Train it again: python run.py --model={settings['model']} "
                      f"--dataset={settings['dataset']} --config_files=\"{files}\"")
        options = _best_yaml_options(settings, job_base["options"])
        tr.write_text(output / "best.yaml", tr.best_yaml_text(
            best, searched=searched, fixed=fixed_values, options=options,
            max_epochs=settings["max_epochs"], header=header))
    plot = tr.plot_curves(records, best, metric_label, output / "valid_curves.png")
    space_lines = [f"{p.name}: {p.describe()}" for p in space.params]
    tr.write_text(output / "report.md", tr.report_text(
        settings={**settings, "space": _shown_path(Path(settings["space"]))}, records=records, best=best, metric=metric_label,
        mode="max" if bigger else "min", test=test, param_names=param_names,
        space_lines=space_lines, plot_name=plot.name, expected_trials=total, started=tr.now(),
        events=tr.read_events(experiment_dir)))
    if settings.get("keep_checkpoints", "best") == "best":
        _prune_checkpoints(records, best)
    shutil.rmtree(output / DATASET_CACHE, ignore_errors=True)  # the search is over

    counts = {s: sum(r.status == s for r in records) for s in tr.STATUSES}
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
        checkpoint = _find_checkpoint(Path(best.trial_dir)) if best.trial_dir else None
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
    summary = Path(best.trial_dir) / "pipeline_result.json"
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


def _write_json(path: Path, data: Mapping) -> None:
    from recbole_srgnn.tune_report import write_text

    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


@cli_errors
def main(argv: list[str] | None = None, *, extra_callbacks: list | None = None) -> int:
    """The command line; ``extra_callbacks`` are Ray Tune callbacks for this run (embedding, tests)."""
    args, extra = build_parser().parse_known_args(argv)
    options = split_options(extra)
    if args.output is None:
        raise InputError("--output=DIR is required (the search's results and Ray's experiment go there)")
    output = Path(args.output).expanduser().resolve()
    if args.retry_failed and not args.resume:
        raise InputError("--retry_failed applies to --resume only")
    check_address(args.address)

    if args.resume:
        settings = _load_settings(output)
        _check_resume(args, options, settings)
        settings["output"] = str(output)
    else:
        if (output / SETTINGS_FILE).exists() or (output / EXPERIMENT).exists():
            raise InputError(f"{output} already holds a search: continue it with --resume, "
                             f"or choose another --output")
        settings = _settings_from_args(args, options, output,
                                       list(sys.argv[1:] if argv is None else argv))
        _numbers(settings)
        space = load_space(settings["space"])
        settings["space_text"] = space.text
        space.check_search(settings["search"])
        _check_optuna(settings["search"])
        _check_options(options, space)
    return run_search(settings, resume=args.resume, address=args.address,
                      num_cpus=args.num_cpus, retry_failed=args.retry_failed,
                      extra_callbacks=extra_callbacks)


if __name__ == "__main__":
    sys.exit(main())
