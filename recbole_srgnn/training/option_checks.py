"""Options checked before any work: types, ranges, metric names and misspelled keys.

RecBole accepts any ``--key=value`` and finds a bad one late: ``--learning_rate=abc`` fails deep
inside the optimizer, ``--valid_metric=MRR@11`` after a full training epoch, ``--epochs=-1``
not at all (the untrained model is tested). Here every option a user gave (config files and the
command line) is checked before data is loaded or a model is built:

* **type** from the option's default in the property files (RecBole's and this plugin's): a
  number where the default is a number, a bool, list or dict where it is one; options whose
  default is text or unset are not type-checked;
* **range and choices** from :data:`RULES` (learning rate > 0, batch sizes >= 1, ...);
* **metrics**: every name in ``metrics`` is one of RecBole's, ``valid_metric`` is one of
  ``metrics`` with a cut-off from ``topk``;
* **unsafe files**: RecBole's ``dataset_save_path``, ``dataloaders_save_path``, ``save_dataset``
  and ``save_dataloaders`` are refused (RecBole unpickles those files without restriction);
  ``prepared_data_path`` does their work;
* **names**: an option that is no RecBole or plugin option but close to one is refused with a
  did-you-mean; one that is close to none is named in a note and passed on (RecBole passes
  unknown options to models, so a custom model may read it).

Every problem is an :class:`~recbole_srgnn.errors.InputError`: one line, exit status 2.
"""

from __future__ import annotations

import difflib
import math
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import yaml

from recbole_srgnn.errors import InputError
from recbole_srgnn.run_identity import REMOVED_SETTINGS

RECBOLE_PROPERTIES = "properties"

# Keys RecBole's Config sets or reads without a default in its property files.
RUNTIME_KEYS = frozenset({
    "nproc", "world_size", "offset", "ip", "port", "local_rank", "single_spec", "device",
    "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "valid_neg_sample_args",
    "test_neg_sample_args", "additional_feat_suffix", "config_files", "data_progress",
}) | frozenset(REMOVED_SETTINGS)  # options older checkpoints and fusion configs still carry


# RecBole options that make it unpickle a file without restriction (its saved dataset and
# dataloaders): refused when set, in favour of prepared_data_path (read with safe_pickle).
UNPICKLING_OPTIONS = ("dataset_save_path", "dataloaders_save_path", "save_dataset",
                      "save_dataloaders")


# List options that RecBole (or the registry) also takes as one value.
SCALAR_LISTS = frozenset({"topk", "metrics", "benchmark_filename", "keep_events", "load_col"})


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_at_least(low: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: _integer(v) and v >= low), f"an integer >= {low}"


def _number_in(low: float, high: float | None = None, *, low_open: bool = False,
               high_open: bool = False) -> tuple[Callable[[Any], bool], str]:
    def ok(value: Any) -> bool:
        if not _number(value):
            return False
        above = value > low if low_open else value >= low
        below = high is None or (value < high if high_open else value <= high)
        return above and below

    if high is None:
        text = f"a number {'>' if low_open else '>='} {low:g}"
    else:
        text = (f"a number in {'(' if low_open else '['}{low:g}, {high:g}"
                f"{')' if high_open else ']'}")
    return ok, text


def _choice(*values: str) -> tuple[Callable[[Any], bool], str]:
    lowered = {v.lower() for v in values}
    return (lambda v: isinstance(v, str) and v.lower() in lowered), "one of " + ", ".join(values)


def _threads(value: Any) -> bool:
    return (isinstance(value, str) and value.lower() == "auto") or (_integer(value) and value >= 1)


# option -> (test, what it must be). Options absent here are checked for type only.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "learning_rate": _number_in(0),  # 0 freezes the weights (tests use it)
    "weight_decay": _number_in(0),
    "epochs": _int_at_least(1),
    "train_batch_size": _int_at_least(1),
    "eval_batch_size": _int_at_least(1),
    "stopping_step": _int_at_least(0),
    "eval_step": _int_at_least(1),
    "embedding_size": _int_at_least(1),
    "hidden_size": _int_at_least(1),
    "n_layers": _int_at_least(1),
    "step": _int_at_least(1),
    "MAX_ITEM_LIST_LENGTH": _int_at_least(1),
    "lr_decay_step": _int_at_least(0),
    "lr_decay_patience": _int_at_least(0),
    "lr_decay_updates": _int_at_least(0),
    "lr_decay_rate": _number_in(0, 1, low_open=True),
    "lr_scheduler": _choice("plateau", "step", "none"),
    "learner": _choice("adam", "adamw", "sgd", "adagrad", "rmsprop", "sparse_adam"),
    "loss_type": _choice("CE", "BPR", "SSM"),  # SSM: only models that list it (check_layers)
    "num_negatives": _int_at_least(1),
    "sample_alpha": _number_in(0),
    "ssm_correction": _choice("importance", "logq"),
    "readout": _choice("hybrid", "global", "last"),
    "embedding_dropout": _number_in(0, 1, high_open=True),
    "hidden_dropout": _number_in(0, 1, high_open=True),
    "dropout_prob": _number_in(0, 1, high_open=True),
    "norm_scale": _number_in(0),
    "repeat_recency": _int_at_least(0),
    "threads": (_threads, "auto or an integer >= 1"),
    "seed": ((lambda v: _integer(v)), "an integer"),
    "train_sample": _number_in(0, 1, low_open=True),
    "session_gap": _number_in(0, low_open=True),
    "min_item_support": _int_at_least(1),
    "min_session_length": _int_at_least(2),
    "max_prefix_length": _int_at_least(1),
    "test_days": _number_in(0, low_open=True),
    "valid_days": _number_in(0, low_open=True),
    "synthetic_n_events": _int_at_least(1),
    # nearest-neighbour models (model/knn_models.py)
    "k": _int_at_least(1),
    "sample_size": _int_at_least(1),
    "similarity": _choice("cosine", "vec"),
    "lambda_spw": _number_in(0, low_open=True),
    "lambda_snh": _number_in(0, low_open=True),
    "lambda_inh": _number_in(0, low_open=True),
    "lambda_ipw": _number_in(0, low_open=True),
    "lambda_idf": _number_in(0),
}


def _recbole_dir() -> Path:
    import recbole  # only its property files are read

    return Path(recbole.__file__).resolve().parent / RECBOLE_PROPERTIES


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def recbole_defaults(recbole_model: str | None) -> dict:
    """RecBole's own defaults for a sequential model: overall, dataset and quick-start files,
    then the model's file (``recbole_model``: RecBole's class name, None for plugin models)."""
    root = _recbole_dir()
    merged: dict = {}
    for path in (root / "overall.yaml", root / "dataset" / "sample.yaml",
                 root / "quick_start_config" / "sequential.yaml"):
        merged.update(_read(path))
    if recbole_model:
        merged.update(_read(root / "model" / f"{recbole_model}.yaml"))
    return merged


def known_keys(extra_files: Iterable[Path] = ()) -> set[str]:
    """Every option any RecBole or plugin property file defines, for any model or dataset."""
    root = _recbole_dir()
    keys = set(RUNTIME_KEYS)
    for path in [*root.rglob("*.yaml"), *extra_files]:
        keys.update(str(key) for key in _read(path))
    return keys


def _type_problem(key: str, value: Any, default: Any) -> str | None:
    if default is None or isinstance(default, str):
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, (int, float)):  # "0" in a property file may stand for a float
        return None if _number(value) else "a number"
    if isinstance(default, list):
        if isinstance(value, (list, tuple)) or (key in SCALAR_LISTS and value is not None):
            return None
        return "a list, e.g. [1, 2]"
    if isinstance(default, dict):
        return None if isinstance(value, dict) or value is None else "a mapping, e.g. {a: 1}"
    return None


def _where(source: str) -> str:
    return "" if source == "config_dict" else f"config file {source}: "


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _check_metrics(settings: Mapping[str, Any]) -> None:
    from recbole.evaluator.register import metrics_dict

    metrics = [str(m) for m in _as_list(settings.get("metrics") or [])]
    unknown = [m for m in metrics if m.lower() not in metrics_dict]
    if unknown:
        close = difflib.get_close_matches(unknown[0].lower(), list(metrics_dict), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise InputError(f"metrics: unknown metric {unknown[0]!r}{hint} (RecBole has "
                         f"{', '.join(sorted(metrics_dict))})")
    topk = _as_list(settings.get("topk") or [])
    if not topk or not all(_integer(k) and k >= 1 for k in topk):
        raise InputError(f"topk must be positive integers, e.g. [10, 20], got {settings.get('topk')!r}")
    valid = settings.get("valid_metric")
    if valid is None:
        return
    name, _, cut = str(valid).partition("@")
    if name.lower() not in {m.lower() for m in metrics}:
        raise InputError(f"valid_metric {valid}: {name} is not among metrics "
                         f"({', '.join(metrics)})")
    if "rec.topk" in getattr(metrics_dict[name.lower()], "metric_need", ()):
        if not cut.isdigit() or int(cut) not in topk:
            raise InputError(f"valid_metric must be {name}@K with K in topk "
                             f"({', '.join(map(str, topk))}), got {valid!r}")


def check_options(
    user_layers: Iterable[tuple[str, Mapping[str, Any]]],
    defaults: Mapping[str, Any],
    known: set[str],
    settings: Mapping[str, Any],
    *,
    warn: Callable[[str], None] | None = None,
) -> None:
    """Check what a user gave before any work; InputError (one line) on the first problem.

    ``user_layers``: (source, options) pairs as given (config files, then ``"config_dict"``
    for the command line or a runner's settings). ``defaults``: the defaults those options
    override (property files). ``known``: every known option name. ``settings``: the merged
    result, for the checks that combine options (metrics, topk, valid_metric). ``warn``: where
    the note about an unknown option goes (default: stderr).
    """
    warn = warn or (lambda text: print(text, file=sys.stderr))
    noted: set[str] = set()
    for source, layer in user_layers:
        for key, value in layer.items():
            key = str(key)
            if key in ("model", "dataset"):
                continue
            if key not in known and key not in defaults:
                close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.8)
                if close:
                    raise InputError(f"{_where(source)}unknown option {key}; did you mean "
                                     f"{close[0]}?")
                if key not in noted:
                    noted.add(key)
                    warn(f"note: {key} is not a RecBole or plugin option; passed on as given")
                continue
            if key in UNPICKLING_OPTIONS and value not in (None, False):
                raise InputError(f"{_where(source)}{key} is not supported: RecBole would unpickle "
                                 f"that file without restriction; use prepared_data_path (splits "
                                 f"built once, read with a restricted unpickler)")
            rule = RULES.get(key)
            if rule is not None:
                test, expected = rule
                if value is not None and not test(value):
                    raise InputError(f"{_where(source)}{key} must be {expected}, got {value!r}")
                continue
            problem = _type_problem(key, value, defaults.get(key))
            if problem is not None:
                raise InputError(f"{_where(source)}{key} must be {problem}, got {value!r}")
    _check_metrics(settings)


def _under(source: str, folder: Path) -> bool:
    try:
        return Path(source).resolve().is_relative_to(folder)
    except (OSError, ValueError):
        return False


def check_layers(
    layers: Iterable[tuple[str, Mapping[str, Any]]],
    model_class: type,
    properties_dir: str | Path,
    *,
    warn: Callable[[str], None] | None = None,
) -> None:
    """:func:`check_options` for config layers as the pipeline builds them (lowest first):
    layers read from ``properties_dir`` are the plugin's defaults, the rest are the user's."""
    props = Path(properties_dir).resolve()
    layers = list(layers)
    own = [layer for source, layer in layers if _under(source, props)]
    user = [(source, layer) for source, layer in layers if not _under(source, props)]
    builtin = model_class.__module__.startswith("recbole.")
    defaults = recbole_defaults(model_class.__name__ if builtin else None)
    for layer in own:
        defaults.update(layer)
    extra = [path for path in props.rglob("*.yaml") if "tune" not in path.relative_to(props).parts]
    known = known_keys(extra) | set(defaults)
    settings = dict(defaults)
    for _, layer in user:
        settings.update(layer)
    check_options(user, defaults, known, settings, warn=warn)
    _check_loss_type(settings.get("loss_type"), model_class)


def _check_loss_type(loss_type: Any, model_class: type) -> None:
    """``loss_type`` as written (capitals: RecBole and the models compare it so), and SSM only
    for the models that list it in ``loss_types`` (SRGNN, LastItem); RecBole's know CE, BPR."""
    if not isinstance(loss_type, str):
        return
    if loss_type != loss_type.upper():  # RecBole and the models compare it as written
        raise InputError(f"loss_type must be written in capitals (CE, BPR or SSM), got "
                         f"{loss_type!r}")
    if loss_type != "SSM":
        return
    if "SSM" not in getattr(model_class, "loss_types", ()):
        raise InputError(f"loss_type SSM (sampled softmax) is for the SessionScorer models "
                         f"(SRGNN, LastItem), not {model_class.__name__}")
