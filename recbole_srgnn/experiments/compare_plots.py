"""The comparison report's figures: test metrics per row, validation curves per epoch."""

from __future__ import annotations

import statistics
from pathlib import Path

from recbole_srgnn.experiments.compare_collect import METRICS, Collected, Row
from recbole_srgnn.experiments.stats import mean_std
from recbole_srgnn.files import atomic_outputs


def plot_metrics(collected: Collected, path: Path, title: str) -> None:
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


def plot_curves(collected: Collected, metric: str, path: Path, title: str) -> None:
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

