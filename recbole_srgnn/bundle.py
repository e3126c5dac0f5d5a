"""A trained model as a self-contained folder that serving code loads without RecBole or data.

A bundle holds three files:

* ``weights.pt``: ``torch.save`` of a dict of tensors (the network's state_dict), read back with
  ``weights_only=True``;
* ``bundle.json``: ``format``/``format_version``, the ``model`` class (a network of
  :mod:`recbole_srgnn.networks`: the plugin's, RecBole's baselines, the non-neural scorers, or
  ``Fused``, a model plus a scorer) and the ``config`` that rebuilds it, the item vocabulary
  ``items`` (the dataset's original tokens in internal id order; ``items[0]`` is padding),
  ``max_prefix_length`` (RecBole's MAX_ITEM_LIST_LENGTH), ``popularity`` (each item's count as
  a target in the training split; the fallback ranking), the ``dataset`` name and its
  ``data_fingerprint``, the library ``versions``;
* ``SHA256SUMS``: the SHA-256 of both files (``sha256sum -c SHA256SUMS`` checks them too).

:func:`write_bundle` writes them into a temporary folder renamed into place (a reader never sees
half a bundle). :func:`load_bundle` verifies the checksums, the format version, the vocabulary
against its fingerprint and the weights against the network, and refuses any mismatch with one
line (:class:`~recbole_srgnn.errors.InputError`). Making a bundle from a checkpoint needs the
dataset once: :func:`recbole_srgnn.training.export.export_bundle`.
"""

from __future__ import annotations

import contextlib
from importlib import metadata as package_metadata
import json
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .errors import InputError
from .files import sha256_of, temporary_name
from .networks import EXPORTABLE, NETWORKS
from .provenance import vocabulary_checksum

FORMAT = "recbole-srgnn-bundle"
FORMAT_VERSION = 1
WEIGHTS = "weights.pt"
METADATA = "bundle.json"
CHECKSUMS = "SHA256SUMS"
SUPPORTED_MODELS = EXPORTABLE  # trained models a bundle is made of (Fused: SRGNN + a scorer)


@dataclass
class Bundle:
    """A loaded bundle: its network (eval mode, on ``device``) and metadata."""

    folder: Path
    metadata: dict
    network: torch.nn.Module
    items: list[str]
    popularity: torch.Tensor
    max_prefix_length: int


def library_versions() -> dict:
    """Versions of the libraries a bundle was written with (for the record, not checked)."""
    versions = {"torch": torch.__version__, "python": platform.python_version()}
    for name in ("recbole-srgnn", "recbole", "torch_geometric"):
        with contextlib.suppress(Exception):
            versions[name.replace("-", "_")] = package_metadata.version(name)
    return versions


def check_output_folder(path: str | os.PathLike, option_name: str) -> Path:
    """``path`` as a Path if a bundle can be written there, else InputError (one line).

    Accepted: a missing folder whose nearest existing parent is a writable folder, an empty
    folder, or an earlier bundle (replaced). Checked before any work (e.g. before training).
    """
    text = os.fspath(path)
    if not str(text).strip():
        raise InputError(f"{option_name} is empty; give a folder path")
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"{option_name} {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not (path / METADATA).is_file():
        raise InputError(f"{option_name} {path} is a folder with other files than a bundle; "
                         "give a new or empty folder")
    nearest = path.parent
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir() or not os.access(nearest, os.W_OK | os.X_OK):
        raise InputError(f"{option_name} {path}: folder {nearest} is not writable")
    return path


def write_bundle(out_dir: str | os.PathLike, weights: Mapping[str, torch.Tensor],
                 metadata: Mapping[str, Any]) -> Path:
    """Write ``weights`` and ``metadata`` (without format keys) as a bundle folder, atomically."""
    final = check_output_folder(out_dir, "bundle folder")
    tensors = {str(key): value.detach().cpu().clone() for key, value in weights.items()}
    if not all(isinstance(value, torch.Tensor) for value in tensors.values()):
        raise InputError("bundle weights must all be tensors")
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary_name(final)
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    try:
        torch.save(tensors, temp / WEIGHTS)
        document = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}
        (temp / METADATA).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        sums = "".join(f"{sha256_of(temp / name)}  {name}\n" for name in (WEIGHTS, METADATA))
        (temp / CHECKSUMS).write_text(sums, encoding="ascii")
        old = final.with_name(temporary_name(final).name + "-old")
        if final.exists():
            os.replace(final, old)  # an earlier bundle (check_output_folder allowed it)
        os.replace(temp, final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return final


def _checked_files(folder: Path) -> None:
    where = f"bundle {folder}"
    if not folder.is_dir():
        raise InputError(f"{where} is not a folder")
    if not (folder / CHECKSUMS).is_file():
        raise InputError(f"{where} lacks {CHECKSUMS}: not a model bundle, or incomplete")
    listed = {}
    for line in (folder / CHECKSUMS).read_text(encoding="ascii", errors="replace").splitlines():
        digest, _, name = line.partition("  ")
        listed[name.strip()] = digest.strip()
    for name in (WEIGHTS, METADATA):
        if name not in listed:
            raise InputError(f"{where}: {CHECKSUMS} does not list {name}")
        if not (folder / name).is_file():
            raise InputError(f"{where}: {name} is missing")
        if sha256_of(folder / name) != listed[name]:
            raise InputError(f"{where}: {name} does not match its SHA-256 in {CHECKSUMS} "
                             "(corrupt or changed); export the bundle again")


def read_metadata(folder: str | os.PathLike) -> dict:
    """The verified ``bundle.json`` of a bundle folder (checksums and format version checked)."""
    folder = Path(folder)
    _checked_files(folder)
    try:
        metadata = json.loads((folder / METADATA).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"bundle {folder}: {METADATA} is not JSON ({exc})") from exc
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise InputError(f"bundle {folder}: {METADATA} is not a {FORMAT} file")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise InputError(f"bundle {folder}: unknown format version "
                         f"{metadata.get('format_version')!r} (this version reads {FORMAT_VERSION})")
    model = metadata.get("model")
    if model not in NETWORKS:
        raise InputError(f"bundle {folder}: model {model!r} is not supported "
                         f"(supported: {', '.join(NETWORKS)})")
    items, config = metadata.get("items"), metadata.get("config")
    counts = metadata.get("popularity")
    if not isinstance(items, list) or not isinstance(config, dict) or not isinstance(counts, list) \
            or not config.get("n_items") == len(items) == len(counts):
        raise InputError(f"bundle {folder}: its item vocabulary, popularity and n_items disagree")
    recorded = (metadata.get("data_fingerprint") or {}).get("item_vocabulary_sha256")
    if recorded is not None and recorded != vocabulary_checksum(items):
        raise InputError(f"bundle {folder}: its item vocabulary does not match its data fingerprint")
    return metadata


def build_network(model: str, config: Mapping[str, Any]) -> torch.nn.Module:
    """A network of :mod:`recbole_srgnn.networks` from a bundle's ``model`` and ``config``."""
    if model not in NETWORKS:
        raise InputError(f"model {model!r} cannot be bundled "
                         f"(supported: {', '.join(NETWORKS)})")
    try:
        return NETWORKS[model](**config)
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(f"bundle config for {model} is not valid: {exc}") from exc


def load_bundle(folder: str | os.PathLike, device: str | torch.device = "cpu") -> Bundle:
    """Load a bundle folder: verified metadata and the network with its weights, in eval mode."""
    folder = Path(folder)
    metadata = read_metadata(folder)
    network = build_network(metadata["model"], metadata["config"])
    try:
        weights = torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise InputError(f"bundle {folder}: {WEIGHTS} is not readable as tensors "
                         f"({type(exc).__name__})") from exc
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise InputError(f"bundle {folder}: {WEIGHTS} is not a dict of tensors")
    try:
        network.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"bundle {folder}: {WEIGHTS} does not fit {metadata['model']} "
                         f"with its config ({first})") from exc
    network = network.to(device).eval()
    popularity = torch.tensor(metadata["popularity"], dtype=torch.float32, device=device)
    return Bundle(folder, metadata, network, [str(t) for t in metadata["items"]], popularity,
                  int(metadata.get("max_prefix_length") or 50))


def bundle_metadata(*, model: str, config: Mapping[str, Any], items: Sequence[str],
                    popularity: Sequence[int], max_prefix_length: int, dataset: str,
                    data_fingerprint: Mapping[str, Any] | None) -> dict:
    """The ``bundle.json`` content (without the format keys) in one checked place."""
    if len(items) != config.get("n_items") or len(popularity) != len(items):
        raise InputError("bundle: item vocabulary, popularity and n_items must have one length")
    return {"model": model, "config": dict(config), "dataset": dataset,
            "data_fingerprint": dict(data_fingerprint or {}),
            "max_prefix_length": int(max_prefix_length), "n_items": len(items),
            "items": [str(token) for token in items],
            "popularity": [int(count) for count in popularity],
            "versions": library_versions()}
