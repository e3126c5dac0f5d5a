"""The fusion runner's evaluation-only grid: kept models ranked together with a non-neural scorer.

Nothing here trains. A :class:`Ranking` rebuilds one or more kept checkpoints of the same
settings (``training.checkpoints.load_trained``: the first one's config and data splits, the
others' weights), builds each scorer of the config once on that training split
(:func:`recbole_srgnn.model.scorers.build_scorer`: the sequence rules with the config's
``rule_steps``, or a kNN model's scorer with its options) and ranks with a
:class:`~recbole_srgnn.model.fused.FusedRanker` of the models and one scorer at a point (alpha,
repeat boost) of the config's grid. One model is "SR-GNN + scorer", several are the seeds'
ensemble: the same code, so the same formula. The grid (:func:`scorer_grid`: alpha 0, then every
scorer's points in the config's order) is evaluated on the validation split
(:meth:`Ranking.sweep`, :func:`best_point`); the chosen (scorer, point) and alpha = 0 (the models
alone) are then tested (:meth:`Ranking.tested`). Test metrics choose nothing.

The whole grid is evaluated in one pass over the split's batches (``fusion_pass``): per batch the
members' mean probabilities once, each scorer's scores once (the rules' repeat boost is a separate
term: the rules once, the boost added per value), each point's fused scores with the ranker's own
arithmetic, ranked and measured as RecBole's collector and evaluator do, so the metrics equal those
of one ``trainer.evaluate`` per point (:meth:`Ranking.at`, :meth:`Ranking.sweep_each`), and a
grid of N points runs the models once instead of N times.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from recbole_srgnn.experiments.fusion_plan import (
    RULES,
    FusionPlan,
    expected_settings,
    point_text,
)

if TYPE_CHECKING:  # torch is imported where a ranking is built, not with this module
    from recbole_srgnn.experiments.fusion_pass import Family

Point = tuple[float, float | None]  # (alpha, repeat boost); boost None: leave the rules' as is
Entry = tuple[str | None, Point]  # (scorer, point); scorer None: alpha 0, the models alone
DEFAULT_STEPS, DEFAULT_BOOST = 10, 0.0  # the rules' options when the config sets none


def grid(alphas: Sequence[float], boosts: Sequence[float]) -> list[Point]:
    """Alpha 0 (the models alone) first, then every alpha at each repeat boost in turn."""
    return [(0.0, None)] + [(alpha, boost) for boost in boosts for alpha in alphas]


def scorer_grid(plan: FusionPlan, boosts: Sequence[float | None]) -> list[Entry]:
    """Alpha 0 first, then each scorer's points in the config's order: the rules' alphas at each
    repeat boost in ``boosts`` (as :func:`grid`), a kNN scorer's alphas."""
    entries: list[Entry] = [(None, (0.0, None))]
    for spec in plan.scorer_specs():
        alphas = plan.alphas_of(spec)
        points = grid(alphas, boosts)[1:] if spec.name == RULES else [(a, None) for a in alphas]
        entries += [(spec.name, point) for point in points]
    return entries


def scorer_of(row: Mapping) -> str | None:
    """The scorer of a sweep row (or record): None at alpha 0; the rules where unnamed."""
    if not row.get("alpha", row.get("chosen_alpha")):
        return None
    return row.get("scorer", row.get("chosen_scorer")) or RULES


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
    (alpha 0, then the scorers in the config's order, each by the smaller repeat boost, then
    the smaller alpha)."""
    return max(sweep, key=lambda row: row["valid"][metric])


def best_per_scorer(sweep: Sequence[Mapping], metric: str) -> dict[str, Mapping]:
    """Each scorer's best sweep row (the first of equals), in grid order."""
    best: dict[str, Mapping] = {}
    for row in sweep:
        name = scorer_of(row)
        if name is None:
            continue
        if name not in best or row["valid"][metric] > best[name]["valid"][metric]:
            best[name] = row
    return best


def _member(base, path: str | os.PathLike):
    """A copy of ``base`` with the weights of checkpoint ``path``."""
    from recbole_srgnn.training_state import load_checkpoint

    state = load_checkpoint(path, map_location=next(base.parameters()).device)
    member = copy.deepcopy(base)
    member.load_state_dict(state["state_dict"])
    member.load_other_parameter(state.get("other_parameter"))
    return member


class Ranking:
    """Kept checkpoints (one or several, same settings) and the scorers of the first one's
    training split, ready to be evaluated at any point of the grid.

    ``checkpoint_dir``: where the rebuilt trainer may make its (unused) checkpoint folder;
    default the one stored in the checkpoint. ``scorers``: the names of the config's scorers to
    build (default all of them). ``settings``: more run settings over the checkpoint's and the
    plan's threads (e.g. another ``data_path`` or ``threads``; none that change the model)."""

    def __init__(self, plan: FusionPlan, checkpoints: Sequence[str | os.PathLike], *,
                 checkpoint_dir: str | None = None, scorers: Sequence[str] | None = None,
                 settings: Mapping | None = None) -> None:
        from recbole_srgnn.model.fused import FusedRanker
        from recbole_srgnn.training import checkpoints as saved_models

        overrides = {"threads": plan.threads, **(settings or {})}
        if checkpoint_dir is not None:
            overrides["checkpoint_dir"] = checkpoint_dir
        self.loaded = saved_models.load_trained(checkpoints[0], overrides, quiet=True)
        base = self.loaded.trainer.model
        self.members = [base] + [_member(base, Path(p)) for p in checkpoints[1:]]
        self.named = plan.scorers is not None  # sweep rows name their scorer
        self.scorers = {spec.name: self._build(plan, spec.name, spec.options)
                        for spec in plan.scorer_specs() if scorers is None or spec.name in scorers}
        self.rules = self.scorers.get(RULES)
        self.ranker = FusedRanker(self.members)
        self.metric = str(self.loaded.config["valid_metric"]).lower()

    def _build(self, plan: FusionPlan, name: str, options: Mapping):
        from recbole_srgnn.model.scorers import build_scorer

        base = self.loaded.trainer.model
        if name == RULES:
            steps, boost = rule_options(plan)
            options = {"rule_steps": steps, "repeat_boost": boost}
        scorer = build_scorer(name, options, base, self.loaded.train_data._dataset,
                              self.loaded.config["TIME_FIELD"])
        return scorer.to(next(base.parameters()).device)

    def _measure(self, ranker, data) -> dict:
        from recbole_srgnn.model.fused import evaluating

        trainer = self.loaded.trainer
        with evaluating(trainer, ranker):
            return metrics_of(trainer.evaluate(data, load_best_model=False))

    def at(self, point: Point, data, scorer: str | None = None) -> dict:
        """All members with ``scorer`` (default the rules) at ``point`` (alpha, repeat boost):
        metrics on ``data``."""
        alpha, boost = point
        name = scorer or RULES
        if boost is not None:
            self.scorers[RULES].repeat_boost = boost
        self.ranker.scorer = self.scorers[name] if alpha else None
        self.ranker.alpha = alpha
        return self._measure(self.ranker, data)

    def alone(self, index: int, data) -> dict:
        """Member ``index`` alone (alpha 0): metrics on ``data``, to check it against its record."""
        from recbole_srgnn.model.fused import FusedRanker

        return self._measure(FusedRanker([self.members[index]]), data)

    def sweep(self, entries: Sequence[Entry], say: Callable = print,
              prefix: str = "") -> list[dict]:
        """Every (scorer, point) on the validation split, each row with its metrics and seconds
        (and its scorer, where the config names its scorers).

        One pass over the validation batches (:meth:`points`), so a row's ``seconds`` is the
        pass's wall time split evenly over the rows; the metrics are those of
        :meth:`sweep_each`."""
        started = time.perf_counter()
        results = self.points(entries, self.loaded.valid_data)
        seconds = (time.perf_counter() - started) / max(len(entries), 1)
        return [self._row(entry, valid, seconds, say, prefix)
                for entry, valid in zip(entries, results)]

    def sweep_each(self, entries: Sequence[Entry], say: Callable = print,
                   prefix: str = "") -> list[dict]:
        """:meth:`sweep` one ``trainer.evaluate`` per point (:meth:`at`): the same rows, each
        point's own seconds; what the one pass is checked and timed against."""
        rows = []
        for scorer, point in entries:
            started = time.perf_counter()
            valid = self.at(point, self.loaded.valid_data, scorer)
            rows.append(self._row((scorer, point), valid, time.perf_counter() - started, say,
                                  prefix))
        return rows

    def _row(self, entry: Entry, valid: dict, seconds: float, say: Callable, prefix: str) -> dict:
        scorer, (alpha, boost) = entry
        row = {"alpha": alpha, "repeat_boost": boost, "valid": valid, "seconds": seconds}
        if self.named:
            row["scorer"] = scorer
        say(f"{prefix}{point_text(alpha, boost, scorer if self.named else None)}: valid "
            f"{self.metric} {valid[self.metric]:.4f}", flush=True)
        return row

    def points(self, entries: Sequence[Entry], data) -> list[dict]:
        """The metrics of every (scorer, point) of ``entries`` on ``data``, as :meth:`at` gives
        them, in one pass over its batches (``fusion_pass``): the members once per batch, each
        kNN scorer once, the rules once (their repeat boost is a separate term, added per
        boost). A boost of None means the rules' current one, as in :meth:`at`; the rules are
        left at the last boost given, as :meth:`at` leaves them. Data that pass does not
        evaluate (not full-sort ranking) goes through :meth:`at`, point by point."""
        from recbole_srgnn.experiments import fusion_pass

        if not fusion_pass.supported(self.loaded.trainer, data):
            return [self.at(point, data, scorer) for scorer, point in entries]
        families = self._families(entries)
        for scorer in self.scorers.values():
            scorer.eval()  # as trainer.evaluate leaves the ranker's scorer
        return [metrics_of(r) for r in fusion_pass.evaluate_points(
            self.loaded.trainer, self.ranker, families, data, len(entries))]

    def _families(self, entries: Sequence[Entry]) -> list[Family]:
        """``entries`` grouped as the one pass scores them: alpha 0 (no scorer), the rules by
        repeat boost, each kNN scorer."""
        from recbole_srgnn.experiments.fusion_pass import Family, Setting

        alone = Setting()
        boosts: dict[float, Setting] = {}
        others: dict[str, Setting] = {}
        current = None if self.rules is None else self.rules.repeat_boost
        for index, (scorer, (alpha, boost)) in enumerate(entries):
            if boost is not None:
                current = boost
            name = scorer or RULES
            if not alpha:
                alone.points.append((index, 0.0))
            elif name == RULES:
                boosts.setdefault(current, Setting()).points.append((index, alpha))
            else:
                others.setdefault(name, Setting()).points.append((index, alpha))
        families = [Family(None, [alone])] if alone.points else []
        if boosts:
            rules = self.scorers[RULES]
            for value, setting in boosts.items():
                setting.finish = (lambda shared, seq, length, value=value:
                                  rules.boosted(shared, seq, length, value))
            families.append(Family(rules.rule_scores, list(boosts.values())))
        if self.rules is not None:
            self.rules.repeat_boost = current
        families += [Family(self.scorers[name], [setting]) for name, setting in others.items()]
        return families

    def tested(self, point: Point, scorer: str | None = None) -> tuple[dict, dict]:
        """Test metrics at alpha 0 and at ``point`` with ``scorer`` (the same result when its
        alpha is 0), in one pass over the test split (:meth:`points`)."""
        if not point[0]:
            plain = self.points([(None, (0.0, None))], self.loaded.test_data)[0]
            return plain, plain
        plain, fused = self.points([(None, (0.0, None)), (scorer, point)], self.loaded.test_data)
        return plain, fused
