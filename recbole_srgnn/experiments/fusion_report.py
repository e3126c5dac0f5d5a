"""The fusion report: report.md, runs.csv and alpha_valid.png from the recorded seeds.

Nothing is trained here. The report shows the test results of the model alone and fused (alpha
chosen on validation), of the refits and the ensemble when the config asks for them, paired
tests over the seeds, and each seed's validation sweep. Where the config lists ``scorers``, it
also names the scorer each seed chose and shows every scorer's best validation figure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

from recbole_srgnn.experiments import fusion_ensemble
from recbole_srgnn.experiments.compare_collect import SIGNIFICANCE_METRICS
from recbole_srgnn.experiments.fusion_plan import (
    METRICS,
    FusionPlan,
    label,
    point_text,
    read_seed,
    seed_path,
    settings_hash,
)
from recbole_srgnn.experiments.fusion_rank import metrics_of, scorer_of
from recbole_srgnn.experiments.machine import machine
from recbole_srgnn.experiments.stats import mean_std, paired_test, wilson_interval
from recbole_srgnn.experiments.tables import csv_text, md_table, mean_std_text, p_text
from recbole_srgnn.files import atomic_outputs


def _reference_rows(plan: FusionPlan) -> dict[str, list[dict]]:
    rows = {}
    for name, paths in plan.references.items():
        found = []
        for path in paths:
            try:
                found.append(json.loads(plan.read(path)))
            except (OSError, ValueError):
                continue
        rows[name] = found
    return rows


def metrics_row(name: str, tests: Sequence[Mapping]) -> list[str]:
    """A test table row: ``name``, how many results, then each metric's mean ± std over them."""
    cells = [name, str(len(tests))]
    for m in METRICS:
        cells.append(mean_std_text(*mean_std([t[m] for t in tests if m in t])))
    return cells


def _chosen(record: Mapping, point: Mapping) -> bool:
    return (point["alpha"] == record["chosen_alpha"]
            and point.get("repeat_boost") == record.get("chosen_repeat_boost")
            and scorer_of(point) == scorer_of(record))


def _named(plan: FusionPlan) -> bool:
    """Whether the config lists its scorers (the report then names them)."""
    return plan.scorers is not None


def _chosen_text(record: Mapping, named: bool) -> str:
    return point_text(record["chosen_alpha"], record.get("chosen_repeat_boost"),
                      (scorer_of(record) or "the model alone") if named else None)


def _scorer_text(plan: FusionPlan, spec) -> str:
    """```SKNN` (alpha in {0.01, 0.1}, options `{"k": 50}`)``."""
    alphas = ", ".join(f"{a:g}" for a in plan.alphas_of(spec))
    options = f", options `{json.dumps(spec.options, sort_keys=True)}`" if spec.options else ""
    return f"`{spec.name}` (alpha in {{{alphas}}}{options})"


def scorer_lines(plan: FusionPlan, records: Sequence[dict], metric: str) -> list[str]:
    """The best validation figure of every scorer per seed, and the one chosen."""
    names = [spec.name for spec in plan.scorer_specs()]
    rows = []
    for r in records:
        best = {entry["name"]: entry for entry in r.get("scorers") or []}
        cells = [str(r["seed"])]
        for name in names:
            entry = best.get(name) or {}
            value = entry.get("best_valid")
            point = "" if value is None else point_text(entry["best_alpha"],
                                                        entry.get("best_repeat_boost"))
            cells.append("–" if value is None else f"{value:.4f} ({point})")
        cells.append(scorer_of(r) or "none (alpha 0)")
        rows.append(cells)
    return [f"## Scorers: best validation {label(metric)} per seed", "",
            "Each scorer's best point of the sweep (alpha 0 excluded); the seed's scorer and "
            "alpha are those of the best validation value overall (alpha 0 included).",
            ""] + md_table(["seed", *names, "chosen"], rows)


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
    named = _named(plan)
    title = "SR-GNN + a non-neural scorer" if named else "SR-GNN + sequence rules"
    lines = [f"# {title}: `{plan.name}`", ""]
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
        "- Protocol: each seed trains once (the model alone; validation every epoch, early stopping "
        f"on validation {metric}), then its best checkpoint ranks items by "
        "`softmax(SR-GNN) + alpha * rules` for alpha in "
        f"{{0, {', '.join(f'{a:g}' for a in plan.alphas)}}} × the rules' repeat boost in "
        f"{{{', '.join(f'{b:g}' for b in _boosts(records, plan))}}} on the **validation** split; the "
        f"point with the best validation {metric} is tested, and so is alpha = 0 (the model alone) for "
        "the paired comparison. The rules are the SequenceRules scorer of the same training split "
        f"({_rule_text(records)}). Test metrics choose nothing.",
    ]
    if named:
        lines.append(
            "- Scorers: the sweep tries each of "
            + ", ".join(_scorer_text(plan, spec) for spec in plan.scorer_specs())
            + " in place of the rules (each built once from the training split); the (scorer, "
            "alpha) pair with the best validation value is the one tested.")
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
    table = [metrics_row("SR-GNN option alone (alpha = 0)", [r["test_plain"] for r in records]),
             metrics_row("SR-GNN + scorer (scorer and alpha chosen on validation)" if named
                         else "SR-GNN + rules (alpha chosen on validation)",
                         [r["test_fused"] for r in records])]
    if refits:
        table += [metrics_row("refit on train + valid, alone", [r["refit"]["test_plain"] for r in refits]),
                  metrics_row("refit on train + valid + rules (same alpha)",
                       [r["refit"]["test_fused"] for r in refits])]
    if ensembled:
        table += ensemble_table_rows(ensembled)
    for name, runs in _reference_rows(plan).items():
        table.append(metrics_row(f"{name} (reference)", [metrics_of(r.get("test_result")) for r in runs]))
    lines += md_table(header, table)
    lines += ["", ("Chosen scorer and alpha per seed: " if named else "Chosen alpha per seed: ")
              + (", ".join(f"seed {r['seed']}: {_chosen_text(r, named)}" for r in records)
                 or "–") + ".", ""]
    if named:
        lines += scorer_lines(plan, records, metric) + [""]
    lines += ["## Fused vs the model alone: paired over seeds", "",
              "Two-sided paired t-test and Wilcoxon signed-rank test over training seeds on one "
              "fixed test set (p < 0.05 in bold); diff = fused − alone.", ""]
    lines += _paired_table(records, lambda r: r["test_fused"], lambda r: r["test_plain"])
    if refits:
        lines += ["", "## Refit on train + valid vs trained on train only (both with the rules)",
                  "", "Same tests, over the refitted seeds; diff = refit − train only.", ""]
        lines += _paired_table(refits, lambda r: r["refit"]["test_fused"], lambda r: r["test_fused"])
    if ensembled:
        lines += [""] + ensemble_report_lines(ensembled, data.get("test_cases"), named)
    elif plan.ensemble:
        lines += ["", "## Ensemble of the seeds' models", "",
                  "Not measured yet: it runs once every seed is recorded"
                  + (" and refitted." if plan.refit else ".")]
    lines += ["", f"## Validation {label(metric)} by alpha", ""]
    sweep_rows = []
    for r in records:
        for s in r["sweep"]:
            sweep_rows.append([str(r["seed"]), *([scorer_of(s) or "–"] if named else []),
                               f"{s['alpha']:g}",
                               "–" if s.get("repeat_boost") is None else f"{s['repeat_boost']:g}",
                               f"{s['valid'][metric]:.4f}", f"{s['valid']['hit@10']:.4f}",
                               "yes" if _chosen(r, s) else ""])
    lines += md_table(["seed", *(["scorer"] if named else []), "alpha", "repeat boost",
                       f"valid {label(metric)}", "valid Hit@10", "chosen"], sweep_rows)
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


def run_rows(records: Sequence[dict], named: bool = False) -> list[dict]:
    """runs.csv's rows (with a ``scorer`` column where the config names its scorers)."""
    rows = []
    for r in records:
        for s in r["sweep"]:
            row = {"seed": r["seed"], "alpha": s["alpha"], "repeat_boost": s.get("repeat_boost"),
                   "split": "valid", "chosen": _chosen(r, s)}
            if named:
                row["scorer"] = scorer_of(s)
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
            if named:
                row["scorer"] = scorer_of(r) if alpha else None
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
        curves = {(scorer_of(s), s["repeat_boost"]) for s in r["sweep"][1:]}
        for scorer, boost in sorted(curves, key=lambda c: (c[0], -1 if c[1] is None else c[1])):
            line = [plain] + [s for s in r["sweep"][1:]
                              if (scorer_of(s), s["repeat_boost"]) == (scorer, boost)]
            what = ("" if "scorer" not in plain else f", {scorer}") + (
                "" if boost is None else f", repeat boost {boost:g}")
            ax.plot([s["alpha"] for s in line], [s["valid"][metric] for s in line], marker="o",
                    label=f"seed {r['seed']}{what}")
    if records:
        ax.set_ylabel(f"validation {label(records[0]['valid_metric'])}")
    ax.set_xlabel("alpha (weight of the scorer)" if records and "scorer" in records[0]["sweep"][0]
                  else "alpha (weight of the rules)")
    ax.set_xscale("symlog", linthresh=0.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def write_report(plan: FusionPlan, out: Path, command: str) -> Path:
    expected = settings_hash(plan)
    records = [r for s in plan.seeds if (r := read_seed(seed_path(out, s), expected))]
    ensembled = fusion_ensemble.read(out, expected, plan) if plan.ensemble else None
    report = out / "report.md"
    with atomic_outputs([out / "runs.csv", out / "alpha_valid.png", report]) as (csv_file, png, md):
        Path(md).write_text(render(plan, records, command, ensembled))
        named = _named(plan)
        rows = run_rows(records, named) + (ensemble_csv_rows(ensembled, named) if ensembled else [])
        columns = ["seed", *(["scorer"] if named else []), "alpha", "repeat_boost", "split",
                   "chosen", *METRICS]
        Path(csv_file).write_text(csv_text(rows, columns))
        _plot(records, Path(png))
    return report



# ---------------------------------------------------------------------------------------------
# The ensemble's parts
# ---------------------------------------------------------------------------------------------
def ensemble_table_rows(result: Mapping) -> list[list[str]]:
    """Rows for the fusion report's test table."""
    n = f"{len(result['seeds'])} (one ensemble)"
    rows = [("ensemble of the seeds' models, alone", result["test_plain"]),
            ("ensemble + rules (alpha chosen on validation)", result["test_fused"])]
    if result.get("refit"):
        rows += [("ensemble of the refits, alone", result["refit"]["test_plain"]),
                 ("ensemble of the refits + rules (same alpha)", result["refit"]["test_fused"])]
    table = []
    for name, test in rows:
        cells = metrics_row(name, [test])
        cells[1] = n
        table.append(cells)
    return table


def sampling_line(result: Mapping, test_cases: int | None) -> str | None:
    """The test split's sampling error of the best ensemble's Hit@10 (a proportion of test cases)."""
    if not test_cases:
        return None
    name, best = (("refit ensemble + rules", result["refit"]["test_fused"]) if result.get("refit")
                  else ("ensemble + rules", result["test_fused"]))
    low, high = wilson_interval(best["hit@10"], test_cases)
    return (f"Sampling error of the test split: Hit@10 of the {name}, {best['hit@10']:.4f}, is a "
            f"proportion of {test_cases} test cases; its 95 % Wilson interval is "
            f"[{low:.4f}, {high:.4f}]. A fixed target inside it is neither met nor missed beyond "
            "doubt by this test split.")


def _ensemble_chosen(result: Mapping, row: Mapping) -> bool:
    return ((row["alpha"], row.get("repeat_boost"), scorer_of(row))
            == (result["chosen_alpha"], result["chosen_repeat_boost"], scorer_of(result)))


def ensemble_report_lines(result: Mapping, test_cases: int | None = None,
                          named: bool = False) -> list[str]:
    metric = result["valid_metric"]
    chosen = point_text(result["chosen_alpha"], result["chosen_repeat_boost"],
                        (scorer_of(result) or "the models alone") if named else None)
    checks = ", ".join(f"seed {c['seed']} {c['model']} ({c['split']}, {c['max_diff']:.1e})"
                       for c in result["member_checks"])
    lines = ["## Ensemble of the seeds' models", "",
             f"The seeds' models rank together: the mean of their softmax probabilities plus alpha × "
             f"the rules. Alpha is chosen on the **validation** split (best {label(metric)}) "
             f"at the repeat boost(s) the seeds chose ({', '.join('–' if b is None else f'{b:g}' for b in result['repeat_boosts'])}); "
             + ("(scorer chosen too) " if named else "") + f"chosen: {chosen}. "
             + ("The refit models' ensemble is tested at the same point. " if result.get("refit") else "")
             + "Every member first reproduced its own record (largest metric difference): "
             f"{checks}.", ""]
    lines += md_table(
        [*(["scorer"] if named else []), "alpha", "repeat boost", f"valid {label(metric)}",
         "valid Hit@10", "chosen"],
        [[*([scorer_of(s) or "–"] if named else []), f"{s['alpha']:g}",
          "–" if s.get("repeat_boost") is None else f"{s['repeat_boost']:g}",
          f"{s['valid'][metric]:.4f}", f"{s['valid']['hit@10']:.4f}",
          "yes" if _ensemble_chosen(result, s) else ""]
         for s in result["sweep"]])
    sampling = sampling_line(result, test_cases)
    return lines + (["", sampling] if sampling else [])


def ensemble_csv_rows(result: Mapping, named: bool = False) -> list[dict]:
    rows = []
    chosen = (result["chosen_alpha"], result["chosen_repeat_boost"])
    for s in result["sweep"]:
        row = {"seed": "ensemble", "alpha": s["alpha"], "repeat_boost": s.get("repeat_boost"),
               "split": "valid", "chosen": _ensemble_chosen(result, s)}
        if named:
            row["scorer"] = scorer_of(s)
        row.update({m: s["valid"].get(m) for m in METRICS})
        rows.append(row)
    tests: list[tuple[str, Sequence, Mapping]] = [("test", (0.0, None), result["test_plain"])]
    if result["chosen_alpha"]:
        tests.append(("test", chosen, result["test_fused"]))
    if result.get("refit"):
        tests.append(("test-refit", (0.0, None), result["refit"]["test_plain"]))
        if result["chosen_alpha"]:
            tests.append(("test-refit", chosen, result["refit"]["test_fused"]))
    for split, (alpha, boost), test in tests:
        row = {"seed": "ensemble", "alpha": alpha, "repeat_boost": boost, "split": split,
               "chosen": alpha == result["chosen_alpha"]}
        if named:
            row["scorer"] = scorer_of(result) if alpha else None
        row.update({m: test.get(m) for m in METRICS})
        rows.append(row)
    return rows
