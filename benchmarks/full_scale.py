"""Full-scale run: a generated Retail Rocket log of the real file's size, converted, loaded with
RecBole, one SR-GNN epoch with full cross-entropy and one with the sampled softmax, each tested.

The stages, each timed, the costly ones each in a fresh process (peak RSS is that process's
``ru_maxrss``):

1. generate (in this process) a synthetic ``events.csv`` with ``convert_speed.events_file``
   (the real file's 2,756,101 rows and, by default, its ~235k item ids scaled to ``--rows``),
   reused when ``--workdir`` already holds it;
2. convert it with the default protocol (``convert_speed.run_child``: a fresh process,
   ``force=True``) into ``<workdir>/retailrocket/``, the folder the registry uses for the dataset
   ``retailrocket``;
3. load it the way ``training.runs.run`` does (the dataset step, which reuses the conversion;
   RecBole's ``Config``; ``create_dataset``; ``data_preparation``), in a fresh process;
4. train SR-GNN with its defaults for one epoch, ``loss_type: CE``, then again with ``SSM``
   (2,048 negatives), each in a fresh process through ``training.runs.run`` (what ``run.py``
   calls): the epoch, the validation after it and the test evaluation (full ranking) timed
   separately.

Writes ``<output>/full_scale.json`` and ``full_scale.md`` (default
``benchmarks/results/full_scale``; ``benchmarks.full_scale_report``), renamed into place once
the run completed, with the machine, the command, the counts and the targets
(conversion < 10 s, peak RSS < 4 GB while training, an SSM epoch at most a quarter of a CE
epoch), each met or MISSED.

    python -m benchmarks.full_scale --threads 1     # full size: 99 min (measured, 2 shared cores)
    python -m benchmarks.full_scale --rows 20000 --output /tmp/fs   # under a minute
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from benchmarks.convert_speed import FULL_ITEMS, FULL_ROWS, events_file, run_child
from benchmarks.full_scale_report import targets, write_outputs
from recbole_srgnn.errors import InputError, OneLineArgumentParser, cli_errors
from recbole_srgnn.experiments.machine import machine

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "full_scale"
DATASET = "retailrocket"  # the registered name: the pipeline converts/reuses <workdir>/retailrocket
MODEL = "SRGNN"
NUM_NEGATIVES = 2048
LOSSES = {"CE": {"loss_type": "CE"},
          "SSM": {"loss_type": "SSM", "num_negatives": NUM_NEGATIVES}}
TAIL_CHARS = 4000


def say(message: str) -> None:
    print(f"[full-scale] {message}", flush=True)


def default_items(rows: int) -> int:
    """The generated catalogue: the real file's ~235k item ids at its size, scaled to ``rows``."""
    return max(2, round(FULL_ITEMS * rows / FULL_ROWS))


def run_settings(workdir: Path, events: Path, threads: int) -> dict:
    """What every loading/training process is given beyond SR-GNN's defaults."""
    settings = {"data_path": str(workdir), "source_path": str(events), "epochs": 1,
                "checkpoint_dir": str(workdir / "saved"), "data_progress": False}
    if threads:
        settings["threads"] = threads
    return settings


# --------------------------------------------------------------------------------------------
# workers: one stage in its own process, its JSON result the last line of stdout
# --------------------------------------------------------------------------------------------
def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_worker(workdir: Path, events: Path, threads: int) -> dict:
    """Stage 3: the dataset step, Config, create_dataset and data_preparation, each timed
    (``load_s``: the four; the model package's imports before them are ``model_imports_s``)."""
    from recbole.data import data_preparation

    from recbole_srgnn.prepared_data import load_dataset
    from recbole_srgnn.training.config import make_config
    from recbole_srgnn.training.datasets import ready_settings
    from recbole_srgnn.training.models import resolve_model_name
    from recbole_srgnn.training.startup import quiet_logging, start

    stats = workdir / DATASET / f"{DATASET}.stats.json"
    stats_before = stats.stat().st_mtime_ns if stats.is_file() else None
    importing = time.perf_counter()
    resolve_model_name(MODEL)  # imports the model package (torch_geometric): timed apart
    began = time.perf_counter()
    _, model_class, settings = ready_settings(MODEL, DATASET, config_dict=run_settings(
        workdir, events, threads))
    ready = time.perf_counter()
    config = make_config(model_class, DATASET, settings)
    configured = time.perf_counter()
    with quiet_logging(True):
        start(config, quiet=True)
        dataset = load_dataset(config)
        loaded = time.perf_counter()
        train, valid, test = data_preparation(config, dataset)
    prepared = time.perf_counter()
    return {
        "model_imports_s": began - importing,
        "dataset_step_s": ready - began,
        "conversion_reused": stats_before is not None and stats.stat().st_mtime_ns == stats_before,
        "config_s": configured - ready,
        "create_dataset_s": loaded - configured,
        "data_preparation_s": prepared - loaded,
        "load_s": prepared - began,
        "peak_rss_mib": peak_rss_mib(),
        "num_items": int(dataset.item_num) - 1,  # item_num counts the padding id
        "train_cases": int(train.dataset.inter_num),
        "valid_cases": int(valid.dataset.inter_num),
        "test_cases": int(test.dataset.inter_num),
    }


def train_worker(loss: str, workdir: Path, events: Path, threads: int) -> dict:
    """Stage 4: one epoch with ``loss`` through ``training.runs.run``, validated and tested."""
    from recbole_srgnn.training.runs import run

    began = time.perf_counter()
    results = run(MODEL, DATASET, config_dict={**run_settings(workdir, events, threads),
                                               **LOSSES[loss]},
                  result_file=workdir / f"{loss.lower()}.json", saved=False, quiet=False,
                  show_progress=True)
    wall = time.perf_counter() - began
    epoch = results["valid_curve"][0]
    return {
        "loss": loss,
        "num_negatives": min(NUM_NEGATIVES, results["num_items"]) if loss == "SSM" else None,
        "epoch_s": epoch["seconds"],
        "valid_eval_s": epoch.get("valid_seconds"),
        "test_eval_s": results["test_eval_s"],
        "model_build_s": results["model_build_s"],
        # the rest of run(): dataset step, Config, load, splits, trainer, results file
        "other_s": wall - results["seconds_total"] - results["model_build_s"],
        "run_s": wall,
        "peak_rss_mib": peak_rss_mib(),
        "train_loss": epoch["train_loss"],
        "test_result": results["test_result"],
        "torch_threads": results["torch_threads"],
        "device": results["device"],
        **{key: results[key] for key in ("num_items", "train_cases", "valid_cases", "test_cases")},
    }


def worker(args) -> dict:
    workdir, events = Path(args.workdir), Path(args.events)
    if args.worker == "load":
        return load_worker(workdir, events, args.threads)
    return train_worker(args.worker, workdir, events, args.threads)


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------
def run_stage(stage: str, workdir: Path, events: Path, threads: int) -> dict:
    """``stage`` in a fresh ``--worker`` process (cwd ``workdir``, where RecBole puts its log
    folder); its stderr (RecBole's log, progress bars) is echoed. Returns its JSON line, with
    ``process_s`` (the whole process, interpreter start and imports included) and the
    machine's 1-minute load average when it ended (the machine may be shared)."""
    out_file = workdir / f"worker-{stage}.out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    command = [sys.executable, "-m", "benchmarks.full_scale", "--worker", stage,
               "--workdir", str(workdir), "--events", str(events), "--threads", str(threads)]
    began = time.perf_counter()
    with open(out_file, "w") as stdout:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=stdout,
                                   stderr=subprocess.PIPE, text=True)
        tail = echo(process.stderr)
        code = process.wait()
    process_s = time.perf_counter() - began
    if code != 0:
        lines = [line for line in tail.replace("\r", "\n").splitlines() if line.strip()]
        raise SystemExit(f"error: the {stage} stage failed (exit {code}): "
                         f"{lines[-1] if lines else 'no output'}")
    return {**json.loads(out_file.read_text().strip().splitlines()[-1]), "process_s": process_s,
            "load_average_after": os.getloadavg()[0]}


def echo(stream) -> str:
    """Copy ``stream`` to stderr as it comes; its last ``TAIL_CHARS`` characters."""
    tail = ""
    for chunk in iter(lambda: stream.read(256), ""):
        sys.stderr.write(chunk)
        sys.stderr.flush()
        tail = (tail + chunk)[-TAIL_CHARS:]
    return tail


def convert(events: Path, workdir: Path) -> dict:
    """Stage 2 in a fresh process; a failed conversion is one line."""
    try:
        return {**run_child(events, workdir / DATASET), "load_average_after": os.getloadavg()[0]}
    except SystemExit as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise InputError(f"converting {events} failed: {lines[-1] if lines else exc}") from None


@contextlib.contextmanager
def work_folder(given: Path | None) -> Iterator[Path]:
    """``given`` (kept), else a temporary folder removed afterwards."""
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="full-scale-") as tmp:
        yield Path(tmp)


def measure(args, workdir: Path) -> dict:
    """Stages 1-4; the result dict (without the machine and command)."""
    items = args.items or default_items(args.rows)
    say(f"work folder {workdir}")
    began = time.perf_counter()
    existed = (workdir / f"events-{args.rows}-seed{args.seed}-items{items}.csv").is_file()
    events = events_file(args.rows, args.seed, items, folder=workdir)
    generate_s = time.perf_counter() - began
    say(f"log: {events.name} ({'reused' if existed else f'generated in {generate_s:.1f} s'})")
    say("converting (default protocol, fresh process) ...")
    conversion = convert(events, workdir)
    say(f"converted in {conversion['convert_s']:.2f} s, peak RSS "
        f"{conversion['peak_rss_mib']:,.0f} MiB")
    say("loading with RecBole (fresh process) ...")
    load = run_stage("load", workdir, events, args.threads)
    say(f"loaded in {load['load_s']:.1f} s ({load['num_items']:,} items, "
        f"{load['train_cases']:,} / {load['valid_cases']:,} / {load['test_cases']:,} cases), "
        f"peak RSS {load['peak_rss_mib']:,.0f} MiB")
    trainings = {}
    for loss in LOSSES:
        say(f"one {MODEL} epoch with {loss}, then validation and test (fresh process) ...")
        trainings[loss] = result = run_stage(loss, workdir, events, args.threads)
        say(f"{loss}: epoch {result['epoch_s']:,.1f} s, test evaluation "
            f"{result['test_eval_s']:,.1f} s, peak RSS {result['peak_rss_mib']:,.0f} MiB")
    return {
        "input": {"rows": args.rows, "items_generated": items, "seed": args.seed,
                  "bytes": events.stat().st_size, "generated_s": None if existed else generate_s,
                  "generator": f"benchmarks.convert_speed.events_file({args.rows}, {args.seed}, "
                               f"{items}) -> recbole_srgnn.data.synthetic.write_events_csv",
                  "raw": conversion["raw"]},
        "conversion": {key: conversion[key] for key in (
            "convert_s", "convert_cpu_s", "import_s", "process_wall_s", "peak_rss_mib",
            "splits", "rounds", "load_average_after")},
        "load": load,
        "trainings": trainings,
        "targets": targets(conversion["convert_s"], trainings),
    }


def machine_info(device: str) -> dict:
    """The shared machine description, torch's version and the device the trainings used
    (this process never imports torch: the workers do)."""
    from importlib.metadata import version

    return {**machine(), "torch": version("torch"), "device": device}


def parser() -> OneLineArgumentParser:
    p = OneLineArgumentParser(flag_aliases={"--out": "--output", "--results": "--output"},
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--output", type=Path, default=RESULTS,
                   help="folder for full_scale.json / .md (benchmarks/results/full_scale)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per process (0 = the threads setting's default, auto)")
    p.add_argument("--rows", type=int, default=FULL_ROWS, help=f"rows generated ({FULL_ROWS:,})")
    p.add_argument("--items", type=int, default=0,
                   help=f"item ids generated (0 = {FULL_ITEMS:,} scaled to --rows)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (0)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="folder for the log, the converted dataset and the runs' files, kept "
                        "(default: a temporary folder, removed)")
    p.add_argument("--note", default="", help="a sentence on the conditions, put in the report")
    p.add_argument("--worker", choices=["load", *LOSSES], help=argparse.SUPPRESS)
    p.add_argument("--events", help=argparse.SUPPRESS)
    return p


@cli_errors
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.rows < 1 or args.items < 0 or args.threads < 0 or args.seed < 0:
        raise InputError("--rows must be >= 1, --items, --threads and --seed >= 0")
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    began = time.perf_counter()
    load_before = os.getloadavg()[0]
    with work_folder(args.workdir) as workdir:
        result = measure(args, workdir)
    command = shlex.join(["python", "-m", "benchmarks.full_scale",
                          *(sys.argv[1:] if argv is None else argv)])
    result = {"benchmark": "full-scale run", "command": command, "model": MODEL,
              "machine": machine_info(result["trainings"]["CE"]["device"]),
              "threads": args.threads, "note": args.note,
              "load_average": [load_before, os.getloadavg()[0]],
              "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "seconds_total": time.perf_counter() - began, **result}
    write_outputs(args.output, result)
    say(f"wrote {args.output / 'full_scale.md'} and .json")
    for target in result["targets"]:
        say(f"{target['target']}: {target['measured']} -> {'met' if target['met'] else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
