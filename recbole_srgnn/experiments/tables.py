"""Markdown and CSV tables, and the number formats of the reports' cells.

The comparison report, the fusion report and the tuner's report write their tables through
these, so that every report shows means, spreads and p-values alike.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Mapping, Sequence

ALPHA = 0.05  # p-values below it are shown in bold


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """The lines of a Markdown table (cells as ``str``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def csv_text(rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> str:
    """CSV of ``rows`` (dicts) with a header of ``fields``, ``\\n`` line ends."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def mean_std_text(mean: float | None, std: float | None, digits: int = 4) -> str:
    """``0.1234 ± 0.0012``; the mean alone without a spread; ``–`` without a mean."""
    if mean is None:
        return "–"
    text = f"{mean:.{digits}f}"
    return f"{text} ± {std:.{digits}f}" if std is not None else text


def p_text(value: float | None) -> str:
    """A p-value: three decimals (scientific below 0.001), bold below ``ALPHA``; n/a for None."""
    if value is None:
        return "n/a"
    text = f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"
    return f"**{text}**" if value < ALPHA else text


def duration_text(seconds: float) -> str:
    """``12.3 s`` below 90 seconds, else ``4.5 min``."""
    return f"{seconds:.1f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
