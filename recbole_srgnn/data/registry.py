"""Dataset registry (placeholder until the registry lands): no dataset is registered yet."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping


def prepare_dataset(name: str, config: Mapping[str, Any]) -> Path | None:
    """Make sure a registered dataset's benchmark files exist; None for unregistered names."""
    return None
