"""``export_bundle``: a checkpoint written by run.py as a model bundle (:mod:`recbole_srgnn.bundle`).

The checkpoint is rebuilt with its dataset once (:func:`~recbole_srgnn.training.checkpoints.load_trained`,
which verifies the checkpoint's checksum and data fingerprint): the item vocabulary in the
dataset's own tokens and each item's popularity in the training split go into the bundle, so
that loading it later needs neither RecBole nor the data.
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
from recbole_srgnn.training_state import load_checkpoint
from recbole_srgnn.training.checkpoints import load_trained


def check_exportable(model_name: str) -> None:
    """InputError (one line) for a model that a bundle cannot hold."""
    supported = {name.lower() for name in SUPPORTED_MODELS}  # names resolve ignoring case
    if str(model_name).strip().lower() not in supported:
        raise InputError(f"model {model_name} cannot be exported as a bundle "
                         f"(supported: {', '.join(SUPPORTED_MODELS)})")


def network_config(model: torch.nn.Module, model_name: str) -> dict:
    """The :mod:`recbole_srgnn.nn` constructor arguments of a trained RecBole model."""
    if model_name == "SRGNN":
        return model.network.options()
    return {"n_items": int(model.n_items), "embedding_size": int(model.embedding_size)}


def export_bundle(checkpoint: str | os.PathLike, out_dir: str | os.PathLike,
                  config_dict: dict | None = None, *, quiet: bool = True) -> Path:
    """Write the model of ``checkpoint`` as a bundle folder ``out_dir``; returns its path.

    ``config_dict`` goes on top of the checkpoint's settings (e.g. another ``data_path``).
    Refused with one line: a model other than ``SUPPORTED_MODELS``, a bad output folder, a
    checkpoint that is not one or whose data changed.
    """
    check_output_folder(out_dir, "--output")
    check_exportable(str(load_checkpoint(checkpoint).get("model")))
    trained = load_trained(checkpoint, config_dict, quiet=quiet)
    model = trained.trainer.model
    config = network_config(model, trained.name)
    weights = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    build_network(trained.name, config).load_state_dict(weights, strict=True)  # fits on load
    data = trained.data
    train_set = trained.train_data._dataset  # RecBole's training split
    targets = train_set.inter_feat[train_set.iid_field].long()
    popularity = torch.bincount(targets, minlength=int(data.item_num))
    popularity[0] = 0
    metadata = bundle_metadata(
        model=trained.name, config=config,
        items=list(data.field2id_token[data.iid_field]), popularity=popularity.tolist(),
        max_prefix_length=int(trained.config["MAX_ITEM_LIST_LENGTH"]),
        dataset=str(trained.config["dataset"]), data_fingerprint=trained.trainer.data_fingerprint,
    )
    return write_bundle(out_dir, weights, metadata)
