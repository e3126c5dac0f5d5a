"""The non-neural scorers a trained model is fused with at ranking time ("SR-GNN + scorer").

Every one is a module mapping ``(item_seq [B, L], item_seq_len [B])`` to ``[B, n_items]``
scores, built once from a RecBole training split and never trained: the sequence rules
(``SequenceRules``: :class:`~recbole_srgnn.model.rules.RuleScorer`) or one of the
nearest-neighbour baselines (``SKNN``, ``VSKNN``, ``STAN``, ``VSTAN``:
:class:`~recbole_srgnn.nn_knn.KnnScorer` with the variant's options). The fusion runner
(``experiments.fusion_rank``) and the bundle export (``training.export``) build them here, so
both count the same scorer from the same split.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from .knn_models import SKNN, STAN, VSKNN, VSTAN, KnnRecommender, scorer_of_split, variant_options
from .rules import RuleScorer

RULES = "SequenceRules"
KNN: dict[str, type[KnnRecommender]] = {"SKNN": SKNN, "VSKNN": VSKNN, "STAN": STAN,
                                        "VSTAN": VSTAN}
NAMES: tuple[str, ...] = (RULES, *KNN)
RULE_OPTIONS = {"rule_steps": 10, "repeat_boost": 0.0}  # the fusion runner's defaults


def option_names(name: str) -> tuple[str, ...]:
    """The options scorer ``name`` takes (ValueError for an unknown scorer)."""
    check_name(name)
    return tuple(RULE_OPTIONS) if name == RULES else tuple(KNN[name].KEYS)


def check_name(name: str) -> None:
    if name not in NAMES:
        raise ValueError(f"unknown scorer {name!r} (scorers: {', '.join(NAMES)})")


def full_options(name: str, values: Mapping[str, Any]) -> dict:
    """Every option of scorer ``name``: ``values`` over its defaults (ValueError, one line, for
    an unknown option or a value out of range)."""
    check_name(name)
    if name == RULES:
        unknown = sorted(set(values) - set(RULE_OPTIONS))
        if unknown:
            raise ValueError(f"{RULES} has no option {', '.join(unknown)} "
                             f"(options: {', '.join(RULE_OPTIONS)})")
        merged = {**RULE_OPTIONS, **values}
        steps, boost = merged["rule_steps"], merged["repeat_boost"]
        if not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1):
            raise ValueError(f"rule_steps must be an integer >= 1, got {steps!r}")
        if not (isinstance(boost, (int, float)) and not isinstance(boost, bool) and boost >= 0):
            raise ValueError(f"repeat_boost must be a number >= 0, got {boost!r}")
        return {"rule_steps": steps, "repeat_boost": float(boost)}
    options = variant_options(KNN[name], dict(values))
    return {key: getattr(options, key) for key in KNN[name].KEYS}


def build_scorer(name: str, values: Mapping[str, Any], model, dataset,
                 time_field: str | None) -> nn.Module:
    """Scorer ``name`` with options ``values`` (over its defaults), counted on ``dataset``
    (RecBole's training split) with ``model``'s field names and item count."""
    options = full_options(name, values)
    if name == RULES:
        return RuleScorer.from_dataset(model, dataset, options["rule_steps"],
                                       options["repeat_boost"])
    return scorer_of_split(model, dataset, time_field, variant_options(KNN[name], options), name)
