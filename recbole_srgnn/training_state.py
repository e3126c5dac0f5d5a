"""Checkpoint and resume-state files of ``SessionTrainer``: their formats, reading and settings.

Split from ``trainer.py`` so that the code that only reads these files (``export_bundle``, the
fusion ranker, the comparison's progress report) need not depend on the training loop. What a
checkpoint holds is decided by ``SessionTrainer.checkpoint_state``; here:

- ``CHECKPOINT_FORMAT`` / ``RESUME_FORMAT``: the ``format`` tag of each kind of file;
- ``plain`` / ``plain_config``: the configuration as plain values (enums by name, devices as
  strings), so that ``torch.load(weights_only=True)`` reads the file back;
- ``load_checkpoint``, ``read_resume_state``: weights-only reading, format and checksum checked
  (InputError otherwise); ``resume_progress``: how far a run got, without a trainer or dataset;
- ``resume_identity``: the settings that must match for a resume state to be resumed;
- ``rng_states`` / ``set_rng_states``: every random-number state training draws from, saved and
  restored so that a resumed run goes on exactly as an uninterrupted one.
"""

from __future__ import annotations

import enum
import os
import random
from typing import Any, Mapping

import numpy as np
import torch

from recbole_srgnn.errors import InputError
from recbole_srgnn.provenance import verify_seal
from recbole_srgnn.run_identity import (
    RESUME_EXEMPT,
    without_added_defaults,
    without_removed_defaults,
    without_unread,
)
from recbole_srgnn.training.recbole_compat import LOAD_ERRORS, load_weights_only

CHECKPOINT_FORMAT = "recbole_srgnn-1"
RESUME_FORMAT = "recbole_srgnn-resume-1"


def plain(value: Any) -> Any:
    """A JSON-safe, weights-only-loadable copy of a config value (enums -> names, devices -> str)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(item) for item in value]
    return str(value)


def plain_config(config) -> dict:
    """The final configuration of a RecBole ``Config`` (or a mapping) as a plain dict."""
    items = config.final_config_dict if hasattr(config, "final_config_dict") else config
    return {str(key): plain(value) for key, value in items.items()}


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Read one of our checkpoints with ``weights_only=True``; InputError if it is not one."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"checkpoint {path} does not exist")
    try:
        state = load_weights_only(path, map_location=map_location)
    except LOAD_ERRORS as exc:  # torch's own message suggests unsafe loading: not passed on
        raise InputError(
            f"{path} is not a weights-only recbole_srgnn checkpoint ({type(exc).__name__})"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(
            f"{path} is not a recbole_srgnn checkpoint (format {CHECKPOINT_FORMAT!r} expected)"
        )
    verify_seal(state, path)
    return state


def read_resume_state(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False,
                      hint: str = "") -> dict:
    """Load a resume state written by ``save_resume_state`` (weights only); InputError, with
    ``hint`` appended to its message, if the file is unreadable or holds something else."""
    path = os.fspath(path)
    try:
        state = load_weights_only(path, map_location=map_location, mmap=mmap)
    except LOAD_ERRORS as exc:
        raise InputError(f"{path} is not a readable resume state ({type(exc).__name__}){hint}") \
            from exc
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise InputError(f"{path} is not a recbole_srgnn resume state{hint}")
    verify_seal(state, path)
    return state


def resume_progress(path: str | os.PathLike) -> dict | None:
    """How far the run behind a resume state got, read without a trainer or dataset.

    Returns None when ``path`` is not a file. Otherwise a dict: ``epochs`` (finished epochs),
    ``last_score`` (the last epoch's validation score), ``best_score`` and ``best_epoch`` (counted
    from 1), ``finished`` (training already stopped; only testing is left), ``seconds`` (the run's
    time so far) and ``parts`` (how many processes it took so far), the last two None in states
    that predate them. Raises InputError if the file is not a readable resume state.
    """
    if not os.path.isfile(path):
        return None
    state = read_resume_state(path, map_location="cpu", mmap=True)
    curve = list(state.get("valid_curve") or [])
    spent = state.get("spent") or {}
    return {
        "epochs": len(curve),
        "last_score": float(curve[-1]["valid_score"]) if curve else None,
        "best_score": float(state["best_valid_score"]) if curve else None,
        "best_epoch": int(state["best_epoch"]) + 1 if curve else None,
        "finished": bool(state.get("finished")),
        "seconds": spent.get("seconds_total"),
        "parts": spent.get("parts"),
    }


def resume_identity(settings: Mapping | None) -> dict | None:
    """``settings`` less the ``RESUME_EXEMPT`` keys and the defaults added or removed since: what
    must be equal for a resume state to continue a run (None for None)."""
    if settings is None:
        return None
    # a state written before a setting existed (or while a removed one did) still resumes a run
    # that keeps its old value
    return without_removed_defaults(without_added_defaults(without_unread(
        {key: value for key, value in settings.items() if key not in RESUME_EXEMPT})))


def rng_states(train_data) -> dict:
    """The random-number states training draws from: torch (CPU, CUDA), the training loader's
    shuffling generator, NumPy and Python (as tensors and numbers, for weights-only loading)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    generator = getattr(train_data, "generator", None)
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "loader": generator.get_state() if generator is not None else None,
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_states(states: Mapping, train_data) -> None:
    """Restore the states saved by :func:`rng_states` (tensors moved back to the CPU: a state may
    have been loaded onto the GPU)."""
    torch.set_rng_state(states["torch"].cpu())
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([state.cpu() for state in states["cuda"]])
    generator = getattr(train_data, "generator", None)
    if generator is not None and states["loader"] is not None:
        generator.set_state(states["loader"].cpu())
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
