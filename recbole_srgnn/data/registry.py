"""Datasets by name: build (or reuse) a registered dataset's RecBole benchmark files.

``prepare_dataset(name, config)`` makes sure ``<data_path>/<name>/<name>.{train,valid,test}.inter``
exist and returns that folder, or returns None for a name that is not registered (a plain RecBole
atomic dataset the caller looks up itself). ``config`` is a mapping of RecBole-style settings
(the merged YAML layers + command line); the keys read here:

- ``data_path`` (default ``dataset/``): the folder that holds ``<name>/`` and ``raw/<name>/``;
- ``source_path``: the user's raw source (an ``events.csv`` file, or a pre-split folder);
- conversion options, under the ``ConvertOptions`` field names (``session_gap``,
  ``keep_events``, ``dedup_consecutive``, ``min_item_support``, ``min_session_length``,
  ``test_days``, ``valid_days``, ``max_prefix_length``) and ``preset`` (a name in
  ``retailrocket.PRESETS``). An option whose value is None/absent is not set: the effective
  options are the default protocol, replaced by the preset if one is named, replaced by the
  dataset's own defaults (``DATASETS[name].defaults``), replaced by every option set in
  ``config``. ``max_prefix_length``, when not set, follows ``MAX_ITEM_LIST_LENGTH`` (else 50);
- ``valid_fraction``, ``train_sample`` and ``train_sample_seed`` (pre-split datasets, defaults
  0.1, 1.0 and 0; see ``presplit``);
- ``synthetic_n_events`` / ``synthetic_seed`` (``retailrocket-synthetic`` only; defaults
  ``synthetic.DEFAULT_N_EVENTS`` / 0);
- ``data_progress`` (default True): progress lines of the build on stderr.

Options that cannot apply (conversion options for the pre-split dataset, ``valid_fraction`` for
converted ones, ``source_path`` for the generated one) are refused with an ``InputError`` rather
than silently ignored.

Registered names:

- ``retailrocket-synthetic``: the embedded default. ``<data_path>/raw/retailrocket-synthetic/
  events.csv`` is generated (and reused while ``events.meta.json`` records the same generator
  version and arguments and the file's size), then converted like the real file;
- ``retailrocket``: Kaggle's full ``events.csv`` (from ``source_path`` or
  ``<data_path>/raw/retailrocket/events.csv``), converted with the default protocol;
- ``retailrocket-sample``: the 10k-row real sample, converted with ``min_item_support`` 2 and
  14 + 14 days (the default ≥ 5 / 7 + 7 days leave only ~20 test cases);
- ``retailrocket-cotrec``: the COTREC/DHCN pre-split folder, imported by ``presplit``.

Real sources are looked up only where the docs (dataset/README.md) tell users to put them, in
this order: ``source_path``; ``<data_path>/raw/<name>/``; ``$RECBOLE_SRGNN_SHARED_DATA/<name>``
when that variable names a folder of sources (kept outside ``data_path``, e.g. one folder for
several checkouts; the test suite and the benchmark commands set it). Otherwise an
``InputError`` says where to put the files and which option to pass. Source files are read where
they are, never copied.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from recbole_srgnn.errors import InputError

DEFAULT_DATA_PATH = "dataset/"
OPTION_NAMES = ("session_gap", "keep_events", "dedup_consecutive", "min_item_support",
                "min_session_length", "test_days", "valid_days", "max_prefix_length")
KAGGLE_PAGE = "https://www.kaggle.com/datasets/retailrocket/ecommerce-dataset"
SOURCES_ENV = "RECBOLE_SRGNN_SHARED_DATA"  # a folder of sources, <name>/ each; unset: not used
COTREC_RELEASE = ("the Retail Rocket split of the COTREC/DHCN release "
                  "(all_train_seq.txt + test.txt pickles, or train_sessions.txt + test.tsv)")


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: how it is built and what its source looks like."""

    name: str
    kind: str                 # "synthetic" | "events" | "presplit"
    description: str
    source_file: str | None = None  # for "events": the file inside a source folder
    defaults: dict[str, Any] = field(default_factory=dict)  # dataset-specific option defaults
    how_to_get: str = ""


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec for spec in (
        DatasetSpec("retailrocket-synthetic", "synthetic",
                    "synthetic click log in the raw Retail Rocket schema (generated, embedded default)"),
        DatasetSpec("retailrocket", "events",
                    "Retail Rocket events.csv from Kaggle (2.76M events), default protocol",
                    source_file="events.csv",
                    how_to_get=f"download events.csv of the \"Retailrocket recommender system "
                               f"dataset\" from Kaggle ({KAGGLE_PAGE})"),
        DatasetSpec("retailrocket-sample", "events",
                    "10,080-row real sample of Retail Rocket views, support >= 2, 14 + 14 days",
                    source_file="events.csv",
                    defaults={"min_item_support": 2, "test_days": 14.0, "valid_days": 14.0},
                    how_to_get="use a sample of Retail Rocket's events.csv in the raw Kaggle schema"),
        DatasetSpec("retailrocket-cotrec", "presplit",
                    "COTREC/DHCN pre-split Retail Rocket sessions (15,132 published test cases)",
                    how_to_get=f"get {COTREC_RELEASE}"),
    )
}


def registered_names() -> list[str]:
    return list(DATASETS)


def sources_dir() -> Path | None:
    """The folder of sources named by ``$RECBOLE_SRGNN_SHARED_DATA``; None when it is unset."""
    value = os.environ.get(SOURCES_ENV, "").strip()
    return Path(value).expanduser() if value else None


def prepare_dataset(name: str, config: Mapping[str, Any]) -> Path | None:
    """Make sure a registered dataset's benchmark files exist; None for unregistered names.

    Returns the absolute folder ``<data_path>/<name>``. Raises ``InputError`` for a missing
    source, bad options or bad source content (nothing is written then).
    """
    spec = DATASETS.get(name)
    if spec is None:
        return None
    config = config or {}
    data_path = Path(_value(config, "data_path") or DEFAULT_DATA_PATH).expanduser()
    out_dir = (data_path / name).resolve()
    progress = bool(_value(config, "data_progress", True))

    if spec.kind == "presplit":
        _refuse(config, name, OPTION_NAMES[:-1] + ("preset", "synthetic_n_events", "synthetic_seed"),
                "it is pre-split (only valid_fraction, train_sample and max_prefix_length apply)")
        from recbole_srgnn.data.presplit import import_presplit

        source = _find_source(spec, config, data_path)
        valid_fraction = _value(config, "valid_fraction", 0.1)
        import_presplit(source, out_dir, valid_fraction=valid_fraction,
                        max_prefix_length=_max_prefix_length(config),
                        train_sample=_value(config, "train_sample", 1.0),
                        train_sample_seed=_value(config, "train_sample_seed", 0),
                        force=False, progress=progress)
        return out_dir

    _refuse(config, name, ("valid_fraction", "train_sample", "train_sample_seed"),
            "it is converted from events (valid_days applies)")
    if spec.kind == "synthetic":
        if _value(config, "source_path") is not None:
            raise InputError(f"dataset {name!r} is generated; source_path does not apply (use "
                             f"dataset 'retailrocket' with source_path for a real events.csv)")
        events = ensure_synthetic_events(
            data_path / "raw" / name / "events.csv",
            n_events=_value(config, "synthetic_n_events"),
            seed=_value(config, "synthetic_seed", 0), progress=progress)
    else:
        _refuse(config, name, ("synthetic_n_events", "synthetic_seed"), "it is not generated")
        events = _find_source(spec, config, data_path)
    from recbole_srgnn.data.retailrocket import convert_events

    convert_events(events, out_dir, conversion_options(spec, config), force=False,
                   progress=progress)
    return out_dir


# ------------------------------------------------------------------------------------ internals

def _value(config: Mapping[str, Any], key: str, default: Any = None) -> Any:
    value = config.get(key) if hasattr(config, "get") else None
    if value is None:
        try:  # a RecBole Config has no .get but answers [] (None for absent keys)
            value = config[key]  # type: ignore[index]
        except (KeyError, TypeError):
            value = None
    return default if value is None else value


def _refuse(config: Mapping[str, Any], name: str, keys, why: str) -> None:
    given = [k for k in keys if _value(config, k) is not None]
    if given:
        raise InputError(f"option(s) {', '.join(given)} do not apply to dataset {name!r}: {why}")


def _max_prefix_length(config: Mapping[str, Any]) -> int:
    value = _value(config, "max_prefix_length")
    if value is None:
        value = _value(config, "MAX_ITEM_LIST_LENGTH", 50)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"max_prefix_length must be a non-negative integer, got {value!r}")
    return value


def conversion_options(spec: DatasetSpec, config: Mapping[str, Any]):
    """The effective ``ConvertOptions``: default < preset < dataset defaults < config."""
    from recbole_srgnn.data.retailrocket import PRESETS
    from recbole_srgnn.data.sessions import ConvertOptions

    preset = _value(config, "preset")
    if preset is None:
        base = ConvertOptions()
    elif preset in PRESETS:
        base = PRESETS[preset]
    else:
        raise InputError(f"unknown preset {preset!r} (known: {', '.join(sorted(PRESETS))})")
    values = {f.name: getattr(base, f.name) for f in fields(ConvertOptions)}
    values.update(spec.defaults)
    for key in OPTION_NAMES:
        value = _value(config, key)
        if value is not None:
            values[key] = value
    if _value(config, "max_prefix_length") is None:
        values["max_prefix_length"] = _max_prefix_length(config)
    keep = values["keep_events"]
    if isinstance(keep, (list, tuple)):
        values["keep_events"] = tuple(keep)
    return ConvertOptions(**values).validated()


def _find_source(spec: DatasetSpec, config: Mapping[str, Any], data_path: Path) -> Path:
    """The source file (events) or folder (presplit) of a real dataset; InputError if none."""
    def resolve(candidate: Path) -> Path | None:
        if spec.kind == "events":
            if candidate.is_dir():
                candidate = candidate / spec.source_file
            return candidate if candidate.is_file() else None
        return candidate if candidate.is_dir() else None

    given = _value(config, "source_path")
    if given is not None:
        path = Path(str(given)).expanduser()
        found = resolve(path)
        if found is None:
            what = (f"an {spec.source_file} file (or a folder holding one)" if spec.kind == "events"
                    else "a folder")
            state = "does not exist" if not path.exists() else f"is not {what}"
            raise InputError(f"source_path {path} for dataset {spec.name!r} {state}; "
                             f"expected {what}")
        return found
    local = data_path / "raw" / spec.name
    found = resolve(local)
    if found is not None:
        return found
    sources = sources_dir()
    if sources is not None and (sources / spec.name).is_dir():
        found = resolve(sources / spec.name)
        if found is not None:
            return found
    where = local / spec.source_file if spec.kind == "events" else local
    raise InputError(f"dataset {spec.name!r} needs its source: {spec.how_to_get}, and put it at "
                     f"{where} or pass --source_path=PATH")


def ensure_synthetic_events(path: str | os.PathLike, *, n_events: int | None = None, seed: int = 0,
                            progress: bool = True) -> Path:
    """Generate the synthetic ``events.csv`` at ``path`` unless an identical one is there.

    A ``events.meta.json`` beside it records the generator version, the arguments and the
    file's size; the file is reused only when all match.
    """
    import sys

    from recbole_srgnn.data import synthetic
    from recbole_srgnn.files import atomic_outputs

    path = Path(path)
    n_events = synthetic.DEFAULT_N_EVENTS if n_events is None else n_events
    for key, value in (("synthetic_n_events", n_events), ("synthetic_seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key.endswith("events") else 0):
            raise InputError(f"{key} must be a {'positive' if key.endswith('events') else 'non-negative'} "
                             f"integer, got {value!r}")
    meta_path = path.with_name(path.stem + ".meta.json")
    wanted = {"generator": "recbole_srgnn.data.synthetic", "version": synthetic.GENERATOR_VERSION,
              "n_events": n_events, "seed": seed}
    if path.is_file() and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = None
        if isinstance(meta, dict) and meta.get("args") == wanted \
                and meta.get("bytes") == path.stat().st_size:
            return path
    if progress:
        print(f"[synthetic] generating {n_events:,} events (seed {seed}) into {path}",
              file=sys.stderr, flush=True)
    meta_path.unlink(missing_ok=True)  # a stale record never vouches for a new file
    synthetic.write_events_csv(path, n_events=n_events, seed=seed)
    with atomic_outputs([meta_path]) as (tmp,):
        tmp.write_text(json.dumps({"args": wanted, "bytes": path.stat().st_size}, indent=2) + "\n",
                       encoding="utf-8")
    return path
