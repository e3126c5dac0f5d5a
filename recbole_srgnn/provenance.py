"""What a saved file proves about itself: a checksum of its content and the data it was trained on.

A checkpoint, resume state or model bundle is a dict of tensors and plain values. Two things can
go wrong silently when one is loaded again:

* its bytes changed (a bad copy, a disk error, an edit): the weights load and give other metrics;
* the dataset folder changed since training (other items, another split): item ids no longer
  mean what they meant, and the metrics are wrong, or the item count differs and loading fails.

:func:`seal` stores a SHA-256 of everything in the dict (keys, tensor dtypes, shapes and bytes,
plain values) under ``"checksum"``; :func:`verify_seal` recomputes it after loading. A
:func:`data_fingerprint` (checksum of the dataset's ``<name>.stats.json`` without timings and paths, number of items,
hash of the item vocabulary in id order) is stored with the weights and compared by
:func:`check_data` with the dataset the file is loaded on. Both refuse a mismatch with one line
(:class:`~recbole_srgnn.errors.InputError`) naming what differs. Files written before these keys
existed carry neither and load as before.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import InputError

CHECKSUM_KEY = "checksum"
DATA_KEY = "data_fingerprint"


def _feed(digest: "hashlib._Hash", value: Any) -> None:
    """Add one value to ``digest``, tagged by type so that e.g. 1, 1.0 and "1" differ."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"T{tensor.dtype}{tuple(value.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, Mapping):
        digest.update(f"D{len(value)}".encode())
        for key in sorted(value, key=str):
            digest.update(f"K{key!r}".encode())
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"V{type(value).__name__}:{value!r}".encode())


def content_checksum(state: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of everything in ``state`` except its own ``"checksum"`` entry."""
    digest = hashlib.sha256()
    _feed(digest, {key: value for key, value in state.items() if key != CHECKSUM_KEY})
    return digest.hexdigest()


def seal(state: dict) -> dict:
    """Store the content checksum in ``state`` (in place) and return it."""
    state[CHECKSUM_KEY] = content_checksum(state)
    return state


def verify_seal(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """InputError if ``state`` carries a checksum that its content no longer matches."""
    recorded = state.get(CHECKSUM_KEY)
    if recorded is None:
        return  # written before checksums were recorded
    if content_checksum(state) != recorded:
        raise InputError(f"{os.fspath(path)} is damaged or was modified: its content no longer "
                         "matches the checksum recorded when it was written")


VOLATILE_STATS_KEYS = frozenset({"elapsed_s", "path"})  # differ between identical conversions


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE_STATS_KEYS}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def stats_checksum(path: Path) -> str | None:
    """SHA-256 of a converter's ``stats.json`` without its timing and input paths, so that
    converting the same input again (or from another folder) gives the same checksum; None if
    the file is missing or not JSON."""
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    text = json.dumps(_stable(stats), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def vocabulary_checksum(tokens: Any) -> str:
    """SHA-256 (hex) of item tokens in id order, one per line (a fingerprint's vocabulary hash)."""
    return hashlib.sha256("\n".join(str(token) for token in tokens).encode()).hexdigest()


def data_fingerprint(dataset: Any, data_path: str | os.PathLike, name: str) -> dict:
    """The identity of a loaded RecBole dataset: its stats file, item count and vocabulary.

    ``dataset``: a RecBole ``Dataset`` (its item field's id→token table is hashed in id order,
    so the same items under other ids differ). ``stats_sha256`` is None for a folder without
    a readable ``<name>.stats.json`` (atomic files not written by this project's converters).
    """
    vocabulary = vocabulary_checksum(dataset.field2id_token[dataset.iid_field])
    stats = Path(data_path) / name / f"{name}.stats.json"
    return {
        "dataset": str(name),
        "n_items": int(dataset.item_num),
        "item_vocabulary_sha256": vocabulary,
        "stats_sha256": stats_checksum(stats),
    }


def check_data(recorded: Mapping[str, Any] | None, current: Mapping[str, Any],
               path: str | os.PathLike) -> None:
    """InputError if the dataset a file was trained on is not the one it is loaded on now."""
    if not recorded:
        return  # written before fingerprints were recorded
    where = f"{os.fspath(path)} was trained on dataset {recorded.get('dataset')!r}"
    if recorded.get("n_items") != current.get("n_items"):
        raise InputError(f"{where} with {recorded.get('n_items')} items, but the dataset now has "
                         f"{current.get('n_items')}: retrain, or point data_path at the "
                         "original data")
    if recorded.get("item_vocabulary_sha256") != current.get("item_vocabulary_sha256"):
        raise InputError(f"{where}, but the dataset's items (or their ids) differ now: retrain, "
                         "or point data_path at the original data")
    if recorded.get("stats_sha256") != current.get("stats_sha256"):
        raise InputError(f"{where}, but its {recorded.get('dataset')}.stats.json differs now "
                         "(the dataset was converted again or changed): retrain, or point "
                         "data_path at the original data")
