"""``export_bundle``: a checkpoint written by run.py as a model bundle (:mod:`recbole_srgnn.bundle`).

The checkpoint is rebuilt with its dataset once (:func:`~recbole_srgnn.training.checkpoints.load_trained`,
which verifies the checkpoint's checksum and data fingerprint): the item vocabulary in the
dataset's own tokens and each item's popularity in the training split go into the bundle, so
that loading it later needs neither RecBole nor the data.

Every model of :data:`~recbole_srgnn.bundle.SUPPORTED_MODELS` becomes its plain network of
:mod:`recbole_srgnn.networks` (:func:`network_of`: the constructor arguments and the tensors:
the weights as they are, or the rule table and counts the non-neural models keep in buffers).
With a scorer, an SRGNN checkpoint becomes "SR-GNN + rules" (:func:`fused_network`), the
fusion runner's ranking (``experiments.fusion_rank``: same scorer, options and formula).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from recbole_srgnn.bundle import (
    SUPPORTED_MODELS,
    build_network,
    bundle_metadata,
    check_output_folder,
    write_bundle,
)
from recbole_srgnn.errors import InputError
from recbole_srgnn.model.rules import RuleScorer
from recbole_srgnn.networks import FUSED
from recbole_srgnn.training_state import load_checkpoint
from recbole_srgnn.training.checkpoints import load_trained

FUSABLE = ("SRGNN",)  # the model of the fusion runner's "SR-GNN + rules"
FUSION_SCORERS = ("SequenceRules",)  # the fusion runner's scorer
DEFAULT_RULE_STEPS, DEFAULT_REPEAT_BOOST = 10, 0.0  # the fusion runner's (fusion_rank) defaults


def check_exportable(model_name: str) -> None:
    """InputError (one line) for a model that a bundle cannot hold."""
    supported = {name.lower() for name in SUPPORTED_MODELS}  # names resolve ignoring case
    if str(model_name).strip().lower() not in supported:
        raise InputError(f"model {model_name} cannot be exported as a bundle "
                         f"(supported: {', '.join(SUPPORTED_MODELS)})")


def check_scorer(model_name: str, scorer: str | None, alpha: float, rule_steps: int,
                 rule_repeat_boost: float) -> None:
    """InputError (one line) for fusion options that do not fit (checked before any work)."""
    if scorer is None:
        if alpha or (rule_steps, rule_repeat_boost) != (DEFAULT_RULE_STEPS, DEFAULT_REPEAT_BOOST):
            raise InputError("--alpha, --rule_steps and --rule_repeat_boost are for a scorer: "
                             "give --scorer too")
        return
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


def fused_network(model: torch.nn.Module, model_name: str, train_set, scorer: str, alpha: float,
                  rule_steps: int, rule_repeat_boost: float) -> tuple[dict, dict]:
    """(config, tensors) of ``Fused``: ``model`` plus the ``scorer`` (``SequenceRules``) counted
    on ``train_set``, RecBole's training split, as the fusion runner counts it."""
    member_config, member_weights = network_of(model, model_name)
    # counted as fusion_rank counts them
    rules = RuleScorer.from_dataset(model, train_set, rule_steps, rule_repeat_boost)
    scorer_config, scorer_weights = rules.options(), rules.tables()
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
                  rule_repeat_boost: float = DEFAULT_REPEAT_BOOST) -> Path:
    """Write the model of ``checkpoint`` as a bundle folder ``out_dir``; returns its path.

    ``config_dict`` goes on top of the checkpoint's settings (e.g. another ``data_path``).
    ``scorer`` (``SequenceRules``, with ``rule_steps`` and ``rule_repeat_boost``): the bundle
    ranks as the fusion runner does, softmax of the model's scores + ``alpha`` * the scorer of
    the training split (a ``Fused`` network). Refused with one line: a model other than
    ``SUPPORTED_MODELS`` (or than ``FUSABLE`` with a scorer), bad fusion options, a bad output
    folder, a checkpoint that is not one or whose data changed.
    """
    check_output_folder(out_dir, "--output")
    model_name = str(load_checkpoint(checkpoint).get("model"))
    check_exportable(model_name)
    check_scorer(model_name, scorer, alpha, rule_steps, rule_repeat_boost)
    trained = load_trained(checkpoint, config_dict, quiet=quiet)
    model = trained.trainer.model.eval()
    train_set = trained.train_data._dataset  # RecBole's training split
    if scorer is None:
        name, (config, weights) = trained.name, network_of(model, trained.name)
    else:
        name = FUSED
        config, weights = fused_network(model, trained.name, train_set, scorer, alpha,
                                        rule_steps, rule_repeat_boost)
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
