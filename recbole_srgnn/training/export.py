"""``export_bundle``: a checkpoint written by run.py as a model bundle (:mod:`recbole_srgnn.bundle`).

The checkpoint is rebuilt with its dataset once (:func:`~recbole_srgnn.training.checkpoints.load_trained`,
which verifies the checkpoint's checksum and data fingerprint): the item vocabulary in the
dataset's own tokens and each item's popularity in the training split go into the bundle, so
that loading it later needs neither RecBole nor the data.

Every model of :data:`~recbole_srgnn.bundle.SUPPORTED_MODELS` becomes its plain network of
:mod:`recbole_srgnn.networks` (:func:`network_of`: the constructor arguments and the tensors:
the weights as they are, or the rule table and counts the non-neural models keep in buffers).
With a scorer (the sequence rules or a kNN model's scorer: :mod:`recbole_srgnn.model.scorers`),
an SRGNN checkpoint becomes "SR-GNN + scorer" (:func:`fused_network`), the fusion runner's
ranking (``experiments.fusion_rank``: same scorer, built the same way, options and formula);
a kNN scorer's session index goes into the bundle as plain tensors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch

from recbole_srgnn.bundle import (
    SUPPORTED_MODELS,
    build_network,
    bundle_metadata,
    check_output_folder,
    write_bundle,
)
from recbole_srgnn.errors import InputError
from recbole_srgnn.model import scorers
from recbole_srgnn.networks import FUSED
from recbole_srgnn.nn_knn import KnnNetwork, KnnScorer
from recbole_srgnn.training_state import load_checkpoint
from recbole_srgnn.training.checkpoints import load_trained

FUSABLE = ("SRGNN",)  # the model of the fusion runner's "SR-GNN + rules"
FUSION_SCORERS = scorers.NAMES  # the fusion runner's scorers
DEFAULT_RULE_STEPS, DEFAULT_REPEAT_BOOST = 10, 0.0  # the fusion runner's (fusion_rank) defaults


def check_exportable(model_name: str) -> None:
    """InputError (one line) for a model that a bundle cannot hold."""
    supported = {name.lower() for name in SUPPORTED_MODELS}  # names resolve ignoring case
    if str(model_name).strip().lower() not in supported:
        raise InputError(f"model {model_name} cannot be exported as a bundle "
                         f"(supported: {', '.join(SUPPORTED_MODELS)})")


def check_scorer(model_name: str, scorer: str | None, alpha: float, rule_steps: int,
                 rule_repeat_boost: float, scorer_options: Mapping[str, Any] | None = None) -> dict:
    """InputError (one line) for fusion options that do not fit (checked before any work);
    returns the scorer's options (over its defaults; {} without a scorer)."""
    rules_given = (rule_steps, rule_repeat_boost) != (DEFAULT_RULE_STEPS, DEFAULT_REPEAT_BOOST)
    if scorer is None:
        if alpha or rules_given or scorer_options:
            raise InputError("--alpha, --scorer_option, --rule_steps and --rule_repeat_boost are "
                             "for a scorer: give --scorer too")
        return {}
    if scorer not in FUSION_SCORERS:
        raise InputError(f"--scorer {scorer} is not a scorer the export fuses "
                         f"(choices: {', '.join(FUSION_SCORERS)})")
    if str(model_name).strip().lower() not in {name.lower() for name in FUSABLE}:
        raise InputError(f"--scorer: model {model_name} cannot be fused with a scorer "
                         f"(fusable: {', '.join(FUSABLE)})")
    if not alpha > 0:
        raise InputError(f"--alpha must be > 0 with a scorer, got {alpha:g}")
    if rule_steps < 1 or rule_repeat_boost < 0:
        raise InputError("--rule_steps must be >= 1 and --rule_repeat_boost >= 0")
    options = dict(scorer_options or {})
    if scorer == scorers.RULES:
        options = {"rule_steps": rule_steps, "repeat_boost": rule_repeat_boost, **options}
    elif rules_given:
        raise InputError(f"--rule_steps and --rule_repeat_boost are the rules' options, not "
                         f"{scorer}'s (give --scorer_option KEY=VALUE)")
    try:
        return scorers.full_options(scorer, options)
    except ValueError as exc:
        raise InputError(f"--scorer_option: {exc}") from None


def network_of(model: torch.nn.Module, model_name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(constructor arguments, tensors) of the :mod:`recbole_srgnn.networks` network that scores
    as the trained RecBole ``model`` does."""
    if model_name == "SRGNN":
        return model.network.options(), model.state_dict()
    if model_name == "SequenceRules":
        return model.rules.options(), model.rules.tables()
    if model_name == "SessionPop":
        return {"n_items": int(model.n_items)}, {"item_count": model.item_count}
    config = {"n_items": int(model.n_items), "embedding_size": int(model.embedding_size)}
    if model_name == "GRU4Rec":
        config.update(hidden_size=int(model.hidden_size), num_layers=int(model.num_layers),
                      dropout_prob=float(model.dropout_prob))
    elif model_name == "NARM":
        config.update(hidden_size=int(model.hidden_size), n_layers=int(model.n_layers),
                      dropout_probs=[float(p) for p in model.dropout_probs])
    elif model_name == "RecBoleSRGNN":
        config.update(step=int(model.step))
    return config, model.state_dict()  # LastItem and RecBole's models: their weights as they are


def scorer_network(scorer: torch.nn.Module) -> tuple[dict, dict[str, torch.Tensor]]:
    """(constructor arguments, tensors) of the bundle network that scores as ``scorer`` (a
    rule or kNN scorer built on a training split) does."""
    if isinstance(scorer, KnnScorer):
        return KnnNetwork.options_of(scorer), KnnNetwork.tensors_of(scorer)
    return scorer.options(), scorer.tables()


def fused_network(model: torch.nn.Module, model_name: str, train_set, scorer: str, alpha: float,
                  options: Mapping[str, Any], time_field: str | None = None) -> tuple[dict, dict]:
    """(config, tensors) of ``Fused``: ``model`` plus the ``scorer`` (a name of
    :data:`FUSION_SCORERS`, with ``options``) built on ``train_set``, RecBole's training split,
    as the fusion runner builds it."""
    member_config, member_weights = network_of(model, model_name)
    built = scorers.build_scorer(scorer, options, model, train_set, time_field)
    scorer_config, scorer_weights = scorer_network(built)
    config = {"n_items": member_config["n_items"], "alpha": float(alpha),
              "scorer": {"model": scorer, "config": scorer_config},
              "members": [{"model": model_name, "config": member_config}]}
    weights = {**{f"members.0.{key}": value for key, value in member_weights.items()},
               **{f"scorer.{key}": value for key, value in scorer_weights.items()}}
    return config, weights


def export_bundle(checkpoint: str | os.PathLike, out_dir: str | os.PathLike,
                  config_dict: dict | None = None, *, quiet: bool = True,
                  scorer: str | None = None, alpha: float = 0.0,
                  rule_steps: int = DEFAULT_RULE_STEPS,
                  rule_repeat_boost: float = DEFAULT_REPEAT_BOOST,
                  scorer_options: Mapping[str, Any] | None = None) -> Path:
    """Write the model of ``checkpoint`` as a bundle folder ``out_dir``; returns its path.

    ``config_dict`` goes on top of the checkpoint's settings (e.g. another ``data_path``).
    ``scorer`` (``SequenceRules``, with ``rule_steps`` and ``rule_repeat_boost``, or ``SKNN``,
    ``VSKNN``, ``STAN``, ``VSTAN``; ``scorer_options`` over the scorer's defaults): the bundle
    ranks as the fusion runner does, softmax of the model's scores + ``alpha`` * the scorer of
    the training split (a ``Fused`` network). Refused with one line: a model other than
    ``SUPPORTED_MODELS`` (or than ``FUSABLE`` with a scorer), bad fusion options, a bad output
    folder, a checkpoint that is not one or whose data changed.
    """
    check_output_folder(out_dir, "--output")
    model_name = str(load_checkpoint(checkpoint).get("model"))
    check_exportable(model_name)
    options = check_scorer(model_name, scorer, alpha, rule_steps, rule_repeat_boost,
                           scorer_options)
    trained = load_trained(checkpoint, config_dict, quiet=quiet)
    model = trained.trainer.model.eval()
    train_set = trained.train_data._dataset  # RecBole's training split
    if scorer is None:
        name, (config, weights) = trained.name, network_of(model, trained.name)
    else:
        name = FUSED
        config, weights = fused_network(model, trained.name, train_set, scorer, alpha, options,
                                        trained.config["TIME_FIELD"])
    weights = {key: value.detach().cpu() for key, value in weights.items()}
    build_network(name, config).load_state_dict(weights, strict=True)  # fits on load
    data = trained.data
    targets = train_set.inter_feat[train_set.iid_field].long()
    popularity = torch.bincount(targets, minlength=int(data.item_num))
    popularity[0] = 0
    metadata = bundle_metadata(
        model=name, config=config,
        items=list(data.field2id_token[data.iid_field]), popularity=popularity.tolist(),
        max_prefix_length=int(trained.config["MAX_ITEM_LIST_LENGTH"]),
        dataset=str(trained.config["dataset"]), data_fingerprint=trained.trainer.data_fingerprint,
    )
    return write_bundle(out_dir, weights, metadata)
