"""Statistics of the reports: mean ± std over seeds, paired tests over seeds, Wilson intervals.

The comparison and fusion reports compare models trained with the same seeds on one fixed test
split: paired tests over the seeds measure the training noise; the Wilson interval of a Hit@K
measures the sampling error of the test cases, which the spread over seeds does not show.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Mapping, Sequence


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None when undefined)."""
    values = [float(v) for v in values]
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def paired_test(ref: Mapping[int, float], other: Mapping[int, float]) -> dict:
    """Paired comparison over the seeds both have: mean difference, t-test and Wilcoxon p.

    Returns ``n``, ``diff`` (mean of ref − other), ``t_p``, ``w_p`` (None when undefined) and a
    ``note`` saying why a test is n/a."""
    seeds = sorted(set(ref) & set(other))
    a = [ref[s] for s in seeds]
    b = [other[s] for s in seeds]
    out: dict[str, Any] = {"n": len(seeds), "diff": None, "t_p": None, "w_p": None, "note": ""}
    if not seeds:
        out["note"] = "n/a (no common seeds)"
        return out
    diffs = [x - y for x, y in zip(a, b)]
    out["diff"] = statistics.fmean(diffs)
    if len(seeds) < 2:
        out["note"] = "n/a (fewer than 2 paired seeds)"
        return out
    if all(abs(d) < 1e-12 for d in diffs):
        out["note"] = "n/a (identical on every seed)"
        return out
    from scipy import stats

    if statistics.pstdev(diffs) > 1e-12:
        out["t_p"] = _finite(float(stats.ttest_rel(a, b).pvalue))
    else:
        out["note"] = "t-test n/a (same difference on every seed)"
    try:
        out["w_p"] = _finite(float(stats.wilcoxon(a, b).pvalue))
    except ValueError:
        out["w_p"] = None
    return out


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95 % for z = 1.96) of a proportion ``p`` measured on ``n`` cases.

    A Hit@K on a fixed test split is such a proportion: this is its sampling error over test
    cases, which the spread over training seeds does not show."""
    if n <= 0 or not 0.0 <= p <= 1.0:
        raise ValueError(f"wilson_interval: need 0 <= p <= 1 and n > 0, got p={p}, n={n}")
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)
