"""Plugin models, by the name ``run.py`` resolves before RecBole's built-ins."""

from .knn_models import SKNN, STAN, VSKNN, VSTAN
from .last_item import LastItem
from .pop import SessionPop
from .rules import SequenceRules
from .srgnn import SRGNN

MODELS: dict = {"SRGNN": SRGNN, "LastItem": LastItem, "SessionPop": SessionPop,
                "SequenceRules": SequenceRules, "SKNN": SKNN, "VSKNN": VSKNN, "STAN": STAN,
                "VSTAN": VSTAN}

__all__ = ["MODELS", "SRGNN", "LastItem", "SessionPop", "SequenceRules", "SKNN", "VSKNN", "STAN",
           "VSTAN"]
