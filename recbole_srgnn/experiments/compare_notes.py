"""The notes under the comparison's results table: what about the runs a reader must know.

Runs whose best epoch hit the ``epochs`` cap, the machine's load, runs continued after a cut,
epochs timed with torch's anomaly detection on (†) and runs with another number of threads (‡).
"""

from __future__ import annotations

import statistics
from typing import Any, Mapping

from recbole_srgnn.experiments.compare_collect import Collected, Row
from recbole_srgnn.experiments.compare_config import Experiment, point_label


def capped_runs(collected: Collected) -> str:
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


def load_note(collected: Collected) -> str:
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


def resumed_note(collected: Collected) -> str:
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


def any_slowed(row: Row) -> bool:
    return any(slowed_epochs(row, run)[0] for run in row.selected.values())


def anomaly_note(collected: Collected) -> str:
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


def other_threads(exp: Experiment, run: Mapping[str, Any]) -> int | None:
    """The run's torch threads where they differ from the config's (``--threads``), else None."""
    threads = (run.get("compare") or {}).get("threads")
    return threads if threads and threads != exp.threads else None


def threads_note(exp: Experiment, collected: Collected) -> str:
    runs = _flagged_runs(collected, lambda row, run: str(other_threads(exp, run) or ""))
    if not runs:
        return ""
    return ("‡ Trained with another number of torch threads than the config's "
            f"{exp.threads if exp.threads else 'torch default'} (`--threads`; results do not "
            "depend on it beyond floating-point rounding, seconds per epoch do): "
            + "; ".join(runs) + ".")

