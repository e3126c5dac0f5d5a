"""The driver's Ray Tune callback: one JSON line per trial event in the experiment's event log
(what ``records.collect_trials`` reads back), a printed line per epoch and per finished trial."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from recbole_srgnn.json_safe import finite_or_none
from recbole_srgnn.tune.records import SUMMARY_FILE, append_event, error_line, find_checkpoint
from recbole_srgnn.tune.space import Space, clean_value
from recbole_srgnn.tune.trial import METRIC, NODE_KEY


def make_callback(metric_label: str, space: Space, finished_before: int = 0):
    """A ``ray.tune.Callback`` (Ray is imported here); ``finished_before``: trials a resumed
    search had finished already (the printed count goes on from there)."""
    from ray.tune import Callback

    class TrialLog(Callback):
        def __init__(self):
            self.total = None
            self.finished = finished_before

        def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
            self.total = total_num_samples

        @staticmethod
        def _where(trial) -> Path:
            return Path(trial.local_experiment_path)

        def _event(self, trial, kind: str, **data) -> None:
            append_event(self._where(trial), {"event": kind, "trial_id": trial.trial_id,
                                              "time": time.time(), **data})

        def on_trial_start(self, iteration, trials, trial, **info):
            params = {p.name: trial.config.get(p.name) for p in space.sampled}
            try:
                values = space.config_values(params)
            except KeyError:
                values = {}
            self._event(trial, "start", trial_dir=str(trial.local_path),
                        params=finite_or_none(clean_value(params)),
                        values=finite_or_none(clean_value(values)))

        def on_trial_restore(self, iteration, trials, trial, **info):
            self.on_trial_start(iteration, trials, trial, **info)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self._event(trial, "result", epoch=result.get("epoch"),
                        valid_score=result.get("valid_score"), best=result.get(METRIC),
                        node_id=result.get(NODE_KEY), node_ip=result.get("node_ip"))
            seconds = result.get("time_this_iter_s")
            took = f", {seconds:.0f} s" if isinstance(seconds, (int, float)) else ""
            print(f"    trial {trial.trial_id} epoch {result.get('epoch')}: valid {metric_label} "
                  f"{_num(result.get('valid_score'))} (best {_num(result.get(METRIC))}{took})",
                  flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            summary = None
            path = Path(trial.local_path) / SUMMARY_FILE
            if path.is_file():
                try:
                    summary = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    summary = None
            checkpoint = None if summary else find_checkpoint(Path(trial.local_path))
            self._event(trial, "complete", summary=summary, checkpoint=checkpoint)
            last = trial.last_result or {}
            if summary:
                state = (f"completed: best valid {metric_label} {_num(summary.get('best_valid_score'))} "
                         f"at epoch {summary.get('best_epoch')} of {summary.get('epochs_trained')}")
            else:
                state = (f"stopped early by the scheduler after {last.get('epoch', '?')} epoch(s): "
                         f"best valid {metric_label} {_num(last.get(METRIC))}")
            self._print(trial, state)

        def on_trial_error(self, iteration, trials, trial, **info):
            error = trial_error_line(trial)
            self._event(trial, "error", error=error, checkpoint=find_checkpoint(Path(trial.local_path)))
            self._print(trial, f"FAILED: {error} (see {trial.local_path}/error.txt)")

        def _print(self, trial, text: str) -> None:
            self.finished += 1
            total = f"/{self.total}" if self.total else ""
            params = ", ".join(f"{p.name}={_short_value(trial.config.get(p.name))}"
                               for p in space.sampled)
            print(f"[{self.finished}{total}] trial {trial.trial_id} {text} | {params}", flush=True)

    return TrialLog()


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def _short_value(value: Any) -> str:
    value = clean_value(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trial_error_line(trial) -> str:
    """The failed trial's exception in one line: from the trial's own note, else the last line
    of Ray's message (the exception; a trial on a node that does not share the search folder
    leaves no note the driver can read)."""
    lines = [line for line in str(getattr(trial, "error_msg", None) or "").splitlines()
             if line.strip()]
    return error_line(trial.local_path) or (
        " ".join(lines[-1].split())[:300] if lines else "error (see error.txt)")
