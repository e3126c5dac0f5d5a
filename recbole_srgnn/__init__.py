"""recbole-srgnn: SR-GNN for session-based recommendation as a RecBole plugin.

``from recbole_srgnn import Recommender`` (recommendations from a model bundle) is imported on
first use, so ``import recbole_srgnn`` itself stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Recommender", "Recommendation", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Recommender", "Recommendation"):
        from . import recommend

        return getattr(recommend, name)
    raise AttributeError(f"module 'recbole_srgnn' has no attribute {name!r}")
