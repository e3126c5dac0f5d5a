"""``SessionTrainer``: RecBole's Trainer with learning-rate decay, safe checkpoints and timings.

One training loop for every model (plugin and RecBole built-in), so comparisons share it. What it
adds to :class:`recbole.trainer.Trainer`:

- learning-rate decay, chosen by ``lr_scheduler`` (the schedulers: ``training.lr_schedules``):

  * ``plateau``: multiply the rate by ``lr_decay_rate`` once ``lr_decay_patience`` + 1
    validations in a row have not *strictly* improved the best score (torch's
    ``ReduceLROnPlateau``), and at the latest once ``lr_decay_updates`` optimizer updates have
    passed since the last decay (0 = never). It reacts to the data, not to a count of epochs,
    so it behaves the same on 40k training cases as on 500k: the plugin models' default. The
    update cap matters on large data only: there an epoch has about a thousand updates and a
    decay before the first validation that gets worse is better (as the paper's schedule does);
    on small data the plateau comes first. With
    ``lr_decay_restore_best`` each decay also reloads the best weights so far, so the smaller
    rate refines the best model rather than one that has begun to overfit. With ``train_on_valid``
    the validation it reads is in-sample (training data), so the test split stays unseen;
  * ``step``: the original SR-GNN schedule, ``StepLR`` every ``lr_decay_step`` epochs by
    ``lr_decay_rate`` (off when ``lr_decay_step`` is 0 or ``lr_decay_rate`` is 1.0). The paper's
    "x0.1 every 3 epochs" assumed thousands of updates per epoch (batch 100, several hundred
    thousand cases); on a small dataset it freezes training after a few hundred updates;
  * ``none``: a constant rate;
- checkpoints that ``torch.load(weights_only=True)`` reads (RecBole's own pickle the Config, which
  torch >= 2.6 refuses by default): tensors, numbers, strings, lists and dicts only, with the
  configuration as a plain dict (enums by name), read with ``training_state.load_checkpoint``;
- a per-epoch record (training seconds, loss, learning rate, validation metrics) and the best
  epoch, for the results JSON; an ``epoch_callback(epoch, valid_result, valid_score)`` hook;
- early stopping on *strict* improvement: RecBole counts a validation score equal to the best
  as an improvement, so once step decay has shrunk the learning rate and the (rounded) score
  stops moving, training never stops. Here an equal score counts as no improvement (the rule
  and how it replaces RecBole's: ``recbole_srgnn.training.recbole_compat``). With
  ``train_on_valid`` (validation cases in the training data) nothing stops early: exactly
  ``epochs`` epochs run and the last one is the model tested;
- an optional *resume state* (``resume_file``), written atomically after every validation: the
  weights, optimizer, scheduler, early-stopping counters, epoch record, best weights and every
  random-number state training draws from. An interrupted run continues from its last finished
  epoch, exactly as it would have gone on (``load_resume_state``);
- evaluation's top-k hits collected without the dense ``[batch, n_items]`` matrix RecBole's
  collector builds per batch (same numbers, much less time on a large catalogue:
  ``recbole_compat`` §5).
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any, Callable, Mapping

import torch
from recbole.trainer import Trainer
from recbole.utils import get_local_time

from recbole_srgnn.errors import InputError
from recbole_srgnn.files import atomic_outputs
from recbole_srgnn.prepared_data import train_on_valid
from recbole_srgnn.provenance import DATA_KEY, check_data, seal
from recbole_srgnn.training.lr_schedules import build_lr_scheduler
from recbole_srgnn.training.recbole_compat import (
    TopkCollector,
    early_stopping_rule,
    strict_early_stopping,
)
from recbole_srgnn.training_state import (
    CHECKPOINT_FORMAT,
    RESUME_FORMAT,
    load_checkpoint,
    plain,
    plain_config,
    read_resume_state,
    resume_identity,
    rng_states,
    set_rng_states,
)


def every_epoch_kept(value, best, cur_step, max_step, bigger=True):
    """``early_stopping`` for ``train_on_valid``: the validation is in-sample, so it chooses
    nothing; every epoch replaces the "best" model (the last one is tested) and none stops."""
    return value, 0, False, True


def _float(value: Any) -> float:
    return float(sum(value)) if isinstance(value, tuple) else float(value)


class SessionTrainer(Trainer):
    """RecBole Trainer with LR decay, weights-only checkpoints and an epoch record.

    ``model_name`` is the name the model was asked for (e.g. ``RecBoleSRGNN``), which can differ
    from ``config["model"]`` (the class name); it names checkpoint files and is stored in them.
    ``settings`` (set by the pipeline) is the merged layered configuration the Config was built
    from; it is stored in checkpoints so that ``evaluate_checkpoint`` can rebuild the same Config.
    """

    def __init__(self, config, model, model_name: str | None = None):
        super().__init__(config, model)
        self.eval_collector = TopkCollector(config)  # top-k without a dense matrix (compat §5)
        self.model_name = model_name or config["model"]
        self.settings: dict | None = None
        # set by the pipeline: the data this model trains on (provenance.data_fingerprint);
        # stored in checkpoints and resume states, compared when they are loaded
        self.data_fingerprint: dict | None = None
        name = f"{self.model_name}-{config['dataset']}-{get_local_time()}-{uuid.uuid4().hex[:6]}.pth"
        self.saved_model_file = os.path.join(self.checkpoint_dir, name)
        self.decay_updates = 0  # set by _build_lr_scheduler (plateau's update cap)
        self.updates_since_decay = 0
        self.lr_scheduler = self._build_lr_scheduler()
        self.valid_curve: list[dict] = []
        self.best_epoch: int | None = None
        self.last_valid_result: dict | None = None
        self.persist_checkpoints = True
        self.checkpoint_written = False
        self._best_in_memory: dict | None = None
        self.resume_file: str | None = None  # set by the pipeline: write a resume state per epoch
        self.training_finished = False  # a loaded resume state says training already ended
        self.resume_spent: Callable[[], dict] | None = None  # the run's time/memory so far

    # -- learning-rate decay -------------------------------------------------------------------
    def _build_lr_scheduler(self):
        scheduler, self.decay_updates = build_lr_scheduler(
            self.config, self.optimizer, self.valid_metric_bigger)
        return scheduler

    def _plateau_step(self, valid_score: float) -> None:
        """After a validation: decay on a plateau, or once ``lr_decay_updates`` have passed."""
        before = self.current_lr
        # RecBole updates the best score and saves the best checkpoint after this validation:
        # an improving epoch's weights are the current ones, not yet those of the checkpoint
        improved = (valid_score > self.best_valid_score if self.valid_metric_bigger
                    else valid_score < self.best_valid_score)
        self.lr_scheduler.step(valid_score)
        if (self.current_lr == before and self.decay_updates
                and self.updates_since_decay >= self.decay_updates):
            for group in self.optimizer.param_groups:
                group["lr"] = group["lr"] * self.lr_scheduler.factor
        if self.current_lr < before:
            self.updates_since_decay = 0
            if (self.config["lr_decay_restore_best"] and not improved
                    and not train_on_valid(self.config)):
                self._load_best()  # go on from the best weights, not from where they got worse

    @property
    def _plateau(self) -> bool:
        return isinstance(self.lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)

    @property
    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # -- epoch record --------------------------------------------------------------------------
    def _synchronize(self) -> None:
        if isinstance(self.device, torch.device) and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        lr = self.current_lr
        start = time.perf_counter()
        loss = super()._train_epoch(
            train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress
        )
        self._synchronize()
        seconds = time.perf_counter() - start
        self.updates_since_decay += len(train_data)  # one optimizer update per batch
        if self.lr_scheduler is not None and not self._plateau:
            self.lr_scheduler.step()
        self.valid_curve.append(
            {"epoch": int(epoch_idx), "train_loss": _float(loss), "learning_rate": lr,
             "seconds": seconds,
             # on, autograd records a stack trace per operation: the epoch's time is inflated
             "anomaly_detection": torch.is_anomaly_enabled()}
        )
        return loss

    def _valid_epoch(self, valid_data, show_progress=False):
        start = time.perf_counter()
        valid_score, valid_result = super()._valid_epoch(valid_data, show_progress=show_progress)
        seconds = time.perf_counter() - start
        if self._plateau:
            self._plateau_step(float(valid_score))
        result = {str(key): float(value) for key, value in valid_result.items()}
        self.last_valid_result = result
        if self.valid_curve and "valid_score" not in self.valid_curve[-1]:
            entry = self.valid_curve[-1]
            entry["valid_seconds"] = seconds
            entry["valid_score"] = float(valid_score)
            entry.update(result)
        return valid_score, valid_result

    @property
    def seconds_per_epoch(self) -> float | None:
        times = [entry["seconds"] for entry in self.valid_curve]
        return sum(times) / len(times) if times else None

    def fit(
        self,
        train_data,
        valid_data=None,
        verbose=True,
        saved=True,
        show_progress=False,
        callback_fn: Callable[[int, float], Any] | None = None,
        epoch_callback: Callable[[int, dict, float], Any] | None = None,
    ):
        """RecBole's ``fit``; ``saved=False`` keeps the best weights in memory instead of a file.

        ``callback_fn(epoch, valid_score)`` is RecBole's hook; ``epoch_callback(epoch,
        valid_result, valid_score)`` also gets the metrics. Both run after each validation, once
        the epoch's best-model checkpoint (if any) is written.
        """
        self.persist_checkpoints = bool(saved)

        def after_validation(epoch_idx, valid_score):
            if self.resume_file is not None and self._is_writer:
                self.save_resume_state(epoch_idx, train_data)
            if callback_fn is not None:
                callback_fn(epoch_idx, valid_score)
            if epoch_callback is not None:
                epoch_callback(int(epoch_idx), dict(self.last_valid_result or {}), float(valid_score))

        # Always "saved" for RecBole: our _save_checkpoint decides between file and memory.
        rule = every_epoch_kept if train_on_valid(self.config) else strict_early_stopping
        with early_stopping_rule(rule):
            return super().fit(
                train_data, valid_data, verbose=verbose, saved=True,
                show_progress=show_progress, callback_fn=after_validation,
            )

    # -- checkpoints ---------------------------------------------------------------------------
    # _save_checkpoint, resume_checkpoint and evaluate replace RecBole's, which pickle the Config
    # and load without weights_only (the workaround and when it can go: recbole_compat §3).
    @property
    def _is_writer(self) -> bool:
        return bool(self.config["single_spec"]) or self.config["local_rank"] == 0

    def checkpoint_state(self, epoch: int) -> dict:
        """Everything a checkpoint holds; only types ``torch.load(weights_only=True)`` accepts."""
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model_name,
            "dataset": self.config["dataset"],
            "epoch": int(epoch),
            "cur_step": int(self.cur_step),
            "best_valid_score": float(self.best_valid_score),
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": None if self.lr_scheduler is None else self.lr_scheduler.state_dict(),
            "updates_since_decay": int(self.updates_since_decay),
            "config": plain_config(self.config),
            "settings": plain(self.settings) if self.settings is not None else None,
            DATA_KEY: self.data_fingerprint,
        }

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        self.best_epoch = int(epoch)
        if not self.persist_checkpoints or not self._is_writer:
            self._best_in_memory = {
                "state_dict": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "other_parameter": self.model.other_parameter(),
            }
            return
        path = kwargs.pop("saved_model_file", self.saved_model_file)
        state = seal(self.checkpoint_state(epoch))  # checksum verified when loaded
        with atomic_outputs([path]) as (tmp,):
            torch.save(state, tmp)
        self.checkpoint_written = True
        if verbose:
            self.logger.info(f"Saving current: {path}")

    def load_weights(self, state: Mapping) -> None:
        self.model.load_state_dict(state["state_dict"])
        self.model.load_other_parameter(state.get("other_parameter"))

    def resume_checkpoint(self, resume_file):
        """Continue training from one of our checkpoints (read with ``weights_only=True``)."""
        state = load_checkpoint(resume_file, map_location=self.device)
        if self.data_fingerprint is not None:
            check_data(state.get(DATA_KEY), self.data_fingerprint, resume_file)
        if state["model"] != self.model_name:
            self.logger.warning(
                f"checkpoint {resume_file} is for model {state['model']}, not {self.model_name}"
            )
        self.saved_model_file = os.fspath(resume_file)
        self.start_epoch = state["epoch"] + 1
        self.cur_step = state["cur_step"]
        self.best_valid_score = state["best_valid_score"]
        self.best_epoch = state["epoch"]
        self.load_weights(state)
        if state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_scheduler is not None and state.get("lr_scheduler") is not None:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.updates_since_decay = int(state.get("updates_since_decay") or 0)
        self.checkpoint_written = True
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    # -- resume states ---------------------------------------------------------------------------
    def save_resume_state(self, epoch: int, train_data) -> None:
        """Write everything needed to continue after ``epoch`` to ``resume_file`` (atomically)."""
        stopped = self.cur_step > self.stopping_step or int(epoch) + 1 >= self.epochs
        best = None
        if not self.checkpoint_written:
            best = self._best_in_memory
        state = {
            **self.checkpoint_state(epoch),
            "format": RESUME_FORMAT,
            "finished": bool(stopped),
            "best_epoch": self.best_epoch,
            "best_valid_result": (None if self.best_valid_result is None else
                                  {str(k): float(v) for k, v in self.best_valid_result.items()}),
            "valid_curve": [dict(entry) for entry in self.valid_curve],
            "best_weights": best,
            "best_checkpoint": self.saved_model_file if self.checkpoint_written else None,
            "rng": rng_states(train_data),
            "spent": self.resume_spent() if self.resume_spent is not None else None,
        }
        seal(state)
        with atomic_outputs([self.resume_file]) as (tmp,):
            torch.save(state, tmp)

    def load_resume_state(self, path: str | os.PathLike, train_data,
                          settings: Mapping | None = None) -> dict:
        """Restore a state written by ``save_resume_state``; ``fit`` then goes on from there.

        ``settings``: if given, the state's stored settings must equal them apart from
        ``RESUME_EXEMPT`` keys (InputError before anything is loaded). Returns the state. Sets
        ``training_finished`` when the saved run had already stopped (then only testing is left).
        """
        path = os.fspath(path)
        state = read_resume_state(path, map_location=self.device,
                                  hint="; delete it to start again")
        if settings is not None and resume_identity(state.get("settings")) != resume_identity(settings):
            raise InputError(f"{path} belongs to a run with other settings; "
                             "delete it to start again")
        if self.data_fingerprint is not None:
            check_data(state.get(DATA_KEY), self.data_fingerprint, path)
        self.load_weights(state)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_scheduler is not None and state.get("lr_scheduler") is not None:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.updates_since_decay = int(state.get("updates_since_decay") or 0)
        self.start_epoch = int(state["epoch"]) + 1
        self.cur_step = int(state["cur_step"])
        self.best_valid_score = float(state["best_valid_score"])
        self.best_valid_result = state["best_valid_result"]
        self.best_epoch = state["best_epoch"]
        self.valid_curve = [dict(entry) for entry in state["valid_curve"]]
        self.last_valid_result = None
        if state.get("best_checkpoint"):
            if not os.path.isfile(state["best_checkpoint"]):
                raise InputError(f"{path}: its best-model checkpoint {state['best_checkpoint']} "
                                 "is gone; delete the resume state to start again")
            self.saved_model_file = state["best_checkpoint"]
            self.checkpoint_written = True
        elif state.get("best_weights") is not None:
            self._best_in_memory = state["best_weights"]
        for epoch_idx, entry in enumerate(self.valid_curve):
            self.train_loss_dict[int(entry.get("epoch", epoch_idx))] = entry.get("train_loss")
        set_rng_states(state["rng"], train_data)
        self.training_finished = bool(state["finished"])
        return state

    def _load_best(self, model_file=None) -> bool:
        """Load the best weights so far (``model_file``, the checkpoint, or the in-memory copy);
        False if there are none yet."""
        if model_file is not None or self.checkpoint_written:
            path = os.fspath(model_file or self.saved_model_file)
            self.load_weights(load_checkpoint(path, map_location=self.device))
            self.logger.info(f"Loading model structure and parameters from {path}")
            return True
        if self._best_in_memory is not None:
            self.load_weights(self._best_in_memory)
            return True
        return False

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        """RecBole's ``evaluate``; the best model is loaded weights-only (file) or from memory."""
        if not eval_data:
            return None
        if load_best_model and not self._load_best(model_file):
            raise RuntimeError(
                "no best model to load: fit() has not saved one; "
                "call evaluate(..., load_best_model=False)"
            )
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
