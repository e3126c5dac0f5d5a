"""JSON has no inf or NaN: results written as JSON carry ``null`` in their place.

``json.dumps`` would write the non-standard ``Infinity``/``NaN`` that strict readers reject; every
writer of results, trial records and events maps them first and dumps with ``allow_nan=False``.
"""

from __future__ import annotations

import math
from typing import Any


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float, in nested dicts, lists and tuples, made None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite_or_none(item) for item in value]
    if isinstance(value, tuple):
        return tuple(finite_or_none(item) for item in value)
    return value
