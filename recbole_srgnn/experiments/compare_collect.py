"""The finished runs of a comparison, collected per row, and its two CSV tables.

Everything here reads the run JSONs under ``<out>/runs/`` (see ``compare_runs``); nothing is
trained. Each row's grid point is selected on validation scores only (``select_point``); the
test metrics of the selected point are what the report shows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from recbole_srgnn.experiments.compare_config import Experiment, ModelEntry
from recbole_srgnn.experiments.compare_runs import (
    Selection,
    finished_runs,
    select_point,
    valid_score,
)
from recbole_srgnn.experiments.stats import mean_std

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
# Seconds a run record holds since they were measured (older records lack them): constructing the
# model from the training split (a kNN index, the rules' table, a network's init) and the test
# evaluation (best weights loaded, test split scored).
TIMINGS = ["model_build_s", "test_eval_s"]


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


SUMMARY_FIELDS = (
    ["name", "model", "settings", "selected", "selection_provisional", "seeds_finished",
     "seeds_planned", "runs_finished", "runs_planned", "valid_metric", "valid_mean", "valid_std"]
    + [f"{key}_{stat}" for key, _ in METRICS for stat in ("mean", "std")]
    + ["seconds_per_epoch_mean", "seconds_per_epoch_std", "best_epoch_mean", "epochs_trained_mean",
       "peak_rss_mb_mean", "peak_rss_mb_max", "memory_per_run"]
    + [f"{key}_{stat}" for key in TIMINGS for stat in ("mean", "std", "seeds")]
)
RUN_FIELDS = (["name", "model", "tag", "grid_point", "seed", "phase", "selected", "valid_metric",
               "valid_score"] + [key for key, _ in METRICS]
              + ["seconds_per_epoch", "best_epoch", "epochs_trained", "peak_rss_mb", *TIMINGS,
                 "isolated", "wall_seconds", "file"])


def _num(value: float | None, digits: int = 6) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def valid_metric(collected: Collected) -> str:
    run = collected.any_run() or {}
    return str(run.get("valid_metric") or "").lower()


def isolated(row: Row) -> bool:
    return bool(row.selected) and all((run.get("compare") or {}).get("isolated")
                                      for run in row.selected.values())


def summary_rows(exp: Experiment, collected: Collected) -> list[dict]:
    metric = valid_metric(collected)
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
        record["memory_per_run"] = str(isolated(row)).lower() if row.selected else ""
        for key in TIMINGS:  # empty for run records from before they were measured
            values = row.field_values(key)
            mean, std = mean_std(values)
            record[f"{key}_mean"], record[f"{key}_std"] = _num(mean, 4), _num(std, 4)
            record[f"{key}_seeds"] = len(values)
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
                **{key: _num(run.get(key), 4) for key in TIMINGS},
                "isolated": str(bool(block.get("isolated"))).lower(),
                "wall_seconds": block.get("wall_seconds", ""),
                "file": f"runs/{row.name}/{tag}-seed{seed}.json",
            }
            rows.append(record)
    return rows

