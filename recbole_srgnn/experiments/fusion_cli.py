"""SR-GNN + a non-neural scorer: choose the scorer and its weight on validation, report the test.

At evaluation time only, a trained model ranks items by ``softmax(SR-GNN scores) + alpha *
rules(session)`` (``recbole_srgnn.model.fused.FusedRanker``; the rules are the SequenceRules
scorer of the model's training split). Training does not depend on ``alpha``, so this runner
trains each seed once, through the same pipeline as ``run.py`` (or takes a model trained before
with ``run.py``: ``--trained``), and then evaluates the best checkpoint on the *validation*
split for every ``alpha`` x rules' repeat boost of the config (``fusion_rank``). The point with
the best validation metric is the only fused one tested; ``alpha = 0`` (the trained model
alone) is always tested too, as the paired reference. Test metrics choose nothing. With a
``scorers`` key the sweep also tries each kNN scorer listed there (SKNN, VSKNN, STAN, VSTAN,
each built once from the training split, at its alphas), and the best (scorer, alpha) is tested.

    python -m recbole_srgnn.fusion --config benchmarks/configs/fusion/cotrec.yaml
    python -m recbole_srgnn.fusion --config ... --seeds 2      # one seed (one per core in parallel)
    python -m recbole_srgnn.fusion --config ... --trained 1=results.json  # seed 1 trained by run.py
    python -m recbole_srgnn.fusion --config ... --only_report  # rebuild the report from finished seeds

(``python -m benchmarks.fusion`` in a checkout is the same command under its former name.)

With ``refit: true`` each recorded seed is then trained once more, on the training *and*
validation cases (the pipeline's ``train_on_valid``), for the number of epochs its validation
chose, and tested alone and fused at the alpha chosen before (a final fit: nothing is chosen on
it). The refit is added to the seed's record, which stays valid.

Every recorded seed's model (and refit) is kept in ``<out>/models/`` (git-ignored). With
``ensemble: true`` the seeds' models then also rank together, once all seeds are recorded
(``fusion_ensemble``: mean of their probabilities plus the rules, alpha chosen on
validation); a missing model file is trained again (same settings and seed).

Finished seeds (``<out>/runs/seed<N>.json``; ``<out>`` defaults to ``benchmarks/results/<name>``
of the checkout holding the config or the cwd) are never redone. A seed cut off
mid-way goes on where it stopped: its training state after every epoch (``training.runs.run``'s
``resume_file``), its best checkpoint and its training result wait in
``<out>/partial/seed<N>-<settings hash>/`` (not committed, removed once the seed is recorded), so
a rerun continues training at the next epoch, or goes straight to the sweep if training ended.
The report (``report.md``, ``runs.csv``, ``alpha_valid.png``) covers the finished seeds and says
so when some are missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import shutil
import sys
from pathlib import Path
from typing import Mapping, Sequence

from recbole_srgnn.errors import InputError, OneLineArgumentParser, cli_errors
from recbole_srgnn.experiments import fusion_ensemble, fusion_seed
from recbole_srgnn.experiments.fusion_plan import (
    FusionPlan,
    check_trained,
    load_plan,
    model_path,
    needs_refit,
    partial_path,
    read_seed,
    refit_path,
    seed_path,
    settings_hash,
)
from recbole_srgnn.experiments.fusion_report import write_report
from recbole_srgnn.experiments.results_dir import default_out
from recbole_srgnn.files import atomic_outputs, claimed

PROG = "python -m recbole_srgnn.fusion"


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


def _write_record(out: Path, seed: int, record: Mapping, scratch: Path,
                  model: tuple[str, Path] | None = None) -> None:
    """Write a seed's record atomically, keep its model file (``model``: source, target), then
    drop the work folder it came from."""
    if model is not None:
        fusion_seed.keep_model(*model)
    path = seed_path(out, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_outputs([path]) as (tmp,):
        Path(tmp).write_text(json.dumps(record, indent=1, sort_keys=True))
    shutil.rmtree(scratch, ignore_errors=True)  # recorded: its work files are done
    with contextlib.suppress(OSError):
        scratch.parent.rmdir()  # partial/, when no other seed is in progress


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="fusion config YAML (benchmarks/configs/)")
    parser.add_argument("--seeds", type=int, nargs="+", help="run only these seeds of the config")
    parser.add_argument("--only_report", action="store_true", help="train nothing; rebuild the report")
    parser.add_argument("--output", "-o", help="results folder (default benchmarks/results/<name>/)")
    parser.add_argument("--trained", nargs="+", default=[], metavar="SEED=JSON",
                        help="use a model trained before with run.py for SEED (its results JSON, "
                             "which names the checkpoint) instead of training it; its settings "
                             "must be the config's")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def _run(args: argparse.Namespace, prog: str) -> int:
    """Train, sweep and refit what the config still needs, then the ensemble, then the report."""
    plan = load_plan(args.config)
    out = Path(args.output) if args.output else default_out(plan.name, args.config, "--output")
    seeds = plan.seeds
    if args.seeds:
        unknown = sorted(set(args.seeds) - set(plan.seeds))
        if unknown:
            raise InputError(f"--seeds {' '.join(map(str, unknown))} not in the config's seeds "
                             f"{plan.seeds}")
        seeds = [s for s in plan.seeds if s in args.seeds]
    given = _parse_trained(args.trained, plan)
    command = " ".join([prog, "--config", shlex.quote(args.config)])
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
                    fusion_seed.say_held(say, f"[{i}/{len(todo)}] seed {seed}: training", scratch)
                    continue
                records[seed] = read_seed(seed_path(out, seed), expected)
                if records[seed] is None:
                    say(f"[{i}/{len(todo)}] seed {seed}: "
                        f"{'trained before' if seed in given else 'training'} {plan.model} on "
                        f"{plan.dataset}", flush=True)
                    record = fusion_seed.run_seed(plan, seed, scratch, progress=not args.quiet,
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
                    fusion_seed.say_held(say, f"[{i}/{len(todo)}] seed {seed}: refit", scratch)
                    continue
                record = records[seed] = read_seed(seed_path(out, seed), expected)
                if needs_refit(plan, record):
                    say(f"[{i}/{len(todo)}] seed {seed}: refitting {plan.model} on "
                        f"{plan.dataset}", flush=True)
                    record["refit"] = fusion_seed.refit_seed(plan, record, scratch, progress=not args.quiet)
                    checkpoint = record["refit"].pop("_checkpoint", None)
                    _write_record(out, seed, record, scratch, checkpoint and (
                        checkpoint, model_path(out, seed, expected, refit=True)))
        with contextlib.suppress(OSError):
            (out / "partial").rmdir()  # when nothing else is in progress
    if plan.ensemble and not args.only_report:
        fusion_ensemble.run(plan, out, expected, seeds=seeds, progress=not args.quiet)
    report = write_report(plan, out, command)
    if not args.quiet:
        print(f"report: {report}")
    return 0


@cli_errors
def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """The fusion command line (``prog`` names it in messages and in the report)."""
    args = build_parser(prog).parse_args(argv)
    try:
        return _run(args, prog)
    except KeyboardInterrupt:
        print("interrupted: finished seeds and the cut-off seed's last epoch are kept; rerun the "
              "command to resume", file=sys.stderr)
        return 130
