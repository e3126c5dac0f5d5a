"""The fusion runner's evaluation-only grid: kept models ranked together with the sequence rules.

Nothing here trains. A :class:`Ranking` rebuilds one or more kept checkpoints of the same
settings (``training.checkpoints.load_trained``: the first one's config and data splits, the
others' weights), counts the sequence rules once on that training split
(:meth:`~recbole_srgnn.model.rules.RuleScorer.from_dataset`, with the config's ``rule_steps``)
and ranks with a :class:`~recbole_srgnn.model.fused.FusedRanker` of the models and the rules at
a point (alpha, repeat boost) of the config's grid. One model is "SR-GNN + rules", several are
the seeds' ensemble: the same code, so the same formula. The grid is evaluated on the
validation split (:meth:`Ranking.sweep`, :func:`best_point`); the chosen point and alpha = 0
(the models alone) are then tested (:meth:`Ranking.tested`). Test metrics choose nothing.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from recbole_srgnn.experiments.fusion_plan import FusionPlan, expected_settings, point_text

Point = tuple[float, float | None]  # (alpha, repeat boost); boost None: leave the rules' as is
DEFAULT_STEPS, DEFAULT_BOOST = 10, 0.0  # the rules' options when the config sets none


def grid(alphas: Sequence[float], boosts: Sequence[float]) -> list[Point]:
    """Alpha 0 (the models alone) first, then every alpha at each repeat boost in turn."""
    return [(0.0, None)] + [(alpha, boost) for boost in boosts for alpha in alphas]


def rule_options(plan: FusionPlan) -> tuple[int, float]:
    """The rules' ``rule_steps`` and ``rule_repeat_boost`` as the config's files and settings
    give them (only evaluation reads them: ``run_identity.EVAL_ONLY``)."""
    merged = expected_settings(plan, plan.seeds[0])
    steps, boost = merged.get("rule_steps"), merged.get("rule_repeat_boost")
    return (DEFAULT_STEPS if steps is None else int(steps),
            DEFAULT_BOOST if boost is None else float(boost))


def metrics_of(result: Mapping | None) -> dict:
    """An evaluation result with lower-case metric names and float values."""
    return {str(k).lower(): float(v) for k, v in (result or {}).items()}


def best_point(sweep: Sequence[Mapping], metric: str) -> Mapping:
    """The sweep row with the best validation ``metric``; of equals the first in grid order
    (alpha 0, then the smaller repeat boost, then the smaller alpha)."""
    return max(sweep, key=lambda row: row["valid"][metric])


def _member(base, path: str | os.PathLike):
    """A copy of ``base`` with the weights of checkpoint ``path``."""
    from recbole_srgnn.training_state import load_checkpoint

    state = load_checkpoint(path, map_location=next(base.parameters()).device)
    member = copy.deepcopy(base)
    member.load_state_dict(state["state_dict"])
    member.load_other_parameter(state.get("other_parameter"))
    return member


class Ranking:
    """Kept checkpoints (one or several, same settings) and the rules of the first one's
    training split, ready to be evaluated at any point of the grid.

    ``checkpoint_dir``: where the rebuilt trainer may make its (unused) checkpoint folder;
    default the one stored in the checkpoint."""

    def __init__(self, plan: FusionPlan, checkpoints: Sequence[str | os.PathLike], *,
                 checkpoint_dir: str | None = None) -> None:
        from recbole_srgnn.training import checkpoints as saved_models
        from recbole_srgnn.model.fused import FusedRanker
        from recbole_srgnn.model.rules import RuleScorer

        overrides = {"threads": plan.threads}
        if checkpoint_dir is not None:
            overrides["checkpoint_dir"] = checkpoint_dir
        self.loaded = saved_models.load_trained(checkpoints[0], overrides, quiet=True)
        base = self.loaded.trainer.model
        self.members = [base] + [_member(base, Path(p)) for p in checkpoints[1:]]
        steps, boost = rule_options(plan)
        self.rules = RuleScorer.from_dataset(base, self.loaded.train_data._dataset, steps, boost)
        self.rules.to(next(base.parameters()).device)
        self.ranker = FusedRanker(self.members, self.rules)
        self.metric = str(self.loaded.config["valid_metric"]).lower()

    def _measure(self, ranker, data) -> dict:
        from recbole_srgnn.model.fused import evaluating

        trainer = self.loaded.trainer
        with evaluating(trainer, ranker):
            return metrics_of(trainer.evaluate(data, load_best_model=False))

    def at(self, point: Point, data) -> dict:
        """All members with the rules at ``point`` (alpha, repeat boost): metrics on ``data``."""
        alpha, boost = point
        self.ranker.alpha = alpha
        if boost is not None:
            self.rules.repeat_boost = boost
        return self._measure(self.ranker, data)

    def alone(self, index: int, data) -> dict:
        """Member ``index`` alone (alpha 0): metrics on ``data``, to check it against its record."""
        from recbole_srgnn.model.fused import FusedRanker

        return self._measure(FusedRanker([self.members[index]]), data)

    def sweep(self, points: Sequence[Point], say: Callable = print, prefix: str = "") -> list[dict]:
        """Every point on the validation split, each row with its metrics and seconds."""
        rows = []
        for alpha, boost in points:
            started = time.perf_counter()
            valid = self.at((alpha, boost), self.loaded.valid_data)
            rows.append({"alpha": alpha, "repeat_boost": boost, "valid": valid,
                         "seconds": time.perf_counter() - started})
            say(f"{prefix}{point_text(alpha, boost)}: valid {self.metric} "
                f"{valid[self.metric]:.4f}", flush=True)
        return rows

    def tested(self, point: Point) -> tuple[dict, dict]:
        """Test metrics at alpha 0 and at ``point`` (the same result when its alpha is 0)."""
        plain = self.at((0.0, None), self.loaded.test_data)
        return plain, (plain if not point[0] else self.at(point, self.loaded.test_data))
