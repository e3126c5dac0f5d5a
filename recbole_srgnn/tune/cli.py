"""The command line of ``python -m recbole_srgnn.tune``: options, their checks, and the saved
settings that ``--resume`` continues with (options given again must match them).

Every option is described by ``--help``; any other ``--key=value`` is a RecBole option given to
every trial. Bad options and space files are one ``error:`` line and exit status 2, reported
before Ray or RecBole is imported.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Mapping

from recbole_srgnn.errors import InputError, OneLineArgumentParser, cli_errors
from recbole_srgnn.experiments.options import split_options
from recbole_srgnn.tune.driver import check_address, check_optuna, run_search
from recbole_srgnn.tune.records import EXPERIMENT, SETTINGS_FILE
from recbole_srgnn.tune.space import RESERVED, Space, load_space

SPACE_DIR = Path(__file__).resolve().parent.parent / "properties" / "tune"  # package data (setup.py)
DEFAULT_MODEL = "SRGNN"
DEFAULT_DATASET = "retailrocket-synthetic"

# Settings fixed when a search starts; --resume refuses different values.
FIXED_SETTINGS = ("model", "dataset", "space", "config_files", "num_samples", "max_epochs",
                  "scheduler", "grace_period", "reduction_factor", "search", "seed",
                  "cpus_per_trial", "gpus_per_trial", "max_concurrent", "keep_checkpoints")
DEFAULTS = {"model": DEFAULT_MODEL, "dataset": DEFAULT_DATASET, "num_samples": 10,
            "scheduler": "asha", "grace_period": 1, "reduction_factor": 2, "search": "random",
            "seed": 0, "cpus_per_trial": 1.0, "gpus_per_trial": 0.0, "keep_checkpoints": "best"}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="python -m recbole_srgnn.tune",
        description=(
            "Ray Tune hyperparameter search: each trial trains with run.py's pipeline, reports "
            "the validation metric every epoch (ASHA stops weak trials), the best trial by "
            "validation is tested once at the end. Writes trials.csv, best.yaml (for run.py "
            "--config_files), best_test.json, report.md and valid_curves.png."
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
                        help="search space YAML (default recbole_srgnn/properties/tune/<model>.yaml; "
                             "those files' comments give the format)")
    parser.add_argument("--config_files", default=None,
                        help='extra YAML config files for every trial, space-separated')
    parser.add_argument("--output", "-o", default=None,
                        help="output folder DIR (required); Ray's experiment goes to "
                             "DIR/experiment/")
    parser.add_argument("--num_samples", type=int, default=None,
                        help=f"number of trials to sample (default {d['num_samples']})")
    parser.add_argument("--max_epochs", type=int, default=None,
                        help="epochs per trial at most (default: the config's epochs); early "
                             "stopping (stopping_step) still applies")
    parser.add_argument("--scheduler", choices=("asha", "fifo"), default=None,
                        help="asha: stop trials in the worse part at 1, 2, 4, ... epochs; fifo: "
                             "run all to the end (default asha)")
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
                             "starting a local Ray; its nodes need this package and the data "
                             "at the same path")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted search in --output with its settings "
                             "(options given again must match): finished trials are kept, "
                             "trials that were running start over")
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
        check_optuna(settings["search"])
        _check_options(options, space)
    return run_search(settings, resume=args.resume, address=args.address,
                      num_cpus=args.num_cpus, retry_failed=args.retry_failed,
                      extra_callbacks=extra_callbacks)
