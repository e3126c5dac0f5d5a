"""The learning-rate schedules of ``SessionTrainer``, chosen by ``lr_scheduler``.

- ``plateau`` (the plugin models' default): torch's ``ReduceLROnPlateau`` in absolute mode with
  threshold 0, so only a *strictly* better validation score counts as an improvement (the rule
  early stopping uses); the rate is multiplied by ``lr_decay_rate`` once ``lr_decay_patience`` + 1
  validations in a row have not improved it. The trainer adds the update cap
  (``lr_decay_updates``: decay at the latest after that many optimizer updates) and the return
  to the best weights (``lr_decay_restore_best``); this module only builds the scheduler;
- ``step``: the SR-GNN paper's ``StepLR``, every ``lr_decay_step`` epochs by ``lr_decay_rate``
  (off when ``lr_decay_step`` is 0);
- ``none``: a constant rate (as is any schedule with ``lr_decay_rate`` 1.0).

The options are checked here as well as in ``option_checks``, because a Config can also be
built without the plugin's option check (RecBole's models, a checkpoint's stored settings); a
bad value is one ``InputError`` line.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from recbole_srgnn.errors import InputError

LR_SCHEDULERS = ("plateau", "step", "none")

Scheduler = torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau


def _whole(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 0


def build_lr_scheduler(config: Mapping[str, Any], optimizer: torch.optim.Optimizer,
                       bigger: bool) -> tuple[Scheduler | None, int]:
    """``(scheduler or None, decay_updates)`` for ``config``'s schedule options.

    ``bigger``: whether a larger validation score is better (the plateau's mode). Unset options
    (RecBole's own models have no such keys) mean: ``step`` schedule, ``lr_decay_step`` 0,
    ``lr_decay_rate`` 1.0, patience 0, no update cap.
    """
    def get(key: str, default: Any) -> Any:
        value = config[key]
        return default if value is None else value

    kind = get("lr_scheduler", "step")
    step = get("lr_decay_step", 0)
    rate = get("lr_decay_rate", 1.0)
    patience = get("lr_decay_patience", 0)
    updates = get("lr_decay_updates", 0)
    if kind not in LR_SCHEDULERS:
        raise InputError(f"lr_scheduler must be one of {', '.join(LR_SCHEDULERS)}, got {kind!r}")
    if not _whole(step):
        raise InputError(f"lr_decay_step must be a whole number >= 0 (0 = off), got {step!r}")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
        raise InputError(f"lr_decay_rate must be a number > 0 (1.0 = off), got {rate!r}")
    if not _whole(patience):
        raise InputError(f"lr_decay_patience must be a whole number >= 0, got {patience!r}")
    if not _whole(updates):
        raise InputError(f"lr_decay_updates must be a whole number >= 0 (0 = off), got {updates!r}")
    if kind == "none" or rate == 1.0:
        return None, updates
    if kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max" if bigger else "min", factor=float(rate), patience=patience,
            threshold=0.0, threshold_mode="abs"), updates
    if step == 0:
        return None, updates
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=float(rate)), updates
