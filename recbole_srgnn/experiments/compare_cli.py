"""Accuracy comparison of SR-GNN and baselines: every model x grid point x seed, then a report.

    python -m recbole_srgnn.compare --config benchmarks/configs/retailrocket-sample.yaml
    python -m recbole_srgnn.compare --config benchmarks/configs/smoke.yaml --output /tmp/smoke
    python -m recbole_srgnn.compare --config ... --only_report        # rebuild the report only
    python -m recbole_srgnn.compare --config ... --models SRGNN NARM  # run only these rows now
    python -m recbole_srgnn.compare --config ... --dry_run            # plan + runs in progress

(``python -m benchmarks.compare`` in a checkout is the same command under its former name.)

Every run goes through ``recbole_srgnn.training.runs.run`` (the pipeline of ``run.py``: validation
every epoch, early stopping, the best epoch's model tested). Its results JSON is stored as
``<out>/runs/<row>/<tag>-seed<k>.json`` (``<out>`` defaults to ``benchmarks/results/<name>`` of
the checkout that holds the config or the current directory: ``results_dir``), written
atomically, with a ``compare`` block holding a hash of the run's settings: a run whose JSON exists, is complete and has the same hash is not run again, so an interrupted comparison
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
run's own; ``--in_process`` runs everything in this process (faster start, shared peak memory).

The config format is documented in ``benchmarks/configs/smoke.yaml``. Errors in the config or the
options print one line and exit with status 2; failed runs are reported and exit with status 1
(their logs are kept under ``<out>/failed/``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from recbole_srgnn.errors import InputError, OneLineArgumentParser, cli_errors
from recbole_srgnn.experiments import compare_exec, compare_report
from recbole_srgnn.experiments.compare_config import Experiment, load_experiment
from recbole_srgnn.experiments.compare_runs import RunSpec, plan, read_run, resume_path, run_status
from recbole_srgnn.experiments.results_dir import config_checkout, default_out, shown_path
from recbole_srgnn.experiments.tables import duration_text
from recbole_srgnn.files import claimed, held_elsewhere

PROG = "python -m recbole_srgnn.compare"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog=prog,
        flag_aliases={"--out": "--output"},  # the earlier spelling, still accepted
        description="Train and evaluate every model x grid point x seed of a comparison config "
                    "through the run.py pipeline (resuming finished runs), select each model's "
                    "grid point on validation, and write report.md, summary.csv, runs.csv and "
                    "plots.",
        allow_abbrev=False,
    )
    parser.add_argument("--config", help="comparison config (benchmarks/configs/*.yaml)")
    parser.add_argument("--output", "-o", help="results folder (default benchmarks/results/<name>)")
    parser.add_argument("--only_report", action="store_true",
                        help="run nothing; rebuild the report from the finished runs")
    parser.add_argument("--models", nargs="+", metavar="NAME",
                        help="run only these rows now (the report still covers all of them)")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="SEED",
                        help="run only these seeds now, e.g. to give each core its own seed "
                             "of one row (the report still covers all of them)")
    parser.add_argument("--data_path", help="override data_path (where datasets are built/read); "
                                            "not part of a run's identity")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch threads per run, overriding the config's threads (e.g. 2 "
                             "for one run alone on a 2-core machine); not part of a run's "
                             "identity")
    parser.add_argument("--in_process", action="store_true",
                        help="run in this process instead of one process per run "
                             "(faster start; peak memory is then process-wide)")
    parser.add_argument("--dry_run", action="store_true",
                        help="print the plan (how far cut-off runs got, which run now) and exit")
    parser.add_argument("--run_one", help=argparse.SUPPRESS)  # internal: the child process
    return parser


def _command_line(args, exp: Experiment, out: Path, prog: str) -> str:
    """The command that regenerates this comparison, as the report shows it."""
    root = config_checkout(args.config)
    parts = [prog, f"--config {shown_path(args.config, root)}"]
    default = root / "benchmarks" / "results" / exp.name if root is not None else None
    if default is None or out.resolve() != default.resolve():
        parts.append(f"--output {shown_path(out, root)}")
    if args.data_path:
        parts.append(f"--data_path {args.data_path}")
    if args.in_process:
        parts.append("--in_process")
    return " ".join(parts)


def _resolve_models(exp: Experiment) -> None:
    from recbole_srgnn.training.models import resolve_model

    for entry in exp.models:
        try:
            resolve_model(entry.model)
        except InputError as exc:
            raise InputError(f"{exp.path}: model {entry.name}: {exc}") from None


def _preflight(exp: Experiment, todo: Sequence[RunSpec]) -> None:
    """Check names and settings, and build a registered dataset once, before any run."""
    from recbole_srgnn.training.config import layered_settings
    from recbole_srgnn.training.datasets import ready_config

    def config_of(spec: RunSpec) -> dict:
        return {**spec.config_dict, "checkpoint_dir": tempfile.gettempdir()}

    checked = set()
    for spec in todo:  # options of every grid point first: nothing is built while one is bad
        if (spec.name, spec.tag) not in checked:
            checked.add((spec.name, spec.tag))
            try:
                layered_settings(spec.model, spec.dataset, None, config_of(spec))
            except InputError as exc:
                raise InputError(f"{exp.path}: model {spec.name} ({spec.tag}): {exc}") from None
    built = set()
    for spec in todo:
        if spec.name in built:
            continue
        # The first check may build the dataset (its progress is worth seeing); the others
        # would only repeat "reusing the conversion".
        quiet = contextlib.redirect_stdout(io.StringIO()) if built else contextlib.nullcontext()
        built.add(spec.name)
        try:
            with quiet:
                ready_config(spec.model, spec.dataset, None, config_of(spec))
        except InputError as exc:
            raise InputError(f"{exp.path}: model {spec.name}: {exc}") from None


@cli_errors
def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """The comparison command line (``prog`` names it in messages and in the report)."""
    args = build_parser(prog).parse_args(argv)
    if args.run_one:
        return compare_exec.child_main(args.run_one)
    if not args.config:
        raise InputError("--config is required (e.g. --config benchmarks/configs/smoke.yaml)")
    exp = load_experiment(args.config)
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be a whole number >= 1, got {args.threads}")
    # the runs get --threads; the report keeps the config's threads and marks the runs that differ
    run_exp = dataclasses.replace(exp, threads=args.threads) if args.threads else exp
    out = Path(args.output) if args.output else default_out(exp.name, args.config, "--output")
    if args.models:
        names = [entry.name for entry in exp.models]
        unknown = [name for name in args.models if name not in names]
        if unknown:
            raise InputError(f"--models: {', '.join(unknown)} not in {exp.path} "
                             f"(models: {', '.join(names)})")
    _resolve_models(exp)
    isolate = exp.isolate and not args.in_process
    command = _command_line(args, exp, out, prog)

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
                        progress = compare_exec.RunProgress(str(spec.config_dict.get("valid_metric", "score")),
                                               sys.stdout)
                        run, reason = compare_exec.execute(spec, run_exp, out, scratch, isolate, progress)
                        took = duration_text(time.perf_counter() - started)
                        if run is None:
                            failures.append((spec, reason))
                            progress.end(f"FAILED ({took}): {reason}")
                        else:
                            progress.end(f"{compare_exec.progress_metric(run)} ({took})")
                    compare_exec.remove_empty_parents(resume_path(out, spec), stop=Path(out))
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
        raise InputError("--dry_run and --only_report do not go together")

    written, summary = compare_report.write_report(exp, out, command=command, data_path=args.data_path)
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

