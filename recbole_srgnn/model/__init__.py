"""Plugin models, by the name ``run.py`` resolves before RecBole's built-ins."""

from .last_item import LastItem
from .srgnn import SRGNN

MODELS: dict = {"SRGNN": SRGNN, "LastItem": LastItem}

__all__ = ["MODELS", "SRGNN", "LastItem"]
