"""``python -m benchmarks.per_case``: which test cases SR-GNN and each non-neural scorer win.

Issue 30: the best "one network + one scorer" of a fusion config missed its target; this
command asks why. It loads the config's kept model of one seed (``<fusion results>/models/``,
written by the fusion runner; a missing record or model file is trained first, through the
runner's own code, so one command reproduces the numbers), builds the config's scorers on the
training split (``fusion_rank.Ranking``) and ranks every validation and test case under: the
model alone, the fusion the seed's record chose, the sequence rules alone at each of the
config's repeat boosts, each kNN scorer alone (``recbole_srgnn.experiments.per_case``). It first
checks that the model alone and the fusion reproduce the record's metrics, then reports, per
group of test cases (repeat or new target, prefix length, the target's clicks in training), each
ranker's Hit@10 and MRR@10 and who wins, and upper bounds (oracle, repeat/new gate, targets
never seen in training). A last check, on validation only: the kNN scores divided by their row
maximum, fused at a few alphas; only the point chosen on validation is tested.

    python -m benchmarks.per_case --config benchmarks/configs/fusion/cotrec-hybrid-ssm.yaml \\
        --seed 1 --output benchmarks/results/per-case-cotrec --threads 1

Outputs (atomically): ``report.md``, ``per_case.csv`` (the group tables), ``summary.json``
(every aggregate of the report). No per-case rows are written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from benchmarks import fusion
from benchmarks.team_data import use_team_data
from recbole_srgnn.errors import InputError, OneLineArgumentParser, cli_errors
from recbole_srgnn.experiments import fusion_ensemble, per_case, per_case_report
from recbole_srgnn.experiments.fusion_plan import (
    RULES,
    FusionPlan,
    label,
    load_plan,
    model_path,
    point_text,
    read_seed,
    seed_path,
    settings_hash,
)
from recbole_srgnn.experiments.fusion_rank import Ranking, rule_options, scorer_of
from recbole_srgnn.experiments.machine import machine
from recbole_srgnn.experiments.results_dir import default_out
from recbole_srgnn.experiments.tables import md_table
from recbole_srgnn.files import atomic_outputs, check_output_file
from recbole_srgnn.json_safe import finite_or_none

PROG = "python -m benchmarks.per_case"
REFERENCE = "SR-GNN"
FUSED = "fused"
NORMALISED_ALPHAS = (0.01, 0.02, 0.05, 0.1, 0.2)  # about the rules' range: both peak at 1 per row
GOALS = {"hit@10": 0.52, "mrr@10": 0.32}  # the accuracy goal set for one network + at most one scorer
TOLERANCE = fusion_ensemble.TOLERANCE  # recomputed vs recorded metrics (float noise only)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True,
                        help="fusion config YAML (benchmarks/configs/fusion/)")
    parser.add_argument("--seed", type=int, help="the seed whose kept model is analysed (default: "
                                                 "the config's first)")
    parser.add_argument("--output", "-o", help="report folder (default "
                                               "benchmarks/results/per-case-<config name>/)")
    parser.add_argument("--fusion_output", help="the fusion runner's results folder (default "
                                                "benchmarks/results/<config name>/)")
    parser.add_argument("--threads", type=int, help="torch threads (default: the config's)")
    parser.add_argument("--data_path", help="folder holding the dataset's folder (default: the "
                                            "one the model was trained from)")
    parser.add_argument("--goal_hit", type=float, default=GOALS["hit@10"],
                        help="the test Hit@10 to reach (default: the goal 0.52)")
    parser.add_argument("--goal_mrr", type=float, default=GOALS["mrr@10"],
                        help="the test MRR@10 to reach (default: the goal 0.32)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def kept_model(plan: FusionPlan, config: str, fusion_out: Path, seed: int, quiet: bool,
               say=print) -> tuple[dict, Path]:
    """The seed's record and kept model file; the fusion runner trains what is missing."""
    expected = settings_hash(plan)
    record = read_seed(seed_path(fusion_out, seed), expected)
    if record is None:
        say(f"seed {seed} has no record in {fusion_out}: running the fusion runner for it",
            flush=True)
        argv = ["--config", config, "--seeds", str(seed), "--output", str(fusion_out)]
        rc = fusion.main(argv + (["--quiet"] if quiet else []))
        record = read_seed(seed_path(fusion_out, seed), expected)
        if rc or record is None:
            raise InputError(f"the fusion runner left no record of seed {seed} in {fusion_out} "
                             f"(exit {rc}); see its message above")
    path = model_path(fusion_out, seed, expected)
    if not path.is_file():
        fusion_ensemble.ensure_models(dataclasses.replace(plan, refit=False), fusion_out,
                                      expected, {seed: record}, [seed], say)
        if not path.is_file():
            raise InputError(f"seed {seed}'s model {path} is being trained by another process; "
                             "rerun once it ends")
    return record, path


def rule_boosts(plan: FusionPlan) -> list[float]:
    """The rules' repeat boosts of the config (the setting's when it sweeps none)."""
    return list(plan.repeat_boosts) if plan.repeat_boosts else [rule_options(plan)[1]]


def base_blends(plan: FusionPlan, record: Mapping) -> list[per_case.Blend]:
    """The model alone, the recorded fusion, the rules alone per boost, each kNN scorer alone."""
    names = [spec.name for spec in plan.scorer_specs()]
    chosen = scorer_of(record)
    blends = [per_case.Blend(REFERENCE)]
    blends.append(per_case.Blend(FUSED) if chosen is None else per_case.Blend(
        FUSED, scorer=chosen, weight=float(record["chosen_alpha"]),
        boost=record.get("chosen_repeat_boost") if chosen == RULES else None))
    if RULES in names:
        blends += [per_case.Blend(f"rules b{b:g}", model=False, scorer=RULES, boost=b)
                   for b in rule_boosts(plan)]
    blends += [per_case.Blend(name, model=False, scorer=name) for name in names if name != RULES]
    return blends


def normalised_points(plan: FusionPlan) -> list[per_case.Blend]:
    """The model + each kNN scorer divided by its row maximum, at ``NORMALISED_ALPHAS``."""
    return [per_case.Blend(f"{REFERENCE} + {spec.name}/max {a:g}", scorer=spec.name, weight=a,
                           normalised=True)
            for spec in plan.scorer_specs() if spec.name != RULES for a in NORMALISED_ALPHAS]


def sweep_row(record: Mapping, blend: per_case.Blend) -> Mapping | None:
    """The record's validation sweep row of ``blend`` (None if it was not swept)."""
    for row in record.get("sweep", []):
        if blend.label == REFERENCE and not row["alpha"]:
            return row
        if (row["alpha"] and scorer_of(row) == blend.scorer and row["alpha"] == blend.weight
                and not blend.normalised and blend.model
                and (blend.scorer != RULES or row["repeat_boost"] == blend.boost)):
            return row
    return None


def reproduction(valid: per_case.Cases, test: per_case.Cases, record: Mapping,
                 blends: Sequence[per_case.Blend], ks: Sequence[int]) -> dict:
    """Recomputed vs recorded metrics: the test of the model alone and of the fusion, and every
    validation sweep row a blend stands for. InputError beyond ``TOLERANCE``."""
    pairs = [("test", REFERENCE, record["test_plain"], test),
             ("test", FUSED, record["test_fused"], test)]
    for blend in blends:
        row = sweep_row(record, blend) if blend.label in valid.ranks else None
        if row is not None:
            pairs.append(("valid", blend.label, row["valid"], valid))
    checked, worst, rows = 0, 0.0, []
    for split, name, recorded, cases in pairs:
        got = per_case.metrics(cases.ranks[name], ks)
        diffs = [abs(got[m] - float(v)) for m, v in recorded.items() if m in got]
        checked += len(diffs)
        worst = max([worst, *diffs])
        rows.append({"split": split, "ranker": name, "recorded": dict(recorded), "recomputed": got,
                     "max_diff": max(diffs)})
    if worst > TOLERANCE:
        bad = next(r for r in rows if r["max_diff"] == worst)
        raise InputError(f"the kept model does not reproduce its record: {bad['split']} metrics of "
                         f"{bad['ranker']} differ by up to {worst:.4f}; delete the model file to "
                         "train it again")
    return {"values": checked, "max_diff": worst, "exact": worst == 0.0, "rows": rows}


def best_on_valid(valid: per_case.Cases, blends: Sequence[per_case.Blend], metric: str,
                  ks: Sequence[int]) -> tuple[per_case.Blend, dict[str, float]]:
    """The blend with the best validation ``metric`` (the first of equals) and every blend's
    value."""
    values = {b.label: per_case.metrics(valid.ranks[b.label], ks, digits=12)[metric]
              for b in blends}
    best = max(blends, key=lambda b: values[b.label])
    return best, values


def normalised_check(valid: per_case.Cases, test: per_case.Cases, record: Mapping,
                     normalised: Sequence[per_case.Blend], metric: str, ks) -> dict:
    """The kNN scores divided by their row maximum, against the raw scores the record's sweep
    fused, on validation; the test of the normalised point chosen there."""
    chosen, values = best_on_valid(valid, normalised, metric, ks)
    swept = {row["name"]: row for row in record.get("scorers", [])}
    table = []
    for name in dict.fromkeys(b.scorer for b in normalised):
        mine = [b for b in normalised if b.scorer == name]
        best = max(mine, key=lambda b: values[b.label])
        raw = swept.get(name, {})
        table.append({"scorer": name, "raw_best_alpha": raw.get("best_alpha"),
                      "raw_valid": raw.get("best_valid"), "best_alpha": best.weight,
                      "valid": values[best.label],
                      "valid_by_alpha": {f"{b.weight:g}": values[b.label] for b in mine}})
    return {"metric": metric, "table": table, "chosen": chosen.label,
            "chosen_valid": values[chosen.label], "record_valid": _chosen_valid(record, metric),
            "chosen_test": per_case.metrics(test.ranks[chosen.label], ks)}


def _chosen_valid(record: Mapping, metric: str) -> float:
    """The validation value of the point the record chose (the best of its sweep)."""
    return max(float(row["valid"][metric]) for row in record["sweep"])


def head_lines(plan: FusionPlan, record: Mapping, model: Path, blends, check: Mapping,
               command: str, seconds: Mapping[str, float], threads) -> list[str]:
    chosen = scorer_of(record)
    boost = record.get("chosen_repeat_boost") if chosen == RULES else None
    fused = ("the model alone (alpha 0 was chosen)" if chosen is None else
             f"the model + {point_text(record['chosen_alpha'], boost, chosen)}")
    info = machine()
    lines = [f"# Per-case analysis: `{plan.name}`, seed {record['seed']}", "",
             "Which test cases the kept SR-GNN and each non-neural scorer win, and the "
             "upper bounds that say what would close the gap. Test metrics choose nothing: the "
             "fusion and every gate are chosen on validation (gate ceilings excepted, as named).",
             "", f"- Command: `{command}`",
             f"- Model: `{model.name}` (the fusion runner's kept model of seed {record['seed']}, "
             f"record `runs/seed{record['seed']}.json`).",
             f"- Rankers: `{REFERENCE}` = the model alone (softmax); `{FUSED}` = {fused}, the "
             "record's choice on validation; `rules bB` = SequenceRules alone at repeat boost B; "
             + ", ".join(f"`{b.label}`" for b in blends if not b.model and b.scorer != RULES)
             + " = each kNN scorer alone (the config's options). Ranks as RecBole's evaluator "
             "(ties in `torch.topk`'s order within the top 20, padding never ranked).",
             "- Case features: the target is new, the prefix's last click, or an earlier click of "
             "the prefix; prefix length (at most the longest kept prefix); the target's clicks in "
             "the training split (targets of its cases + first clicks of its sessions); whether "
             "SKNN's neighbour sessions hold the target (its SKNN score > 0).",
             f"- Machine: {info['cpu']}, torch threads {threads}; validation pass "
             f"{seconds['valid']:.0f} s, test pass {seconds['test']:.0f} s.",
             "", "## Reproduction of the record", "",
             f"{check['values']} recorded metric values (test of `{REFERENCE}` and `{FUSED}`, and "
             "the validation sweep rows recomputed here) against the ranks of this analysis: "
             + ("all equal." if check["exact"] else
                f"largest difference {check['max_diff']:.4f} (tolerance {TOLERANCE})."), ""]
    rows = [[r["split"], r["ranker"], f"{float(r['recorded']['hit@10']):.4f}",
             f"{r['recomputed']['hit@10']:.4f}", f"{float(r['recorded']['mrr@10']):.4f}",
             f"{r['recomputed']['mrr@10']:.4f}"]
            for r in check["rows"] if r["split"] == "test" or r["ranker"] in (REFERENCE, FUSED)]
    lines += md_table(["split", "ranker", "recorded Hit@10", "here Hit@10", "recorded MRR@10",
                       "here MRR@10"], rows)
    return lines


def tail_lines(check: Mapping) -> list[str]:
    metric = label(check["metric"])
    lines = ["", "## kNN scores divided by their row maximum (validation check)", "",
             "As the fusion runner swept them, the kNN scores are sums of up to k similarities, on "
             "another scale than the rules' (whose rows peak at 1). Here each kNN scorer's scores "
             "are divided by their row maximum and fused with the model at alphas "
             f"{', '.join(f'{a:g}' for a in NORMALISED_ALPHAS)}; best validation {metric}, against "
             "the best of the raw scores in the record's sweep:", ""]
    rows = [[row["scorer"], "–" if row["raw_valid"] is None else
             f"{row['raw_valid']:.4f} (alpha {row['raw_best_alpha']:g})",
             f"{row['valid']:.4f} (alpha {row['best_alpha']:g})",
             ", ".join(f"{a}: {v:.4f}" for a, v in row["valid_by_alpha"].items())]
            for row in check["table"]]
    lines += md_table(["scorer", f"raw: best valid {metric}", f"divided by the row max: best "
                       f"valid {metric}", "by alpha"], rows)
    test = check["chosen_test"]
    lines += ["", f"Best normalised point on validation: `{check['chosen']}`, valid {metric} "
              f"{check['chosen_valid']:.4f} (the record's chosen fusion: "
              f"{check['record_valid']:.4f}); its test: Hit@10 {test['hit@10']:.4f}, MRR@10 "
              f"{test['mrr@10']:.4f} (the only normalised point tested)."]
    return lines


def progress_lines(total: int, say) -> Callable[[int], None]:
    """A ``collect`` progress callback that says how far it got about every tenth of ``total``."""
    step = max(1, total // 10)
    state = {"next": step}

    def report(done: int) -> None:
        if done >= state["next"]:
            say(f"    {done}/{total} cases", flush=True)
            state["next"] = (done // step + 1) * step

    return report


def _analyse(args: argparse.Namespace) -> Path:
    import torch

    say = (lambda *a, **k: None) if args.quiet else print
    plan = load_plan(args.config)
    seed = plan.seeds[0] if args.seed is None else args.seed
    if seed not in plan.seeds:
        raise InputError(f"--seed {seed} is not in the config's seeds {plan.seeds}")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    for flag, goal in (("--goal_hit", args.goal_hit), ("--goal_mrr", args.goal_mrr)):
        if not 0 < goal <= 1:
            raise InputError(f"{flag} must be in (0, 1], got {goal:g}")
    fusion_out = (Path(args.fusion_output) if args.fusion_output
                  else default_out(plan.name, args.config, "--fusion_output"))
    out = (Path(args.output) if args.output
           else default_out(f"per-case-{plan.name}", args.config, "--output"))
    outputs = [out / "per_case.csv", out / "summary.json", out / "report.md"]
    for path in outputs:
        check_output_file(path, "--output")
    record, model = kept_model(plan, args.config, fusion_out, seed, args.quiet, say)
    threads = plan.threads if args.threads is None else args.threads
    settings = {"threads": threads, **({"data_path": args.data_path} if args.data_path else {})}
    with tempfile.TemporaryDirectory(prefix="per-case-") as scratch:
        say(f"loading {model} and building the scorers of its training split", flush=True)
        ranking = Ranking(plan, [model], checkpoint_dir=scratch, settings=settings)
        loaded = ranking.loaded
        feat = loaded.train_data._dataset.inter_feat
        net = ranking.members[0]
        clicks = per_case.training_clicks(
            torch.as_tensor(feat[net.ITEM_SEQ]).long(),
            torch.as_tensor(feat[net.ITEM_SEQ_LEN]).long().view(-1),
            torch.as_tensor(feat[net.ITEM_ID]).long().view(-1), net.n_items)
        ks = [int(k) for k in loaded.config["topk"]]
        reach = "SKNN" if "SKNN" in ranking.scorers else None
        base = base_blends(plan, record)
        normalised = normalised_points(plan)
        seconds = {}

        started = time.perf_counter()
        total = len(loaded.valid_data._dataset)
        say(f"ranking the {total} validation cases under {len(base) + len(normalised)} rankers",
            flush=True)
        valid = per_case.collect(net, ranking.scorers, loaded.valid_data, base + normalised,
                                 clicks, max(ks), reach, full=False,
                                 progress=progress_lines(total, say))
        seconds["valid"] = time.perf_counter() - started
        chosen = best_on_valid(valid, normalised, ranking.metric, ks)[0] if normalised else None
        started = time.perf_counter()
        total = len(loaded.test_data._dataset)
        say(f"ranking the {total} test cases", flush=True)
        test = per_case.collect(net, ranking.scorers, loaded.test_data,
                                base + ([chosen] if chosen else []), clicks, max(ks), reach,
                                progress=progress_lines(total, say))
        seconds["test"] = time.perf_counter() - started
    check = reproduction(valid, test, record, base, ks)
    say(f"reproduced {check['values']} recorded metric values (largest difference "
        f"{check['max_diff']:.4f})", flush=True)
    rankers = [b.label for b in base]
    goals = {"hit@10": args.goal_hit, "mrr@10": args.goal_mrr}
    summary = per_case_report.summarise(valid, test, REFERENCE, rankers[1:], goals, FUSED)
    knn = (normalised_check(valid, test, record, normalised, ranking.metric, ks)
           if normalised else None)
    command = " ".join([PROG, "--config", shlex.quote(args.config), "--seed", str(seed)]
                       + (["--output", shlex.quote(args.output)] if args.output else [])
                       + (["--threads", str(args.threads)] if args.threads else [])
                       + [f"--goal_{m} {v:g}" for m, v, d in (
                           ("hit", args.goal_hit, GOALS["hit@10"]),
                           ("mrr", args.goal_mrr, GOALS["mrr@10"])) if v != d])
    head = head_lines(plan, record, model, base, check, command, seconds, threads)
    text = per_case_report.markdown(head, summary, rankers, REFERENCE,
                                    tail_lines(knn) if knn else [])
    blob = {"config": plan.name, "seed": seed, "model": model.name, "rankers": rankers,
            "reproduction": check, "seconds": seconds,
            "threads": threads, "normalised_knn": knn,
            **{k: v for k, v in summary.items() if k != "groups"}}
    with atomic_outputs(outputs) as (csv_tmp, json_tmp, md_tmp):
        Path(csv_tmp).write_text(per_case_report.csv_rows(summary))
        Path(json_tmp).write_text(json.dumps(finite_or_none(blob), indent=1, sort_keys=True,
                                             allow_nan=False))
        Path(md_tmp).write_text(text)
    return outputs[-1]


@cli_errors
def main(argv: Sequence[str] | None = None) -> int:
    """The command line; real sources in ``../shared/data`` unless ``$RECBOLE_SRGNN_SHARED_DATA``
    says otherwise."""
    use_team_data()
    args = build_parser().parse_args(argv)
    report = _analyse(args)
    if not args.quiet:
        print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
