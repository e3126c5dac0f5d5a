"""A search folder's files and the trial records read from them.

Ray's own files are not read. The driver's callback (``progress``) appends one JSON line per
trial event (start, per-epoch result, complete, error) to ``<experiment>/trial_events.jsonl``, and
each trial writes ``summary.json`` (when its training finished) and ``starts.txt`` (one line per
start) in its folder. :func:`collect_trials` turns these into one :class:`TrialRecord` per trial;
a trial that started again (after ``--resume``) keeps only its last run.

Status of a trial: ``completed`` (trained to the end or stopped by RecBole's early stopping; it
wrote ``summary.json``), ``stopped`` (stopped early by the scheduler, e.g. ASHA), ``failed``
(raised an error), ``interrupted`` (running when the search was interrupted; it starts again on
``--resume``).

Epochs are counted from 1 everywhere here (``best_epoch`` 3 = after the third training epoch);
RecBole's logs and the pipeline's results JSON count from 0.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from recbole_srgnn.json_safe import finite_or_none
from recbole_srgnn.files import atomic_outputs

# The search folder (--output)
SETTINGS_FILE = "tune_settings.json"  # the search's settings: what --resume continues
EXPERIMENT = "experiment"  # Ray Tune's experiment folder, one sub-folder per trial
DATASET_CACHE = "dataset_cache"  # the splits built once for all trials (removed at the end)
# The experiment folder and each trial's folder
EVENTS_FILE = "trial_events.jsonl"
SUMMARY_FILE = "summary.json"
STARTS_FILE = "starts.txt"
ERROR_LINE_FILE = "error_line.txt"
RUN_RESULT_FILE = "pipeline_result.json"  # the trial's training results (validation only)
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
    node_id: str | None = None                     # the Ray node it ran on (from its reports)
    node_ip: str | None = None                     # that node's IP

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
            record.node_id = event.get("node_id") or record.node_id
            record.node_ip = event.get("node_ip") or record.node_ip
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


def find_checkpoint(trial_dir: Path) -> str | None:
    """The newest checkpoint a trial wrote, or None."""
    files = sorted((trial_dir / "checkpoints").glob("*.pth"), key=lambda p: p.stat().st_mtime)
    return str(files[-1]) if files else None


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    path = Path(path)
    with atomic_outputs([path]) as (tmp,):
        tmp.write_text(text, encoding="utf-8")
    return path
