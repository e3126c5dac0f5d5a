"""Datasets and their splits: loaded by RecBole, or built once and reused (``prepared_data_path``).

RecBole turns a dataset into training/validation/test data in two costly steps: reading the
atomic files (``create_dataset``) and building the splits (``Dataset.build``: frames to
tensors, sequence fields). On the real benchmark split these take ~7 s each on one core, far
more than the model needs to start. A hyperparameter search repeats them for every trial, so
its driver does them once and saves the result (:func:`save_prepared`); each trial's config
names that file in ``prepared_data_path`` and :func:`prepare_data` unpickles it (~2.5 s) instead.
A process that runs several trials (Ray reuses its workers) keeps the last file it read in
memory and reads it only once.

A missing file is not an error (as with RecBole's ``dataset_save_path``): the data are built
from the dataset, so a trial's checkpoint can still be evaluated after its search removed the
file. The file is used only when the dataset options it was built with (RecBole's
``dataset_arguments``, the split, the seed) equal the current config's; otherwise the data
are built from the dataset as usual. Dataloaders are always made fresh, from the current config
(batch size, shuffling, seed): RecBole's own ``dataloaders_save_path`` keeps the batch size of
the run that saved them, which a search that samples the batch size cannot use.

The file is read with an unpickler that looks up only the classes and functions such a file
holds (``PREPARED_GLOBALS`` and RecBole's recommender classes; tensors' storages are read with
``weights_only=True``): a file that names anything else is refused with one line, and nothing
in it runs.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import cat_interactions
from recbole.data.utils import create_samplers, get_dataloader
from recbole.model.abstract_recommender import AbstractRecommender
from recbole.utils import ModelType
from recbole.utils.argument_list import dataset_arguments

from recbole_srgnn.errors import InputError
from recbole_srgnn.files import atomic_outputs
from recbole_srgnn.safe_pickle import restricted_load

logger = logging.getLogger(__name__)

FORMAT = 1  # version of the file's layout
# The options that decide what ``create_dataset`` + ``build`` produce.
SIGNATURE_KEYS = tuple(dict.fromkeys([
    *dataset_arguments, "dataset", "data_path", "benchmark_filename", "eval_args",
    "seed", "repeatable", "MODEL_TYPE",
]))

# The globals a file written by save_prepared holds (RecBole's built dataset, its Config, their
# tensors and enums); reading one looks up nothing else (safe_pickle), so a crafted file cannot
# run code. Both numpy 1 and numpy 2 spell their reconstructors here.
PREPARED_GLOBALS = frozenset({
    ("builtins", "int"), ("collections", "OrderedDict"), ("collections", "defaultdict"),
    ("logging", "getLogger"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("recbole.data.dataset.dataset", "Dataset"),
    ("recbole.data.dataset.sequential_dataset", "SequentialDataset"),
    ("recbole.data.interaction", "Interaction"),
    *(("recbole.utils.enum_type", name) for name in
      ("EvaluatorType", "FeatureSource", "FeatureType", "InputType", "ModelType")),
    ("recbole_srgnn.training.recbole_compat", "LayeredConfig"),
    ("torch", "device"), ("torch._utils", "_rebuild_tensor_v2"), ("yaml.loader", "FullLoader"),
})
# RecBole's Config holds the model class: a recommender class of these packages is looked up.
MODEL_PACKAGES = ("recbole.model.", "recbole_srgnn.model.")

# The last prepared file this process read: {"key": (path, mtime_ns, size), "payload": {...}}.
_memory: dict[str, Any] = {}


@contextlib.contextmanager
def recbole_reads_no_pickle(config):
    """Within this block RecBole's ``create_dataset`` and ``data_preparation`` read no pickle.

    Both unpickle, without restriction, a saved dataset or dataloaders file found under
    ``checkpoint_dir`` by its default name (or named by ``dataset_save_path`` /
    ``dataloaders_save_path``, options ``option_checks`` refuses). Here both options name a file
    in an empty temporary folder, so a file left in ``checkpoint_dir`` is never read.
    """
    keys = ("dataset_save_path", "dataloaders_save_path")
    before = {key: config[key] for key in keys}
    with tempfile.TemporaryDirectory(prefix="recbole-srgnn-nopickle-") as empty:
        for key in keys:
            config[key] = os.path.join(empty, f"no-{key}.pth")
        try:
            yield
        finally:
            for key, value in before.items():
                config[key] = value


def load_dataset(config):
    """RecBole's ``create_dataset``; a file RecBole cannot parse becomes one clear InputError."""
    try:
        with recbole_reads_no_pickle(config):
            return create_dataset(config)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, pd.errors.ParserError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(
            f"RecBole could not read dataset {config['dataset']!r} in {config['data_path']}: "
            f"{type(exc).__name__}: {message} (check the .inter files' header and columns)"
        ) from exc


def signature(config) -> dict:
    """The config values a prepared file must share with a run that uses it."""
    return {key: _comparable(config[key]) for key in SIGNATURE_KEYS}


def _comparable(value: Any) -> Any:
    if isinstance(value, ModelType):
        return value.name
    if isinstance(value, (list, tuple)):
        return [_comparable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _comparable(v) for k, v in value.items()}
    return value


def save_prepared(config, path: str | os.PathLike) -> Path:
    """Load the dataset, build its splits and pickle both to ``path`` (atomically)."""
    if config["MODEL_TYPE"] == ModelType.KNOWLEDGE:
        raise InputError("prepared data are for sequential models, not knowledge-graph ones")
    dataset = load_dataset(config)
    built = dataset.build()
    payload = {"format": FORMAT, "signature": signature(config), "dataset": dataset,
               "built": tuple(built)}
    path = Path(path)
    with atomic_outputs([path]) as (tmp,):
        with open(tmp, "wb") as handle:
            pickle.dump(payload, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def _storage_from_bytes(data: bytes):
    """A tensor storage pickled by torch, read back with ``weights_only=True`` (torch's own
    ``torch.storage._load_from_bytes`` reads it with the full unpickler)."""
    return torch.load(io.BytesIO(data), weights_only=True)


def prepared_global(module: str, name: str) -> Any | None:
    """The object a prepared file may name as ``module.name``; None refuses it."""
    if (module, name) == ("torch.storage", "_load_from_bytes"):
        return _storage_from_bytes
    if (module, name) in PREPARED_GLOBALS:
        return getattr(importlib.import_module(module), name)
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    if module.startswith(MODEL_PACKAGES):
        found = getattr(importlib.import_module(module), name, None)
        if isinstance(found, type) and issubclass(found, AbstractRecommender):
            return found
    return None


def _read(path: Path) -> dict:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if _memory.get("key") != key:
        _memory.clear()  # one file at a time: do not hold two datasets
        payload = restricted_load(path, prepared_global,
                                  expected="a file written by save_prepared (prepared_data_path)")
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise InputError(f"prepared_data_path {path}: not a file written by save_prepared")
        _memory.update(key=key, payload=payload)
    return _memory["payload"]


def load_prepared(config):
    """``(dataset, built splits)`` from ``config['prepared_data_path']``, or None to build anew."""
    name = config["prepared_data_path"]
    if not name or config["MODEL_TYPE"] == ModelType.KNOWLEDGE:
        return None
    path = Path(name)
    if not path.is_file():  # like RecBole's dataset_save_path: e.g. a finished search's, removed
        logger.warning("prepared_data_path %s: no such file; building the splits from the dataset",
                       path)
        return None
    payload = _read(path)
    wanted = signature(config)
    differ = sorted(k for k in wanted if payload["signature"].get(k) != wanted[k])
    if differ:
        logger.info("prepared data in %s were built with other %s: building the splits anew",
                    path, ", ".join(differ))
        return None
    return payload["dataset"], payload["built"]


def train_on_valid(config) -> bool:
    """The ``train_on_valid`` option: train on the training and validation cases together."""
    value = config["train_on_valid"] if "train_on_valid" in config else False
    if value not in (None, True, False):
        raise InputError(f"train_on_valid must be true or false, got {value!r}")
    return bool(value)


def with_valid_cases(train_dataset, valid_dataset):
    """A copy of the built training split that also holds the validation cases (after them)."""
    return train_dataset.copy(cat_interactions([train_dataset.inter_feat, valid_dataset.inter_feat]))


def prepare_data(config):
    """``(dataset, train_data, valid_data, test_data)`` for ``config``, like RecBole's
    ``create_dataset`` + ``data_preparation``; from ``prepared_data_path`` when it fits.

    With ``train_on_valid`` the training data also hold the validation cases (the validation
    data stay as they are, and are then in-sample)."""
    prepared = load_prepared(config)
    refit = train_on_valid(config)
    if prepared is None and not refit:
        dataset = load_dataset(config)
        with recbole_reads_no_pickle(config):
            return (dataset, *data_preparation(config, dataset))
    if prepared is None:
        dataset = load_dataset(config)
        built = dataset.build()
    else:
        dataset, built = prepared
    if refit:
        built = [with_valid_cases(built[0], built[1]), built[1], built[2]]
    train_sampler, valid_sampler, test_sampler = create_samplers(config, dataset, built)
    train_data = get_dataloader(config, "train")(config, built[0], train_sampler,
                                                  shuffle=config["shuffle"])
    valid_data = get_dataloader(config, "valid")(config, built[1], valid_sampler, shuffle=False)
    test_data = get_dataloader(config, "test")(config, built[2], test_sampler, shuffle=False)
    return dataset, train_data, valid_data, test_data
