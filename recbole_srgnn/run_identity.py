"""Which settings make a run what it is, across versions of this package.

A run (a comparison run, a fusion seed, a resume state) is identified by its settings, less the
settings that do not change what is computed:

- ``HASH_EXEMPT``: where data is read and how progress shows; left out of a comparison run's
  settings hash;
- ``RESUME_EXEMPT``: where files go or how progress shows; a resumed training may differ in them
  (e.g. a fresh scratch ``checkpoint_dir`` per attempt);
- ``EVAL_ONLY``: the options of the sequence rules a fusion config ranks with, which only its
  evaluation reads; a model trained before may differ in them.

When a new setting is added, every run recorded before it was made with one value of it,
implicitly: ``ADDED_SETTINGS`` lists that value, and :func:`without_added_defaults` drops a
setting that still has it, so naming it explicitly keeps the old records valid while any other
value makes a new run. ``REMOVED_SETTINGS`` is the converse for a resume state: settings a model
no longer reads, with the value its defaults wrote into every state before, so such a state
still resumes.
"""

from __future__ import annotations

from typing import Any, Mapping

HASH_EXEMPT = frozenset({"data_path", "show_progress"})
RESUME_EXEMPT = frozenset({"checkpoint_dir", "data_path", "show_progress", "log_wandb", "state",
                           "threads"})
EVAL_ONLY = ("rule_fusion", "rule_steps", "rule_repeat_boost")

# setting -> the value every run recorded before the setting existed was made with
ADDED_SETTINGS: dict[str, Any] = {
    "train_on_valid": False,  # the final fit on train + valid
    "lr_scheduler": "step",   # the plugin models' schedule was the paper's step decay
    "lr_decay_restore_best": False,  # plateau decay first went on from the current weights
    "lr_decay_updates": 0,    # plateau decay first waited for the validation alone
    "num_negatives": 2048,    # loss_type SSM's settings (the sampled softmax came later)
    "sample_alpha": 0.75,
    "ssm_correction": "logq",  # the sampled softmax first corrected every logit, the target's too
}

# setting -> the value the model defaults gave every state written while the setting existed
REMOVED_SETTINGS: dict[str, Any] = {
    "rule_fusion": 0,          # SRGNN's rules: now the experiments' FusedRanker
    "rule_steps": 10,          # (also SequenceRules' default, so its identity is unchanged)
    "rule_repeat_boost": 0.0,
}


# settings only the sampled softmax reads: they change nothing unless loss_type is SSM
SSM_SETTINGS = ("num_negatives", "sample_alpha", "ssm_correction")


def without_unread(settings: Mapping[str, Any]) -> dict:
    """``settings`` (a run's whole config) less the sampled softmax's settings when its
    ``loss_type`` is not SSM."""
    if settings.get("loss_type") == "SSM":
        return dict(settings)
    return {key: value for key, value in settings.items() if key not in SSM_SETTINGS}


def without_added_defaults(settings: Mapping[str, Any]) -> dict:
    """``settings`` less the added settings that hold the value older runs implicitly had."""
    return {key: value for key, value in settings.items()
            if not (key in ADDED_SETTINGS and value == ADDED_SETTINGS[key])}


def without_removed_defaults(settings: Mapping[str, Any]) -> dict:
    """``settings`` less the removed settings that hold the value every older state had."""
    return {key: value for key, value in settings.items()
            if not (key in REMOVED_SETTINGS and value == REMOVED_SETTINGS[key])}
