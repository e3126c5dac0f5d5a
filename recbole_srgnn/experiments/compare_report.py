"""The comparison report: report.md, summary.csv, runs.csv and two PNGs from the finished runs.

Nothing is trained here: ``compare_collect`` reads the finished runs and selects each row's
grid point on validation; this module writes the tables, the paired tests against the
reference row, the variants and grid sections, and the machine the runs were measured on.
"""

from __future__ import annotations

import json
from pathlib import Path

from recbole_srgnn.experiments.compare_collect import (
    METRICS,
    RUN_FIELDS,
    SIGNIFICANCE_METRICS,
    SUMMARY_FIELDS,
    TIMINGS,
    Collected,
    Row,
    collect,
    isolated,
    run_rows,
    summary_rows,
    valid_metric,
)
from recbole_srgnn.experiments.compare_config import Experiment, point_label
from recbole_srgnn.experiments.compare_notes import (
    anomaly_note,
    capped_runs,
    load_note,
    other_threads,
    resumed_note,
    any_slowed,
    threads_note,
)
from recbole_srgnn.experiments.compare_plots import plot_curves, plot_metrics
from recbole_srgnn.experiments.machine import machine
from recbole_srgnn.experiments.stats import mean_std, paired_test
from recbole_srgnn.experiments.tables import csv_text, md_table, mean_std_text, p_text
from recbole_srgnn.files import atomic_outputs


def _versions(collected: Collected) -> dict:
    run = collected.any_run() or {}
    versions = dict(run.get("versions") or {})
    for name in ("scipy", "matplotlib"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", None)
        except ImportError:
            versions[name] = None
    return versions


def _seconds_cell(row: Row, key: str) -> str:
    """Mean ± std over the selected runs of the timing ``key``; n/a when none of them holds it
    (run records written before it was measured), the count when only some do."""
    if not row.selected:
        return "–"
    values = row.field_values(key)
    if not values:
        return "n/a"
    text = mean_std_text(*mean_std(values), digits=3)
    if len(values) < len(row.selected):
        text += f" ({len(values)} of {len(row.selected)} seeds)"
    return text


def _significance_section(exp: Experiment, collected: Collected) -> list[str]:
    ref = collected.row(exp.reference)
    lines = [f"## {exp.reference} vs each baseline: paired tests over seeds", ""]
    lines.append(
        f"Baselines are the rows with another model class than {exp.reference}'s "
        f"({ref.entry.model}); its variants are compared in the next section. "
        f"Each baseline's selected grid point is paired with {exp.reference}'s by seed (the seeds "
        "both finished). Tests: two-sided paired t-test (`scipy.stats.ttest_rel`) and two-sided "
        "Wilcoxon signed-rank test (`scipy.stats.wilcoxon`, exact for small n); p < 0.05 in bold. "
        "They measure the spread over training seeds on one fixed test set, not over test cases "
        "or data splits. With n seeds the smallest possible Wilcoxon p is 2/2^n (0.25 for 3 "
        "seeds, so it cannot reach 0.05 below 6 seeds); with fewer than 2 paired seeds both are "
        "n/a. diff = " + exp.reference + " − baseline.")
    lines.append("")
    table = []
    for row in collected.rows:
        if row.entry.model == ref.entry.model:  # the reference and its variants: next section
            continue
        for key in SIGNIFICANCE_METRICS:
            label = dict(METRICS).get(key, key)
            ref_vals, other_vals = ref.values(key), row.values(key)
            test = paired_test(ref_vals, other_vals)
            seeds = sorted(set(ref_vals) & set(other_vals))
            ref_mean = mean_std([ref_vals[s] for s in seeds])[0]
            other_mean = mean_std([other_vals[s] for s in seeds])[0]
            table.append([
                row.name, label, str(test["n"]), mean_std_text(ref_mean, None), mean_std_text(other_mean, None),
                "–" if test["diff"] is None else f"{test['diff']:+.4f}",
                p_text(test["t_p"]), p_text(test["w_p"]), test["note"],
            ])
    if table:
        lines += md_table(["baseline", "metric", "n", exp.reference, "baseline", "diff",
                            "t-test p", "Wilcoxon p", "note"], table)
    else:
        lines.append("No baselines.")
    lines.append("")
    return lines


def _variants_section(exp: Experiment, collected: Collected) -> list[str]:
    ref = collected.row(exp.reference)
    variants = [row for row in collected.rows
                if row.entry.model == ref.entry.model and row.name != ref.name]
    if not variants:
        return []
    metric = valid_metric(collected)
    lines = [f"## Faithful default vs best option ({ref.entry.model} variants)", ""]
    scored = [(mean_std(row.valid_values())[0], row) for row in variants if row.selected]
    best = max(scored, key=lambda item: item[0])[1] if scored else None
    lines.append(
        f"The faithful default is `{ref.name}`; the best option is the variant with the best mean "
        f"validation {metric} at its selected grid point (chosen on validation, never on test).")
    lines.append("")
    table = []
    for row in [ref] + variants:
        mean, std = mean_std(row.valid_values())
        mark = " (faithful default)" if row is ref else (" (best option)" if row is best else "")
        table.append([f"{row.name}{mark}", f"`{json.dumps(row.entry.settings, sort_keys=True)}`",
                      point_label(row.entry.point(row.selection.tag)) if row.selection else "–",
                      mean_std_text(mean, std), str(len(row.selected))])
    lines += md_table(["variant", "settings", "selected", f"valid {metric}", "seeds"], table)
    lines.append("")
    if best is not None:
        side = []
        for key, label in METRICS:
            a, b = ref.values(key), best.values(key)
            test = paired_test(b, a)
            side.append([label, mean_std_text(*mean_std(list(a.values()))), mean_std_text(*mean_std(list(b.values()))),
                         "–" if test["diff"] is None else f"{test['diff']:+.4f}",
                         p_text(test["t_p"]), test["note"]])
        lines.append(f"Side by side (test, mean ± std over seeds; diff = {best.name} − {ref.name}, "
                     "paired by seed):")
        lines.append("")
        lines += md_table(["metric", f"{ref.name} (faithful)", f"{best.name} (best option)", "diff",
                            "t-test p", "note"], side)
        lines.append("")
    return lines


def _grid_section(exp: Experiment, collected: Collected) -> list[str]:
    metric = valid_metric(collected)
    seeds = ", ".join(map(str, exp.tuning_seeds))
    lines = ["## Grid search (validation only)", "",
             f"Mean validation {metric} over the tuning seeds ({seeds}) per grid point; the chosen "
             "point is in bold. Ties go to the earlier point.", ""]
    table = []
    for row in collected.rows:
        sel = row.selection
        for tag in row.entry.tags:
            values = sel.scores.get(tag, []) if sel else []
            mean, std = mean_std(values)
            text = mean_std_text(mean, std)
            chosen = sel is not None and tag == sel.tag
            table.append([row.name, point_label(row.entry.point(tag)),
                          f"**{text}**" if chosen else text,
                          f"{len(values)}/{len(exp.tuning_seeds)}"])
    lines += md_table(["model", "grid point", f"valid {metric}", "seeds"], table)
    lines.append("")
    return lines


def render(exp: Experiment, collected: Collected, command: str) -> str:
    metric = valid_metric(collected)
    run = collected.any_run() or {}
    lines = [f"# Comparison `{exp.name}`: {', '.join(r.name for r in collected.rows)}", ""]
    if collected.finished < collected.planned:
        missing = [f"{row.name} {row.finished}/{row.planned}" for row in collected.rows
                   if row.finished < row.planned]
        lines += [f"> **PARTIAL: {collected.finished} of {collected.planned} runs finished** "
                  f"(missing in: {', '.join(missing)}). Numbers below cover the finished runs "
                  "only; rerun the command at the end to resume.", ""]
    provisional = [row.name for row in collected.rows if row.selection and row.selection.provisional]
    if provisional:
        lines += [f"> Provisional grid selection for {', '.join(provisional)}: not every grid "
                  "point has all its tuning seeds yet.", ""]
    if exp.description:
        lines += [exp.description, ""]
    sizes = ""
    if run:
        sizes = (f" ({run.get('num_items', '?')} items; {run.get('train_cases', '?')} train / "
                 f"{run.get('valid_cases', '?')} valid / {run.get('test_cases', '?')} test cases)")
    lines += [
        f"- Dataset: `{exp.dataset}`{sizes}.",
        f"- Protocol: every model trains through `recbole_srgnn.training.runs.run` (the `run.py` "
        f"pipeline): validation every epoch, early stopping on validation {metric}, the best "
        "epoch's weights tested; full ranking over all items, one test case per (prefix → next "
        "item).",
        f"- Seeds: {', '.join(map(str, exp.seeds))}. Tuning budget: {exp.budget} grid point(s) "
        "per tunable model (the same for every model), evaluated on "
        f"{'all seeds' if exp.tune_seeds == len(exp.seeds) else f'the first {exp.tune_seeds} seed(s)'}"
        f"; per model the grid point with the best mean validation {metric} is selected and its "
        "test metrics are reported. Test metrics never choose anything.",
        f"- Shared settings: `{json.dumps(exp.settings, sort_keys=True)}`; torch threads per run: "
        f"{exp.threads if exp.threads else 'torch default'}.",
        "",
        "## Test results (selected grid point, mean ± std over seeds)", "",
    ]
    header = (["model", "selected", "seeds"] + [label for _, label in METRICS]
              + ["train s/epoch", "epochs to best valid", "peak RSS MB", "build s", "test eval s"])
    table = []
    any_shared_memory = False
    for row in collected.rows:
        sel = row.selection
        selected = point_label(row.entry.point(sel.tag)) if sel else "–"
        if sel and sel.provisional:
            selected += " (provisional)"
        cells = [row.name, selected, f"{len(row.selected)}/{len(exp.seeds)}"]
        for key, _ in METRICS:
            cells.append(mean_std_text(*mean_std(list(row.values(key).values()))))
        cells.append(mean_std_text(*mean_std(row.field_values("seconds_per_epoch")), digits=2)
                     + (" †" if any_slowed(row) else "")
                     + (" ‡" if any(other_threads(exp, run) for run in row.selected.values())
                        else ""))
        best_epochs = [e + 1 for e in row.field_values("best_epoch")]  # 1-based for readers
        cells.append(mean_std_text(*mean_std(best_epochs), digits=1))
        memory = row.field_values("peak_rss_mb")
        text = f"{max(memory):.0f}" if memory else "–"
        if memory and not isolated(row):
            text += "*"
            any_shared_memory = True
        cells.append(text)
        cells += [_seconds_cell(row, key) for key in TIMINGS]
        table.append(cells)
    lines += md_table(header, table)
    lines.append("")
    lines.append(
        "Seconds per epoch are training time only (no validation), measured in this comparison on "
        "the machine below; compare them within this report, not with other machines. Epochs to "
        "best validation count from 1. Peak RSS is the maximum over seeds of the process's peak "
        "resident memory" + (" (* = runs shared one process, so the value is the process-wide "
                             "peak so far, not the model's own)." if any_shared_memory else
                             ", one process per run.")
        + " Build s: seconds to construct the model from the training split (the kNN models' "
        "session index, SequenceRules' rule table and SessionPop's counts are built there; a "
        "neural model only initialises its weights); test eval s: seconds to load the best "
        "weights and score the test split. Both are measured in each run's pipeline; n/a = run "
        "records written before they were measured.")
    capped = capped_runs(collected)
    if capped:
        lines.append(capped)
    note = load_note(collected)
    if note:
        lines.append(note + " The machine is shared: timings are noisy.")
    resumed = resumed_note(collected)
    if resumed:
        lines.append(resumed)
    slowed = anomaly_note(collected)
    if slowed:
        lines.append(slowed)
    threads = threads_note(exp, collected)
    if threads:
        lines.append(threads)
    lines.append("")
    lines += _significance_section(exp, collected)
    lines += _variants_section(exp, collected)
    lines += _grid_section(exp, collected)
    lines += ["## Figures", "",
              "![test metrics](metrics.png)", "",
              f"![validation curves](valid_curves.png)", "",
              f"`metrics.png`: test metrics of the selected grid points, bars = mean, error bars = "
              f"standard deviation over seeds. `valid_curves.png`: validation {metric} per epoch "
              "for the selected grid point, mean over the seeds that trained that epoch (early "
              "stopping ends seeds at different epochs).", ""]
    info = machine()
    versions = _versions(collected)
    lines += ["## Machine and versions", "",
              f"- CPU: {info['cpu']}; {info['cores']} cores; RAM {info['memory_gib']} GiB; "
              f"{info['os']}; device {run.get('device', '?')}.",
              "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + ".", "",
              "## Files and how to regenerate", "",
              "- `summary.csv`: one row per model (means and standard deviations of the selected "
              "point); `runs.csv`: one row per finished run; `runs/<model>/<grid point>-seed<k>"
              ".json`: each run's full results (config, validation curve, versions).",
              "- Regenerate (finished runs are reused; delete `runs/` to start over):", "",
              f"      {command}", "",
              "- Rebuild this report from the stored runs only:", "",
              f"      {command} --only_report", ""]
    return "\n".join(lines)


def write_report(exp: Experiment, out: Path, *, command: str,
                 data_path: str | None = None) -> tuple[dict, Collected]:
    """Write report.md, summary.csv, runs.csv, metrics.png and valid_curves.png under ``out``.

    Returns (the paths by kind, the collected runs)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    collected = collect(exp, out, data_path)
    metric = valid_metric(collected) or "valid score"
    paths = {"report": out / "report.md", "summary": out / "summary.csv", "runs": out / "runs.csv",
             "metrics_png": out / "metrics.png", "curves_png": out / "valid_curves.png"}
    plot_metrics(collected, paths["metrics_png"], f"{exp.name}: test metrics (selected grid points)")
    plot_curves(collected, metric, paths["curves_png"], f"{exp.name}: validation {metric} per epoch")
    text = render(exp, collected, command)
    with atomic_outputs([paths["summary"], paths["runs"], paths["report"]]) as (summary, runs, report):
        summary.write_text(csv_text(summary_rows(exp, collected), SUMMARY_FIELDS), encoding="utf-8")
        runs.write_text(csv_text(run_rows(collected), RUN_FIELDS), encoding="utf-8")
        report.write_text(text, encoding="utf-8")
    return paths, collected
