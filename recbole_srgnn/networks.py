r"""Every network a model bundle can hold, by name, and the fused network built from them.

A bundle (:mod:`recbole_srgnn.bundle`) names its network and the constructor arguments that
rebuild it; this registry maps the name to a plain ``torch.nn.Module`` class:

* the plugin's neural models (:mod:`recbole_srgnn.nn`: ``SRGNN``, ``LastItem``) and RecBole's
  sequential baselines (:mod:`recbole_srgnn.nn_recbole`: ``GRU4Rec``, ``NARM``,
  ``RecBoleSRGNN``): :data:`NEURAL`;
* the non-neural scorers (:mod:`recbole_srgnn.nn_scorers`: ``SequenceRules``, ``SessionPop``):
  :data:`STANDALONE_SCORERS`;
* ``Fused`` (:class:`Fused`): trained neural members plus a scorer of :data:`SCORERS` (the
  standalone ones and the kNN scorers ``SKNN``, ``VSKNN``, ``STAN``, ``VSTAN``:
  :class:`~recbole_srgnn.nn_knn.KnnNetwork`, the session index as tensors, held only as a
  scorer), ranked as the fusion runner's :class:`~recbole_srgnn.model.fused.FusedRanker` ranks
  them ("SR-GNN + scorer"):

.. math::
    \mathrm{score}(i) = \frac{1}{M} \sum_{m=1}^{M} \mathrm{softmax}(z^{(m)})_i
        + \alpha\, \mathrm{scorer}(s)_i .

:data:`EXPORTABLE` are the names of trained models a bundle can be made of (all but ``Fused``,
which the export makes from an ``SRGNN`` checkpoint and a scorer).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from .nn import NETWORKS as PLUGIN_NETWORKS
from .nn_knn import KnnNetwork
from .nn_recbole import NETWORKS as RECBOLE_NETWORKS
from .nn_scorers import NETWORKS as SCORER_NETWORKS

NEURAL: dict[str, type[nn.Module]] = {**PLUGIN_NETWORKS, **RECBOLE_NETWORKS}
STANDALONE_SCORERS: dict[str, type[nn.Module]] = dict(SCORER_NETWORKS)
KNN_SCORERS: dict[str, type[nn.Module]] = {name: KnnNetwork
                                           for name in ("SKNN", "VSKNN", "STAN", "VSTAN")}
SCORERS: dict[str, type[nn.Module]] = {**STANDALONE_SCORERS, **KNN_SCORERS}  # a Fused's scorer
FUSED = "Fused"


def member_spec(spec: Any, table: Mapping[str, type], what: str) -> tuple[str, dict]:
    """(name, config) of a ``{"model": ..., "config": {...}}`` entry whose model is in ``table``."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("config"), Mapping):
        raise ValueError(f"each {what} must be {{'model': NAME, 'config': {{...}}}}")
    name = spec.get("model")
    if name not in table:
        raise ValueError(f"{what} model {name!r} is not one of {', '.join(table)}")
    return str(name), dict(spec["config"])


class Fused(nn.Module):
    """Mean of the members' softmax probabilities plus ``alpha`` times the scorer's scores.

    ``members``: ``[{"model": name, "config": {...}}, ...]`` of :data:`NEURAL` networks over
    ``n_items`` items; ``scorer``: one such entry of :data:`SCORERS`, or None; ``alpha >= 0``,
    and > 0 only with a scorer. ``state_dict`` keys: ``members.<m>.<key>``, ``scorer.<key>``.
    """

    def __init__(self, n_items: int, members: Sequence[Mapping], scorer: Mapping | None = None,
                 alpha: float = 0.0) -> None:
        super().__init__()
        if isinstance(members, (str, bytes, Mapping)) or not members:
            raise ValueError("members must be a non-empty list of networks")
        alpha = float(alpha)
        if alpha < 0 or (alpha and scorer is None):
            raise ValueError("alpha must be >= 0, and > 0 only with a scorer")
        specs = [member_spec(spec, NEURAL, "member") for spec in members]
        scorer_spec = None if scorer is None else member_spec(scorer, SCORERS, "scorer")
        for name, config in specs + ([scorer_spec] if scorer_spec else []):
            if config.get("n_items") != n_items:
                raise ValueError(f"{name}'s n_items must be the bundle's, {n_items}")
        self.n_items, self.alpha = int(n_items), alpha
        self.specs, self.scorer_spec = specs, scorer_spec
        self.members = nn.ModuleList(NEURAL[name](**config) for name, config in specs)
        self.scorer = None if scorer_spec is None else SCORERS[scorer_spec[0]](**scorer_spec[1])

    def options(self) -> dict:
        scorer = None if self.scorer_spec is None else {"model": self.scorer_spec[0],
                                                        "config": self.scorer_spec[1]}
        return {"n_items": self.n_items, "alpha": self.alpha, "scorer": scorer,
                "members": [{"model": name, "config": config} for name, config in self.specs]}

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        probs = None
        for member in self.members:  # the order of FusedRanker's sums, so the same floats
            p = torch.softmax(member(item_seq, item_seq_len), dim=-1)
            probs = p if probs is None else probs.add_(p)
        probs = probs.div_(len(self.members))
        if self.alpha:
            probs = probs + self.alpha * self.scorer(item_seq, item_seq_len)
        return probs


NETWORKS: dict[str, type[nn.Module]] = {**NEURAL, **STANDALONE_SCORERS, FUSED: Fused}
EXPORTABLE: tuple[str, ...] = tuple(name for name in NETWORKS if name != FUSED)
