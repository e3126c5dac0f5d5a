"""Every RecBole 1.2.1 behaviour this package works around, in one module (docs/design.md §4).

Each workaround names the RecBole behaviour it answers and how to tell when it can be removed.
Users: ``models`` (the anomaly switch, undone when this module is imported), ``trainer`` (the
early-stopping rule, weights-only loading, the top-k collector) and ``config`` (the layered
``Config``).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
from typing import Any, Callable, Iterator

import recbole.trainer.trainer as recbole_trainer_module
import torch
from recbole.config import Config
from recbole.evaluator import Collector
from recbole.utils import InputType

# ---------------------------------------------------------------------------------------------
# 1. Autograd anomaly detection switched on by an import (docs/design.md §4.1)
# ---------------------------------------------------------------------------------------------
# RecBole 1.2.1's recbole/model/sequential_recommender/sine.py calls
# torch.autograd.set_detect_anomaly(True) when it is imported, and importing any of RecBole's
# sequential models (GRU4Rec, NARM, its SRGNN, ... through get_model) imports it. From then on the
# whole process records a Python stack trace for every autograd operation: measured here, a
# GRU4Rec training batch ran 1.5x slower, and nothing is computed differently.
# Removable when `python -c "import torch, recbole.model.sequential_recommender;
# print(torch.is_anomaly_enabled())"` prints False (sine.py no longer sets the switch).
SINE_MODULE = "recbole.model.sequential_recommender.sine"


def import_recbole_models() -> None:
    """Import RecBole's model packages now and undo the anomaly switch that SINE's import flips.

    If SINE was imported before this module, the switch is assumed to be its doing and is turned
    off as well. To debug with anomaly detection, turn it on after importing this module: a run
    then warns that training is slower."""
    enabled, check_nan = torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled()
    if SINE_MODULE in sys.modules:
        enabled = False
    import recbole.model.general_recommender  # noqa: F401
    import recbole.model.sequential_recommender  # noqa: F401

    torch.autograd.set_detect_anomaly(enabled, check_nan=check_nan)


import_recbole_models()  # at import: before any model name is resolved or any model trained


# ---------------------------------------------------------------------------------------------
# 2. Ties count as improvements in RecBole's early stopping (docs/design.md §4.2)
# ---------------------------------------------------------------------------------------------
# RecBole 1.2.1's recbole.utils.early_stopping resets patience when the validation score *equals*
# the best (``value >= best``), so once a decayed learning rate stops the (rounded) score from
# moving, training never stops, and a later tied epoch replaces the best checkpoint. Trainer.fit
# calls the function through its module's global name, so it is replaced there for one fit.
# Removable when RecBole's early_stopping compares strictly (``value > best``): then
# tests/test_pipeline.py's tie test passes with RecBole's own rule.
def strict_early_stopping(value, best, cur_step, max_step, bigger=True):
    """RecBole's ``early_stopping`` contract, but only a strictly better score resets patience.

    Returns ``(best, cur_step, stop_flag, update_flag)``.
    """
    improved = value > best if bigger else value < best
    if improved:
        return value, 0, False, True
    cur_step += 1
    return best, cur_step, cur_step > max_step, False


@contextlib.contextmanager
def early_stopping_rule(rule: Callable = strict_early_stopping) -> Iterator[None]:
    """Use ``rule`` in place of RecBole's ``early_stopping`` inside ``Trainer.fit`` for one call."""
    original = recbole_trainer_module.early_stopping
    recbole_trainer_module.early_stopping = rule
    try:
        yield
    finally:
        recbole_trainer_module.early_stopping = original


# ---------------------------------------------------------------------------------------------
# 3. RecBole's checkpoints cannot be loaded weights-only (docs/design.md §4.3)
# ---------------------------------------------------------------------------------------------
# RecBole 1.2.1's Trainer._save_checkpoint pickles its Config object into every checkpoint, and
# resume_checkpoint / evaluate(load_best_model=True) read them with a plain torch.load. torch >=
# 2.6 loads with weights_only=True by default, so RecBole fails on its own files; the
# process-wide switch back to unsafe loading is not used. Instead SessionTrainer overrides
# _save_checkpoint, resume_checkpoint and evaluate (methods, so they stay in trainer.py) to write
# files of plain types only and read them through this function.
# The overrides are removable when RecBole's _save_checkpoint stores plain values, i.e. when
# torch.load(<a checkpoint RecBole wrote>, weights_only=True) succeeds; this loader stays (it is
# how our own files are read).
LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError)


def load_weights_only(path: str | os.PathLike, map_location: Any = "cpu",
                      mmap: bool | None = None) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain values only, never code.

    Raises one of ``LOAD_ERRORS`` when the file is unreadable or holds anything else."""
    if mmap is None:
        return torch.load(path, weights_only=True, map_location=map_location)
    return torch.load(path, weights_only=True, map_location=map_location, mmap=mmap)


# ---------------------------------------------------------------------------------------------
# 4. RecBole's Config reads sys.argv and parses config_dict strings again (docs/design.md §4.4)
# ---------------------------------------------------------------------------------------------
# RecBole 1.2.1's Config._load_cmd_line parses the host program's command line (any --x=y,
# pytest's included) into settings that beat config_dict, and _load_variable_config_dict runs
# its string conversion over config_dict a second time ("[1]" -> [1] after we parsed it once).
# Removable when Config takes an argument that turns both off; until then a Config built with
# sys.argv = ["prog", "--learning_rate=0.9"] shows the difference (tests/test_pipeline.py).
class LayeredConfig(Config):
    """RecBole's Config fed with one pre-merged, pre-parsed dict.

    It does not read ``sys.argv`` and does not parse string values a second time.
    """

    def _load_variable_config_dict(self, config_dict):
        return dict(config_dict) if config_dict else {}

    def _load_cmd_line(self):
        return {}

    def _set_default_parameters(self):
        # RecBole derives the input type from loss_type and knows CE and BPR only; the sampled
        # softmax (SSM) reads the same point-wise (prefix, target) batches as CE. Removable when
        # RecBole's Config sets MODEL_INPUT_TYPE for a loss_type it does not know.
        super()._set_default_parameters()
        if self.final_config_dict.get("loss_type") == "SSM":
            self.final_config_dict.setdefault("MODEL_INPUT_TYPE", InputType.POINTWISE)


# ---------------------------------------------------------------------------------------------
# 5. RecBole's top-k collection builds a dense [B, n_items] matrix per batch (docs/design.md §4.12)
# ---------------------------------------------------------------------------------------------
# RecBole 1.2.1's Collector.eval_batch_collect, for the metrics that read "rec.topk" (Hit, MRR,
# NDCG, Recall, ...), marks each evaluation batch's positives in a zero int32 [B, n_items] matrix,
# sums its rows (the positive counts) and gathers its top-k columns. Measured on one core of a
# shared machine, a batch of 1,024 x 93,386 scores took 1.8-2.0 s to collect (the int32 row sum
# alone 1.1 s, the top-k 0.4 s) and the matrix is 365 MiB; the full-scale test evaluation
# (75k cases, benchmarks/full_scale.py) took 279 s, 113 s with TopkCollector, which builds the
# same tensor (same values, same dtype) from the positives' (row, item) pairs: 0.3-0.4 s a batch.
# Removable when RecBole's eval_batch_collect no longer allocates the dense matrix for "rec.topk".
def topk_hits(scores: torch.Tensor, positive_u: torch.Tensor, positive_i: torch.Tensor,
              k: int) -> torch.Tensor:
    """RecBole's ``rec.topk`` rows of one batch: ``[B, k + 1]`` int64; column ``j < k`` is 1 where
    the row's ``j``-th ranked item is one of its positives (``positive_u`` rows, ``positive_i``
    items), the last column counts the row's distinct positives."""
    _, ranked = torch.topk(scores, k, dim=-1)
    rows, columns = scores.shape
    pairs = torch.unique(positive_u.to(scores.device).long() * columns
                         + positive_i.to(scores.device).long())
    counts = torch.bincount(torch.div(pairs, columns, rounding_mode="floor"), minlength=rows)
    keys = torch.arange(rows, device=scores.device).unsqueeze(1) * columns + ranked
    return torch.cat((torch.isin(keys, pairs).long(), counts.unsqueeze(1)), dim=1)


class TopkCollector(Collector):
    """RecBole's Collector; ``rec.topk`` comes from :func:`topk_hits`, everything else from
    RecBole."""

    def eval_batch_collect(self, scores_tensor, interaction, positive_u, positive_i):
        if not self.register.need("rec.topk"):
            return super().eval_batch_collect(scores_tensor, interaction, positive_u, positive_i)
        self.data_struct.update_tensor(
            "rec.topk", topk_hits(scores_tensor, positive_u, positive_i, max(self.topk)))
        setattr(self.register, "rec.topk", False)  # RecBole's own branch: not again
        try:
            return super().eval_batch_collect(scores_tensor, interaction, positive_u, positive_i)
        finally:
            setattr(self.register, "rec.topk", True)
