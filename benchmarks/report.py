"""The comparison report: report.md, summary.csv, runs.csv and two PNGs from the finished runs.

Everything here reads the run JSONs under ``<out>/runs/`` (see ``benchmarks.compare``); nothing is
trained. Model selection uses validation scores only (``compare.select_point``); test metrics
are reported for the selected grid point.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from recbole_srgnn.experiments.machine import machine
from recbole_srgnn.experiments.stats import mean_std, paired_test
from recbole_srgnn.experiments.tables import csv_text, md_table, mean_std_text, p_text
from recbole_srgnn.files import atomic_outputs

from benchmarks.compare import (
    Experiment,
    ModelEntry,
    Selection,
    finished_runs,
    point_label,
    select_point,
    valid_score,
)

METRICS = [
    ("hit@1", "Hit@1 (next-item accuracy)"),
    ("hit@5", "Hit@5"),
    ("hit@10", "Hit@10"),
    ("hit@20", "Hit@20"),
    ("mrr@10", "MRR@10"),
    ("mrr@20", "MRR@20"),
    ("ndcg@10", "NDCG@10"),
]
SIGNIFICANCE_METRICS = ["hit@1", "hit@10", "mrr@10", "mrr@20"]


# ---------------------------------------------------------------------------------------------
# Collecting
# ---------------------------------------------------------------------------------------------
@dataclass
class Row:
    entry: ModelEntry
    runs: dict                          # (tag, seed) -> run, every finished current run
    selection: Selection | None
    planned: int
    finished: int
    selected: dict = field(default_factory=dict)   # seed -> run of the selected point

    @property
    def name(self) -> str:
        return self.entry.name

    def values(self, key: str) -> dict[int, float]:
        """seed -> test metric ``key`` of the selected point."""
        out = {}
        for seed, run in self.selected.items():
            value = (run.get("test_result") or {}).get(key)
            if value is not None:
                out[seed] = float(value)
        return out

    def field_values(self, key: str) -> list[float]:
        return [float(run[key]) for run in self.selected.values() if run.get(key) is not None]

    def ordered_runs(self) -> list[tuple[tuple[str, int], dict]]:
        """((tag, seed), run) of every finished run, in grid order, then by seed."""
        return sorted(self.runs.items(), key=lambda kv: (self.entry.tags.index(kv[0][0]), kv[0][1]))

    def valid_values(self) -> list[float]:
        return [v for v in (valid_score(run) for run in self.selected.values()) if v is not None]


@dataclass
class Collected:
    rows: list[Row]
    planned: int
    finished: int

    def row(self, name: str) -> Row:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    def any_run(self) -> dict | None:
        for row in self.rows:
            for run in row.runs.values():
                return run
        return None


def collect(exp: Experiment, out: Path, data_path: str | None = None) -> Collected:
    rows = []
    for entry in exp.models:
        runs = finished_runs(exp, entry, out, data_path)
        selection = select_point(entry, runs, exp.tuning_seeds)
        finished = sum((tag, seed) in runs for tag in entry.tags for seed in exp.tuning_seeds)
        selected = {}
        if selection is not None:
            if not selection.provisional:
                finished += sum((selection.tag, seed) in runs for seed in exp.other_seeds)
            selected = {seed: runs[(selection.tag, seed)] for seed in exp.seeds
                        if (selection.tag, seed) in runs}
        rows.append(Row(entry, runs, selection, exp.planned_runs(entry), finished, selected))
    return Collected(rows, sum(r.planned for r in rows), sum(r.finished for r in rows))


# ---------------------------------------------------------------------------------------------
# Versions
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------
SUMMARY_FIELDS = (
    ["name", "model", "settings", "selected", "selection_provisional", "seeds_finished",
     "seeds_planned", "runs_finished", "runs_planned", "valid_metric", "valid_mean", "valid_std"]
    + [f"{key}_{stat}" for key, _ in METRICS for stat in ("mean", "std")]
    + ["seconds_per_epoch_mean", "seconds_per_epoch_std", "best_epoch_mean", "epochs_trained_mean",
       "peak_rss_mb_mean", "peak_rss_mb_max", "memory_per_run"]
)
RUN_FIELDS = (["name", "model", "tag", "grid_point", "seed", "phase", "selected", "valid_metric",
               "valid_score"] + [key for key, _ in METRICS]
              + ["seconds_per_epoch", "best_epoch", "epochs_trained", "peak_rss_mb", "isolated",
                 "wall_seconds", "file"])


def _num(value: float | None, digits: int = 6) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _valid_metric(collected: Collected) -> str:
    run = collected.any_run() or {}
    return str(run.get("valid_metric") or "").lower()


def _isolated(row: Row) -> bool:
    return bool(row.selected) and all((run.get("compare") or {}).get("isolated")
                                      for run in row.selected.values())


def summary_rows(exp: Experiment, collected: Collected) -> list[dict]:
    metric = _valid_metric(collected)
    rows = []
    for row in collected.rows:
        sel = row.selection
        record = {
            "name": row.name, "model": row.entry.model,
            "settings": json.dumps(row.entry.settings, sort_keys=True),
            "selected": json.dumps(row.entry.point(sel.tag), sort_keys=True) if sel else "",
            "selection_provisional": "" if sel is None else str(sel.provisional).lower(),
            "seeds_finished": len(row.selected), "seeds_planned": len(exp.seeds),
            "runs_finished": row.finished, "runs_planned": row.planned, "valid_metric": metric,
        }
        mean, std = mean_std(row.valid_values())
        record["valid_mean"], record["valid_std"] = _num(mean), _num(std)
        for key, _ in METRICS:
            mean, std = mean_std(list(row.values(key).values()))
            record[f"{key}_mean"], record[f"{key}_std"] = _num(mean), _num(std)
        mean, std = mean_std(row.field_values("seconds_per_epoch"))
        record["seconds_per_epoch_mean"], record["seconds_per_epoch_std"] = _num(mean, 3), _num(std, 3)
        record["best_epoch_mean"] = _num(mean_std(row.field_values("best_epoch"))[0], 2)
        record["epochs_trained_mean"] = _num(mean_std(row.field_values("epochs_trained"))[0], 2)
        memory = row.field_values("peak_rss_mb")
        record["peak_rss_mb_mean"] = _num(mean_std(memory)[0], 1)
        record["peak_rss_mb_max"] = _num(max(memory) if memory else None, 1)
        record["memory_per_run"] = str(_isolated(row)).lower() if row.selected else ""
        rows.append(record)
    return rows


def run_rows(collected: Collected) -> list[dict]:
    rows = []
    for row in collected.rows:
        sel_tag = row.selection.tag if row.selection else None
        for (tag, seed), run in row.ordered_runs():
            block = run.get("compare") or {}
            test = run.get("test_result") or {}
            record = {
                "name": row.name, "model": row.entry.model, "tag": tag,
                "grid_point": json.dumps(row.entry.point(tag), sort_keys=True), "seed": seed,
                "phase": block.get("phase", ""), "selected": str(tag == sel_tag).lower(),
                "valid_metric": run.get("valid_metric", ""), "valid_score": _num(valid_score(run)),
                **{key: _num(test.get(key)) for key, _ in METRICS},
                "seconds_per_epoch": _num(run.get("seconds_per_epoch"), 3),
                "best_epoch": run.get("best_epoch", ""), "epochs_trained": run.get("epochs_trained", ""),
                "peak_rss_mb": run.get("peak_rss_mb", ""),
                "isolated": str(bool(block.get("isolated"))).lower(),
                "wall_seconds": block.get("wall_seconds", ""),
                "file": f"runs/{row.name}/{tag}-seed{seed}.json",
            }
            rows.append(record)
    return rows


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------
def _plot_metrics(collected: Collected, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in collected.rows if row.selected]
    keys = [key for key, _ in METRICS]
    labels = ["Hit@1\n(next-item acc.)" if key == "hit@1" else label for key, label in METRICS]
    fig, ax = plt.subplots(figsize=(max(7.0, 1.3 * len(keys) + 0.4 * len(rows)), 4.5))
    width = 0.8 / max(1, len(rows))
    for i, row in enumerate(rows):
        means, errs = [], []
        for key in keys:
            mean, std = mean_std(list(row.values(key).values()))
            means.append(mean if mean is not None else 0.0)
            errs.append(std if std is not None else 0.0)
        xs = [k + (i - (len(rows) - 1) / 2) * width for k in range(len(keys))]
        ax.bar(xs, means, width, yerr=errs, capsize=2, label=f"{row.name} (n={len(row.selected)})")
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("test score (mean ± std over seeds)")
    ax.set_title(title, fontsize=10)
    if rows:
        ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_outputs([path]) as (tmp,):
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def valid_curve(row: Row, metric: str) -> list[tuple[int, float, int]]:
    """(epoch, mean validation value over the seeds that reached it, how many) for the selected point."""
    per_epoch: dict[int, list[float]] = {}
    for run in row.selected.values():
        for entry in run.get("valid_curve") or []:
            value = entry.get(metric, entry.get("valid_score"))
            if value is not None and entry.get("epoch") is not None:
                per_epoch.setdefault(int(entry["epoch"]), []).append(float(value))
    return [(epoch, statistics.fmean(vals), len(vals)) for epoch, vals in sorted(per_epoch.items())]


def _plot_curves(collected: Collected, metric: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for row in collected.rows:
        curve = valid_curve(row, metric)
        if not curve:
            continue
        xs = [epoch + 1 for epoch, _, _ in curve]  # RecBole counts epochs from 0
        ax.plot(xs, [mean for _, mean, _ in curve], marker="o", markersize=3, label=row.name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {metric} (mean over seeds)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_outputs([path]) as (tmp,):
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# report.md
# ---------------------------------------------------------------------------------------------
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
    metric = _valid_metric(collected)
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
    metric = _valid_metric(collected)
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


def _capped_runs(collected: Collected) -> str:
    """A warning when selected runs had their best validation in the last allowed epoch."""
    hit, total = [], 0
    for row in collected.rows:
        for run in row.selected.values():
            total += 1
            cap = (run.get("config") or {}).get("epochs")
            best = run.get("best_epoch")
            if isinstance(cap, int) and cap > 1 and best is not None and int(best) + 1 >= cap:
                hit.append(row.name)
    if not hit:
        return ""
    names = ", ".join(f"{name} ×{hit.count(name)}" for name in dict.fromkeys(hit))
    return (f"{len(hit)} of {total} reported runs had their best validation score in the last "
            f"allowed epoch (the `epochs` cap) and might improve with more epochs: {names}.")


def _load_note(collected: Collected) -> str:
    loads = []
    for row in collected.rows:
        for run in row.runs.values():
            block = run.get("compare") or {}
            for key in ("load_average_start", "load_average_end"):
                value = block.get(key)
                if value:
                    loads.append(float(value[0]))
    if not loads:
        return ""
    return (f"1-minute load average during the runs: {min(loads):.1f} to {max(loads):.1f} "
            f"(mean {statistics.fmean(loads):.1f}).")


def _run_label(row: Row, tag: str, seed: int) -> str:
    """e.g. ``GRU4Rec lr=0.003 seed 2``; no grid label for an untuned row."""
    label = point_label(row.entry.point(tag))
    return f"{row.name}{' ' + label if label != '(no grid)' else ''} seed {seed}"


def _flagged_runs(collected: Collected, detail) -> list[str]:
    """``<run label> (<detail>)`` for each finished run whose ``detail(row, run)`` is not empty."""
    flagged = []
    for row in collected.rows:
        for (tag, seed), run in row.ordered_runs():
            text = detail(row, run)
            if text:
                flagged.append(f"{_run_label(row, tag, seed)} ({text})")
    return flagged


def _resumed_note(collected: Collected) -> str:
    def parts(row: Row, run: Mapping[str, Any]) -> str:
        count = run.get("training_parts") or 1
        return f"{count} parts" if count > 1 else ""

    resumed = _flagged_runs(collected, parts)
    if not resumed:
        return ""
    names = ", ".join(resumed)
    return (f"{len(resumed)} run(s) were cut off and continued from their last finished epoch "
            f"(resume states; the result equals an uninterrupted run's, and their seconds per "
            f"epoch are each epoch's own): {names}.")


def slowed_epochs(row: Row, run: Mapping[str, Any]) -> tuple[int, int]:
    """(epochs timed with torch's autograd anomaly detection on, epochs) of one run.

    RecBole 1.2.1's SINE module turns the detection on for the whole process when RecBole's
    sequential models are imported; the pipeline turns it off again and records the switch per
    epoch. Epochs recorded before that carry no flag: for RecBole's models they ran with it on."""
    from recbole_srgnn.model import MODELS

    builtin = row.entry.model not in MODELS
    curve = run.get("valid_curve") or []
    return sum(1 for entry in curve if entry.get("anomaly_detection", builtin)), len(curve)


def _slowed(row: Row) -> bool:
    return any(slowed_epochs(row, run)[0] for run in row.selected.values())


def _anomaly_note(collected: Collected) -> str:
    def slowed(row: Row, run: Mapping[str, Any]) -> str:
        on, epochs = slowed_epochs(row, run)
        return f"{on} of {epochs} epochs" if on else ""

    runs = _flagged_runs(collected, slowed)
    if not runs:
        return ""
    return ("† Seconds per epoch inflated: these runs trained some or all epochs with torch's "
            "autograd anomaly detection on, which RecBole 1.2.1's SINE module switches on for the "
            "whole process once RecBole's sequential models are imported (recbole_srgnn switches "
            "it off again since 2026-11-30; epochs recorded before that are counted as on for "
            "RecBole's models). It records a stack trace per autograd operation and changes no "
            "result (a GRU4Rec training batch measured 1.5× slower with it on). Compare training "
            f"speed with `benchmarks/speed.py` instead: {'; '.join(runs)}.")


def _other_threads(exp: Experiment, run: Mapping[str, Any]) -> int | None:
    """The run's torch threads where they differ from the config's (``--threads``), else None."""
    threads = (run.get("compare") or {}).get("threads")
    return threads if threads and threads != exp.threads else None


def _threads_note(exp: Experiment, collected: Collected) -> str:
    runs = _flagged_runs(collected, lambda row, run: str(_other_threads(exp, run) or ""))
    if not runs:
        return ""
    return ("‡ Trained with another number of torch threads than the config's "
            f"{exp.threads if exp.threads else 'torch default'} (`--threads`; results do not "
            "depend on it beyond floating-point rounding, seconds per epoch do): "
            + "; ".join(runs) + ".")


def render(exp: Experiment, collected: Collected, command: str) -> str:
    metric = _valid_metric(collected)
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
        f"- Protocol: every model trains through `recbole_srgnn.pipeline.run` (the `run.py` "
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
              + ["train s/epoch", "epochs to best valid", "peak RSS MB"])
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
                     + (" †" if _slowed(row) else "")
                     + (" ‡" if any(_other_threads(exp, run) for run in row.selected.values())
                        else ""))
        best_epochs = [e + 1 for e in row.field_values("best_epoch")]  # 1-based for readers
        cells.append(mean_std_text(*mean_std(best_epochs), digits=1))
        memory = row.field_values("peak_rss_mb")
        text = f"{max(memory):.0f}" if memory else "–"
        if memory and not _isolated(row):
            text += "*"
            any_shared_memory = True
        cells.append(text)
        table.append(cells)
    lines += md_table(header, table)
    lines.append("")
    lines.append(
        "Seconds per epoch are training time only (no validation), measured in this comparison on "
        "the machine below; compare them within this report, not with other machines. Epochs to "
        "best validation count from 1. Peak RSS is the maximum over seeds of the process's peak "
        "resident memory" + (" (* = runs shared one process, so the value is the process-wide "
                             "peak so far, not the model's own)." if any_shared_memory else
                             ", one process per run."))
    capped = _capped_runs(collected)
    if capped:
        lines.append(capped)
    note = _load_note(collected)
    if note:
        lines.append(note + " The machine is shared: timings are noisy.")
    resumed = _resumed_note(collected)
    if resumed:
        lines.append(resumed)
    slowed = _anomaly_note(collected)
    if slowed:
        lines.append(slowed)
    threads = _threads_note(exp, collected)
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
              f"      {command} --only-report", ""]
    return "\n".join(lines)


def write_report(exp: Experiment, out: Path, *, command: str,
                 data_path: str | None = None) -> tuple[dict, Collected]:
    """Write report.md, summary.csv, runs.csv, metrics.png and valid_curves.png under ``out``.

    Returns (the paths by kind, the collected runs)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    collected = collect(exp, out, data_path)
    metric = _valid_metric(collected) or "valid score"
    paths = {"report": out / "report.md", "summary": out / "summary.csv", "runs": out / "runs.csv",
             "metrics_png": out / "metrics.png", "curves_png": out / "valid_curves.png"}
    _plot_metrics(collected, paths["metrics_png"], f"{exp.name}: test metrics (selected grid points)")
    _plot_curves(collected, metric, paths["curves_png"], f"{exp.name}: validation {metric} per epoch")
    text = render(exp, collected, command)
    with atomic_outputs([paths["summary"], paths["runs"], paths["report"]]) as (summary, runs, report):
        summary.write_text(csv_text(summary_rows(exp, collected), SUMMARY_FIELDS), encoding="utf-8")
        runs.write_text(csv_text(run_rows(collected), RUN_FIELDS), encoding="utf-8")
        report.write_text(text, encoding="utf-8")
    return paths, collected
