"""The outputs of a Ray Tune search made from its trial records: ``trials.csv``, ``best.yaml``
(a config file for ``run.py --config_files``), ``valid_curves.png`` and ``report.md`` (the search,
the best configuration with its test metrics, every trial, the per-trial overhead)."""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from recbole_srgnn.experiments.tables import md_table
from recbole_srgnn.files import atomic_outputs
from recbole_srgnn.tune.records import STATUSES, TrialRecord


# ---------------------------------------------------------------------------------------------
# trials.csv
# ---------------------------------------------------------------------------------------------
def trials_csv_text(records: list[TrialRecord], param_names: list[str], metric: str) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["trial_id", "status", *param_names, "valid_metric", "best_valid_score", "best_epoch",
         "epochs_run", "last_valid_score", "wall_seconds", "train_seconds", "overhead_seconds",
         "error", "trial_dir", "node_ip", "node_id"]
    )
    for r in records:
        last = r.curve[-1][1] if r.curve else None
        writer.writerow(
            [r.trial_id, r.status, *[_cell(r.params.get(name)) for name in param_names], metric,
             _cell(r.best_valid_score), _cell(r.best_epoch), r.epochs_run, _cell(last),
             _cell(r.wall_seconds, 2), _cell(r.train_seconds, 2), _cell(r.overhead_seconds, 2),
             r.error or "", r.trial_dir, r.node_ip or "", r.node_id or ""]
        )
    return buffer.getvalue()


def _cell(value: Any, digits: int | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}" if digits is not None else f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


# ---------------------------------------------------------------------------------------------
# best.yaml
# ---------------------------------------------------------------------------------------------
def best_yaml_text(
    best: TrialRecord, *, searched: list[str], fixed: Mapping[str, Any], options: Mapping[str, Any],
    max_epochs: int, header: list[str],
) -> str:
    """A config file for ``run.py --config_files``: searched values, the space's fixed values,
    the command line's options and the epoch budget, each group commented."""
    lines = [f"# {line}" if line else "#" for line in header]

    def block(title: str, items: Mapping[str, Any]) -> None:
        if not items:
            return
        lines.append("")
        lines.append(f"# {title}")
        for key, value in items.items():
            nested = isinstance(value, (list, tuple, dict))
            lines.append(yaml.safe_dump({key: value}, default_flow_style=None if nested else False,
                                        sort_keys=False, width=10_000).rstrip("\n"))

    block("searched (values of the best trial):", {k: best.values[k] for k in searched if k in best.values})
    block("fixed in the space file:", {k: v for k, v in fixed.items() if k not in searched})
    block("set on the tune command line (every trial):", options)
    block("epoch budget of each trial (--max_epochs):", {"epochs": int(max_epochs)})
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# plot and report.md
# ---------------------------------------------------------------------------------------------
def plot_curves(records: list[TrialRecord], best: TrialRecord | None, metric: str,
                path: str | os.PathLike) -> Path:
    """PNG: per-epoch validation curves of every trial, and the best score per trial."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    colors = {"completed": "tab:blue", "stopped": "tab:orange", "failed": "tab:red",
              "interrupted": "tab:gray"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in records:
        points = [(e, s) for e, s in r.curve if isinstance(s, (int, float))]
        if not points:
            continue
        xs, ys = zip(*points)
        is_best = best is not None and r.trial_id == best.trial_id
        left.plot(xs, ys, marker="o", markersize=3, linewidth=2.4 if is_best else 1.0,
                  color="black" if is_best else colors.get(r.status, "tab:blue"),
                  alpha=1.0 if is_best else 0.6, label=f"best: trial {r.index}" if is_best else None)
    from matplotlib.ticker import MaxNLocator

    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_xlabel("epoch")
    left.set_ylabel(f"validation {metric}")
    left.set_title("per-epoch validation curves")
    if best is not None:
        left.legend(loc="best", fontsize=8)
    left.grid(alpha=0.3)

    xs = [r.index for r in records]
    ys = [r.best_valid_score if r.best_valid_score is not None else 0.0 for r in records]
    bars = right.bar([str(x) for x in xs], ys, color=[colors.get(r.status, "tab:blue") for r in records])
    for bar, r in zip(bars, records):
        if r.status == "failed" and r.best_valid_score is None:
            right.annotate("failed", (bar.get_x() + bar.get_width() / 2, 0), ha="center",
                           va="bottom", fontsize=7, color="tab:red", rotation=90)
    right.set_xlabel("trial")
    right.set_ylabel(f"best validation {metric}")
    right.set_title("best per trial (blue completed, orange stopped, red failed)")
    right.title.set_fontsize(9)
    right.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_outputs([path]) as (tmp,):
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def overhead_stats(records: Iterable[TrialRecord], events: Iterable[Mapping] = ()) -> dict | None:
    """Per-trial overhead (wall time minus epoch time, completed trials) and search-level times.

    Search level: the time inside ``Tuner.fit`` (all fit windows, resumes included), Ray's
    start-up, and, when trials ran one at a time and all completed, the end-to-end overhead per
    trial ``(fit time - all epoch time) / trials``, which also counts scheduling and worker start.
    """
    records = list(records)
    done = [r for r in records if r.overhead_seconds is not None]
    if not done:
        return None

    def stats(values):
        values = [v for v in values if v is not None]
        if not values:
            return None
        return {"mean": statistics.fmean(values), "median": statistics.median(values),
                "max": max(values)}

    out = {
        "trials": len(done),
        "overhead": stats(r.overhead_seconds for r in done),
        "setup": stats(r.setup_seconds for r in done),
        "tail": stats(r.tail_seconds for r in done),
        "other": stats(r.other_seconds for r in done),
        "wall": stats(r.wall_seconds for r in done),
        "train": stats(r.train_seconds for r in done),
    }
    fit_seconds, ray_start, opened = 0.0, None, None
    for event in events:
        if event.get("event") == "fit_start":
            opened = event.get("time")
            if ray_start is None:
                ray_start = event.get("ray_start_seconds")
        elif event.get("event") == "fit_end" and opened is not None:
            fit_seconds += float(event["time"]) - float(opened)
            opened = None
    out["fit_seconds"] = fit_seconds or None
    out["ray_start_seconds"] = ray_start
    out["max_parallel"] = _max_overlap(records)
    finished = [r for r in records if r.status != "interrupted"]
    if (fit_seconds and out["max_parallel"] == 1 and len(done) == len(finished)
            and len(done) == len(records)):
        total_train = sum(r.train_seconds for r in done)
        out["end_to_end"] = (fit_seconds - total_train) / len(done)
    else:
        out["end_to_end"] = None
    return out


def _max_overlap(records: Iterable[TrialRecord]) -> int:
    """Most trials that ran at the same time (from the driver's start/end times)."""
    points = []
    for r in records:
        if r.started_at is not None and r.ended_at is not None:
            points.append((r.started_at, 1))
            points.append((r.ended_at, -1))
    running = best = 0
    for _, step in sorted(points, key=lambda p: (p[0], p[1])):
        running += step
        best = max(best, running)
    return best


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def report_text(
    *, settings: Mapping[str, Any], records: list[TrialRecord], best: TrialRecord | None,
    metric: str, mode: str, test: Mapping[str, Any] | None, param_names: list[str],
    space_lines: list[str], plot_name: str | None, expected_trials: int | None,
    started: str | None = None, events: Iterable[Mapping] = (),
) -> str:
    counts = {status: sum(r.status == status for r in records) for status in STATUSES}
    out = [f"# Hyperparameter search: {settings['model']} on {settings['dataset']}", ""]
    out.append(f"- Command: `{settings.get('command', '')}`")
    scheduler = settings["scheduler"]
    if scheduler == "asha":
        scheduler = (f"ASHA (grace period {settings['grace_period']} epochs, reduction factor "
                     f"{settings['reduction_factor']})")
    out.append(f"- Search: {settings['search']} (seed {settings['seed']}), scheduler {scheduler}, "
               f"{settings['num_samples']} samples, at most {settings['max_epochs']} epochs per trial, "
               f"{settings['cpus_per_trial']:g} CPU / {settings['gpus_per_trial']:g} GPU per trial")
    out.append(f"- Selection: best validation {metric} over each trial's epochs ({mode}); "
               f"test metrics were not used for selection")
    seen = len(records)
    planned = f" of {expected_trials}" if expected_trials else ""
    out.append(f"- Trials: {seen}{planned} started: " + ", ".join(
        f"{counts[s]} {s}" for s in STATUSES if counts[s] or s in ("completed", "failed")))
    if started:
        out.append(f"- Report written: {started}")
    out.append("")
    out.append(f"Search space (`{settings.get('space', '')}`):")
    out.append("")
    out.extend(f"- {line}" for line in space_lines)
    out.append("")

    out.append("## Best configuration")
    out.append("")
    if best is None:
        out.append("No trial reported a validation score: nothing to select.")
        out.append("")
    else:
        out.append(f"Trial {best.index} (`{best.trial_id}`, {best.status}): best validation "
                   f"{metric} **{_fmt(best.best_valid_score)}** at epoch {best.best_epoch} of "
                   f"{best.epochs_run}. Its values are in `best.yaml`:")
        out.append("")
        out += md_table(["option", "value"],
                        [[key, _cell(value)] for key, value in best.values.items()])
        out.append("")
        out.append("### Test metrics of the best configuration")
        out.append("")
        if test and test.get("test_result"):
            out.append(f"Evaluated once after the search, on trial {best.index}'s best checkpoint "
                       f"(epoch {best.best_epoch}): `{test.get('how', '')}`.")
            out.append("")
            valid = test.get("valid_result") or {}
            out += md_table(["metric", "valid", "test"],
                            [[key, _fmt(valid.get(key)), _fmt(value)]
                             for key, value in test["test_result"].items()])
        else:
            out.append(f"Not evaluated: {(test or {}).get('why', 'no checkpoint')}.")
        out.append("")

    out.append(f"## Validation {metric} across trials")
    out.append("")
    if plot_name:
        out.append(f"![validation curves]({plot_name})")
        out.append("")
    sign = 1.0 if mode == "max" else -1.0
    ordered = sorted(records, key=lambda r: (r.best_valid_score is None,
                                             -sign * (r.best_valid_score or 0.0), r.index))
    out += md_table(
        ["trial", "status", "best valid", "best epoch", "epochs", *param_names, "wall s",
         "overhead s"],
        [[str(r.index), r.status + (f" ({_short(r.error)})" if r.error else ""),
          _fmt(r.best_valid_score), _fmt(r.best_epoch), str(r.epochs_run),
          *[_cell(r.params.get(name)) for name in param_names],
          _fmt(r.wall_seconds, 1), _fmt(r.overhead_seconds, 1)] for r in ordered])
    out.append("")

    out.append("## Trial overhead")
    out.append("")
    stats = overhead_stats(records, events)
    if stats is None:
        out.append("No completed trial: nothing measured.")
    else:
        o = stats["overhead"]
        out.append(
            f"Overhead per trial = trial wall time (driver: the trial's worker is ready to the "
            f"trial's end) minus its training and validation epoch time, over {stats['trials']} "
            f"completed trial(s): mean **{o['mean']:.1f} s**, median {o['median']:.1f} s, max "
            f"{o['max']:.1f} s (target: under 10 s)."
        )
        out.append("")
        labels = [("wall", "trial wall time"), ("train", "training + validation epochs"),
                  ("overhead", "overhead (wall - epochs)"),
                  ("setup", "- imports, data loading, model (before epoch 1)"),
                  ("tail", "- test evaluation, writing (after the last epoch)"),
                  ("other", "- Ray's reporting and bookkeeping")]
        out += md_table(["part", "mean s", "median s", "max s"],
                        [[label, f"{s['mean']:.1f}", f"{s['median']:.1f}", f"{s['max']:.1f}"]
                         for label, s in ((label, stats.get(key)) for key, label in labels) if s])
        out.append("")
        parts = []
        if stats.get("ray_start_seconds") is not None:
            parts.append(f"Ray started in {stats['ray_start_seconds']:.1f} s")
        if stats.get("fit_seconds"):
            parts.append(f"the search ran {stats['fit_seconds']:.1f} s inside Tuner.fit "
                         f"(at most {stats['max_parallel']} trial(s) at once)")
        if stats.get("end_to_end") is not None:
            parts.append(f"end to end, including scheduling and worker start-up, each trial "
                         f"cost **{stats['end_to_end']:.1f} s** beyond its epochs")
        if parts:
            out.append("Search level: " + "; ".join(parts) + ".")
    out.append("")
    out.append("## Files")
    out.append("")
    out.append("- `trials.csv`: every trial's values, status, best validation score, epochs, "
               "the Ray node it ran on")
    out.append("- `best.yaml`: the best configuration, for `run.py --config_files`")
    out.append("- `best_test.json`: the test evaluation of the best checkpoint")
    out.append("- `experiment/`: Ray Tune's experiment (resume with `--resume`), one folder per "
               "trial (progress.csv, summary.json, error.txt, checkpoints/)")
    return "\n".join(out) + "\n"


def _short(text: str | None, limit: int = 80) -> str:
    text = " ".join((text or "").split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
