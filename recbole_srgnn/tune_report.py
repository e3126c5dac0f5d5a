"""Outputs of a Ray Tune search: the trial records, ``trials.csv``, ``best.yaml``, ``report.md``.

Ray's own files are not read here. The search driver's callback appends one JSON line per trial
event (start, per-epoch result, complete, error) to ``<experiment>/trial_events.jsonl``, and each
trial writes ``summary.json`` (when its training finished) and ``starts.txt`` (one line per start)
in its folder. :func:`collect_trials` turns these into one :class:`TrialRecord` per trial; a trial
that started again (after ``--resume``) keeps only its last run.

Status of a trial: ``completed`` (trained to the end or stopped by RecBole's early stopping, then
tested; it wrote ``summary.json``), ``stopped`` (stopped early by the scheduler, e.g. ASHA),
``failed`` (raised an error), ``interrupted`` (running when the search was interrupted; it starts
again on ``--resume``).

Epochs are counted from 1 everywhere here (``best_epoch`` 3 = after the third training epoch);
RecBole's logs and the pipeline's results JSON count from 0.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from recbole_srgnn.experiments.json_safe import finite_or_none
from recbole_srgnn.experiments.tables import md_table
from recbole_srgnn.files import atomic_outputs

EVENTS_FILE = "trial_events.jsonl"
SUMMARY_FILE = "summary.json"
STARTS_FILE = "starts.txt"
ERROR_LINE_FILE = "error_line.txt"
STATUSES = ("completed", "stopped", "failed", "interrupted")


@dataclass
class TrialRecord:
    trial_id: str
    index: int
    trial_dir: str
    params: dict = field(default_factory=dict)     # sampled values, by Param.name
    values: dict = field(default_factory=dict)     # option values of the trial (sampled + fixed)
    status: str = "interrupted"
    curve: list = field(default_factory=list)      # [(epoch, valid_score)], epochs from 1
    best_valid_score: float | None = None
    best_epoch: int | None = None                  # from 1
    epochs_run: int = 0
    wall_seconds: float | None = None              # driver: trial start -> end
    train_seconds: float | None = None             # training + validation epochs (trial's clock)
    function_seconds: float | None = None          # the trial function, start -> end
    setup_seconds: float | None = None             # function start -> first epoch (imports, data, model)
    tail_seconds: float | None = None              # last epoch -> function end (test, writing)
    error: str | None = None
    checkpoint: str | None = None
    started_at: float | None = None                # driver clock
    ended_at: float | None = None
    summary_best_epoch: int | None = None          # the trainer's best epoch (completed trials)

    @property
    def overhead_seconds(self) -> float | None:
        """Trial time that is not training/validation epochs: wall time minus epoch time."""
        if self.wall_seconds is None or self.train_seconds is None:
            return None
        return max(0.0, self.wall_seconds - self.train_seconds)

    @property
    def other_seconds(self) -> float | None:
        """Overhead outside the trial function's setup and tail (Ray's bookkeeping)."""
        parts = (self.overhead_seconds, self.setup_seconds, self.tail_seconds)
        if any(p is None for p in parts):
            return None
        return max(0.0, parts[0] - parts[1] - parts[2])


# ---------------------------------------------------------------------------------------------
# Reading the records
# ---------------------------------------------------------------------------------------------
def append_event(experiment_dir: str | os.PathLike, event: Mapping[str, Any]) -> None:
    """One JSON line in ``<experiment_dir>/trial_events.jsonl`` (flushed at once)."""
    path = Path(experiment_dir) / EVENTS_FILE
    line = json.dumps(finite_or_none(dict(event)), allow_nan=False)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()


def read_events(experiment_dir: str | os.PathLike) -> list[dict]:
    path = Path(experiment_dir) / EVENTS_FILE
    if not path.is_file():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a hard kill
    return events


def error_line(trial_dir: str | os.PathLike | None) -> str | None:
    """A failed trial's exception in one line: the trial's own note, else error.txt's last line."""
    if not trial_dir:
        return None
    for name in (ERROR_LINE_FILE, "error.txt"):
        path = Path(trial_dir) / name
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            return " ".join(lines[-1].split())[:300]
    return None


def collect_trials(experiment_dir: str | os.PathLike, bigger: bool = True) -> list[TrialRecord]:
    """One record per trial seen in the events file, numbered from 0 in order of first start."""
    records: dict[str, TrialRecord] = {}
    started_at: dict[str, float] = {}
    order: dict[str, int] = {}  # trial number: order of first start (searchers name trials differently)
    for event in read_events(experiment_dir):
        tid = event.get("trial_id")
        kind = event.get("event")
        if not tid or not kind:
            continue
        if kind == "start" or tid not in records:
            order.setdefault(tid, len(order))
            records[tid] = TrialRecord(
                trial_id=tid, index=order[tid], trial_dir=event.get("trial_dir", ""),
                params=event.get("params", {}), values=event.get("values", {}),
            )
            started_at[tid] = event.get("time")
            if kind == "start":
                continue
        record = records[tid]
        if kind == "result":
            record.curve.append((int(event["epoch"]), event.get("valid_score")))
        elif kind in ("complete", "error"):
            if started_at.get(tid) is not None and event.get("time") is not None:
                record.wall_seconds = float(event["time"]) - float(started_at[tid])
                record.started_at = float(started_at[tid])
                record.ended_at = float(event["time"])
            if kind == "error":
                record.status = "failed"
                record.error = error_line(record.trial_dir) or event.get("error") or "error"
            else:
                record.status = "completed" if event.get("summary") else "stopped"
            summary = event.get("summary") or {}
            for key in ("train_seconds", "function_seconds", "setup_seconds", "tail_seconds",
                        "checkpoint"):
                if summary.get(key) is not None:
                    setattr(record, key, summary[key])
            if summary.get("best_epoch") is not None:
                record.summary_best_epoch = int(summary["best_epoch"])
            if record.checkpoint is None and event.get("checkpoint"):
                record.checkpoint = event["checkpoint"]
    for record in records.values():
        _summarise_curve(record, bigger)
    return sorted(records.values(), key=lambda r: (r.index, r.trial_id))


def _summarise_curve(record: TrialRecord, bigger: bool) -> None:
    scores = [(epoch, score) for epoch, score in record.curve
              if isinstance(score, (int, float)) and math.isfinite(score)]
    record.epochs_run = len(record.curve)
    if not scores:
        return
    if record.summary_best_epoch is not None:  # the trainer's own best (its checkpoint)
        for epoch, score in scores:
            if epoch == record.summary_best_epoch:
                record.best_epoch, record.best_valid_score = epoch, float(score)
                return
    # Ties go to the earlier epoch: the trainer keeps a new best only on strict improvement.
    if bigger:
        best = max(scores, key=lambda item: (item[1], -item[0]))
    else:
        best = min(scores, key=lambda item: (item[1], item[0]))
    record.best_epoch, record.best_valid_score = best[0], float(best[1])


def best_trial(records: Iterable[TrialRecord], bigger: bool = True) -> TrialRecord | None:
    """The trial with the best validation score over its epochs (failed trials included when
    they reported; ties go to the earlier trial)."""
    scored = [r for r in records if r.best_valid_score is not None]
    if not scored:
        return None
    sign = 1.0 if bigger else -1.0
    return max(scored, key=lambda r: (sign * r.best_valid_score, -r.index))


# ---------------------------------------------------------------------------------------------
# trials.csv
# ---------------------------------------------------------------------------------------------
def trials_csv_text(records: list[TrialRecord], param_names: list[str], metric: str) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["trial_id", "status", *param_names, "valid_metric", "best_valid_score", "best_epoch",
         "epochs_run", "last_valid_score", "wall_seconds", "train_seconds", "overhead_seconds",
         "error", "trial_dir"]
    )
    for r in records:
        last = r.curve[-1][1] if r.curve else None
        writer.writerow(
            [r.trial_id, r.status, *[_cell(r.params.get(name)) for name in param_names], metric,
             _cell(r.best_valid_score), _cell(r.best_epoch), r.epochs_run, _cell(last),
             _cell(r.wall_seconds, 2), _cell(r.train_seconds, 2), _cell(r.overhead_seconds, 2),
             r.error or "", r.trial_dir]
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
    out.append("- `trials.csv`: every trial's values, status, best validation score, epochs")
    out.append("- `best.yaml`: the best configuration, for `run.py --config_files`")
    out.append("- `best_test.json`: the test evaluation of the best checkpoint")
    out.append("- `experiment/`: Ray Tune's experiment (resume with `--resume`), one folder per "
               "trial (progress.csv, summary.json, error.txt, checkpoints/)")
    return "\n".join(out) + "\n"


def _short(text: str | None, limit: int = 80) -> str:
    text = " ".join((text or "").split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def write_text(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    with atomic_outputs([path]) as (tmp,):
        tmp.write_text(text, encoding="utf-8")
    return path


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
