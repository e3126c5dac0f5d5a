"""Search-space files for ``python -m recbole_srgnn.tune``: schema, validation, sampling values.

A space file is a YAML mapping from a RecBole/plugin option name to one entry::

    learning_rate: {type: loguniform, low: 1.0e-4, high: 1.0e-2}   # log-uniform float
    embedding_dropout: {type: quniform, low: 0.0, high: 0.5, q: 0.1} # uniform, rounded to q
    hidden_dropout: {type: uniform, low: 0.0, high: 0.5}             # uniform float
    step: {type: randint, low: 1, high: 3}                           # integer, both ends included
    readout: {type: choice, values: [hybrid, global]}                # one value at random
    embedding_size: {type: grid, values: [64, 128]}                  # every value (random search only)
    loss_type: {type: fixed, value: CE}                              # the same in every trial
    dropout_probs:                                                   # a list-valued option:
      type: list                                                     #   one entry per element
      items: [{type: uniform, low: 0.0, high: 0.5}, {type: fixed, value: 0.5}]

Every entry is a mapping with a ``type`` and exactly that type's fields. Option names are not
checked against the model (a key the model does not read is passed through to the config, as on
``run.py``'s command line); a malformed entry, an unknown type, a bad range (``low >= high``,
``low <= 0`` for ``loguniform``, bounds that are not multiples of ``q``), a missing file or a YAML
syntax error raise :class:`recbole_srgnn.errors.InputError` with one line naming the file and key.

This module imports neither Ray nor RecBole, so a bad space file is reported at once.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from recbole_srgnn.errors import InputError
from recbole_srgnn.yaml_files import parse_yaml

# type -> (required fields, optional fields)
TYPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "loguniform": (("low", "high"), ()),
    "uniform": (("low", "high"), ()),
    "quniform": (("low", "high", "q"), ()),
    "randint": (("low", "high"), ()),
    "choice": (("values",), ()),
    "grid": (("values",), ()),
    "fixed": (("value",), ()),
    "list": (("items",), ()),
}
EXAMPLE = "{type: loguniform, low: 1.0e-4, high: 1.0e-2}"

# Options a space may not search: the tuner sets them per trial, or they are not options.
RESERVED = {
    "model": "the model is --model",
    "dataset": "the dataset is --dataset",
    "epochs": "the epoch budget is --max_epochs",
    "checkpoint_dir": "each trial writes its checkpoint in its own folder",
    "gpu_id": "devices come from --gpus_per_trial",
    "local_rank": "trials are single-process",
    "nproc": "trials are single-process",
    "world_size": "trials are single-process",
}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Param:
    """One searched (or fixed) value. ``name`` is the trial-config name: the option name, or
    ``option[i]`` for element ``i`` of a list-valued option."""

    name: str
    key: str
    index: int | None
    type: str
    low: float | int | None = None
    high: float | int | None = None
    q: float | None = None
    values: tuple = ()
    value: Any = None

    @property
    def sampled(self) -> bool:
        return self.type != "fixed"

    def describe(self) -> str:
        if self.type in ("loguniform", "uniform", "randint"):
            return f"{self.type}({self.low}, {self.high})"
        if self.type == "quniform":
            return f"quniform({self.low}, {self.high}, q={self.q})"
        if self.type in ("choice", "grid"):
            return f"{self.type}({', '.join(map(str, self.values))})"
        return f"fixed({self.value})"


@dataclass(frozen=True)
class Space:
    """A validated search space: its parameters in file order, and the list lengths."""

    source: str
    params: tuple[Param, ...]
    list_lengths: Mapping[str, int]
    text: str = ""

    @property
    def sampled(self) -> list[Param]:
        return [p for p in self.params if p.sampled]

    @property
    def keys(self) -> list[str]:
        seen: list[str] = []
        for p in self.params:
            if p.key not in seen:
                seen.append(p.key)
        return seen

    def config_values(self, sampled: Mapping[str, Any]) -> dict[str, Any]:
        """Option values for one trial: ``sampled`` (by ``Param.name``) plus the fixed values.

        Floats are rounded to 12 significant digits (quantised samples come back as e.g.
        0.30000000000000004); numpy scalars become Python values.
        """
        out: dict[str, Any] = {}
        for key, length in self.list_lengths.items():
            out[key] = [None] * length
        for p in self.params:
            if p.sampled:
                if p.name not in sampled:
                    raise KeyError(f"no sampled value for {p.name!r}")
                value = clean_value(sampled[p.name])
            else:
                value = clean_value(p.value)
            if p.index is None:
                out[p.key] = value
            else:
                out[p.key][p.index] = value
        return {key: out[key] for key in self.keys}

    def check_search(self, search: str) -> None:
        """InputError when ``search`` (random | optuna) cannot express this space."""
        if search != "optuna":
            return
        for p in self.params:
            if p.type == "grid":
                raise InputError(
                    f"space file {self.source}: {p.name!r} is a grid; --search optuna samples "
                    f"every parameter (use type: choice, or --search random)"
                )
            if p.type == "choice" and not all(
                v is None or isinstance(v, (bool, int, float, str)) for v in p.values
            ):
                raise InputError(
                    f"space file {self.source}: {p.name!r} chooses among lists or mappings; "
                    f"--search optuna only chooses among numbers, strings, booleans and null"
                )


def clean_value(value: Any) -> Any:
    """Plain Python value: numpy scalars unwrapped, floats to 12 significant digits."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict, str)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return float(f"{value:.12g}") if math.isfinite(value) else value
    if isinstance(value, (list, tuple)):
        return [clean_value(v) for v in value]
    if isinstance(value, dict):
        return {k: clean_value(v) for k, v in value.items()}
    return value


def load_space(path: str | Path) -> Space:
    """Read and validate a space file; InputError (one line) for anything wrong with it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"space file {path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"space file {path} is a directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read space file {path}: {exc}") from None
    return parse_space(text, str(path))


def parse_space(text: str, source: str = "<space>") -> Space:
    """Validate the YAML text of a space file (``source`` names it in messages)."""
    data = parse_yaml(text, f"space file {source}")
    return space_from_mapping(data, source, text)


def space_from_mapping(data: Any, source: str = "<space>", text: str = "") -> Space:
    if data is None or data == {}:
        raise InputError(f"space file {source} defines no parameters")
    if not isinstance(data, dict):
        raise InputError(
            f"space file {source} must map option names to entries like {EXAMPLE}, "
            f"not a {type(data).__name__}"
        )
    params: list[Param] = []
    lengths: dict[str, int] = {}
    for key, entry in data.items():
        if not isinstance(key, str) or not _NAME.fullmatch(key):
            raise InputError(f"space file {source}: {key!r} is not an option name")
        if key in RESERVED:
            raise InputError(f"space file {source}: {key!r} cannot be searched ({RESERVED[key]})")
        if isinstance(entry, dict) and entry.get("type") == "list":
            _fields(entry, key, "list", source)
            items = entry["items"]
            if not isinstance(items, list) or not items:
                raise InputError(
                    f"space file {source}: {key!r} (list) needs items: a non-empty list of "
                    f"entries, one per element"
                )
            for i, item in enumerate(items):
                params.append(_param(item, key, i, source))
            lengths[key] = len(items)
        else:
            params.append(_param(entry, key, None, source))
    if not any(p.sampled for p in params):
        raise InputError(f"space file {source} has only fixed values: nothing to search")
    return Space(source=source, params=tuple(params), list_lengths=lengths, text=text)


def _fields(entry: dict, name: str, kind: str, source: str) -> None:
    required, optional = TYPES[kind]
    for field in required:
        if field not in entry:
            raise InputError(
                f"space file {source}: {name!r} ({kind}) lacks {field!r}; "
                f"{kind} takes {', '.join(required + optional)}"
            )
    for field in entry:
        if field != "type" and field not in required + optional:
            raise InputError(
                f"space file {source}: {name!r} ({kind}) has unexpected field {field!r}; "
                f"{kind} takes {', '.join(required + optional)}"
            )


def _number(entry: dict, field: str, name: str, kind: str, source: str, integer=False):
    value = entry[field]
    if isinstance(value, str):  # e.g. a quoted "1e-4"
        try:
            value = float(value) if not integer else int(value)
        except ValueError:
            pass
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or (isinstance(value, float) and not math.isfinite(value)):
        what = "a whole number" if integer else "a finite number"
        raise InputError(f"space file {source}: {name!r} ({kind}) {field} must be {what}, got {entry[field]!r}")
    return value


def _param(entry: Any, key: str, index: int | None, source: str) -> Param:
    name = key if index is None else f"{key}[{index}]"
    if not isinstance(entry, dict):
        raise InputError(
            f"space file {source}: {name!r} must be a mapping like {EXAMPLE} "
            f"(for a constant use {{type: fixed, value: ...}}), got {entry!r}"
        )
    if "type" not in entry:
        raise InputError(f"space file {source}: {name!r} has no type (one of {', '.join(TYPES)})")
    kind = entry["type"]
    if kind == "list":
        raise InputError(f"space file {source}: {name!r}: lists cannot be nested")
    if not isinstance(kind, str) or kind not in TYPES:
        raise InputError(
            f"space file {source}: {name!r} has unknown type {kind!r} (types: {', '.join(TYPES)})"
        )
    _fields(entry, name, kind, source)

    if kind in ("loguniform", "uniform", "quniform", "randint"):
        integer = kind == "randint"
        low = _number(entry, "low", name, kind, source, integer)
        high = _number(entry, "high", name, kind, source, integer)
        if not low < high:
            raise InputError(f"space file {source}: {name!r} ({kind}) needs low < high, got low={low}, high={high}")
        if kind == "loguniform" and low <= 0:
            raise InputError(f"space file {source}: {name!r} (loguniform) needs low > 0, got {low}")
        q = None
        if kind == "quniform":
            q = _number(entry, "q", name, kind, source)
            if q <= 0:
                raise InputError(f"space file {source}: {name!r} (quniform) needs q > 0, got {q}")
            for bound in (low, high):
                steps = bound / q
                if abs(steps - round(steps)) > 1e-6:
                    raise InputError(
                        f"space file {source}: {name!r} (quniform) bounds must be multiples of "
                        f"q={q}, got {bound}"
                    )
            if round((high - low) / q) < 1:
                raise InputError(f"space file {source}: {name!r} (quniform) has q larger than high - low")
        return Param(name, key, index, kind, low=low, high=high, q=q)

    if kind in ("choice", "grid"):
        values = entry["values"]
        if not isinstance(values, list) or not values:
            raise InputError(f"space file {source}: {name!r} ({kind}) needs values: a non-empty list")
        seen = []
        for value in values:
            if value in seen:
                raise InputError(f"space file {source}: {name!r} ({kind}) lists {value!r} twice")
            seen.append(value)
        return Param(name, key, index, kind, values=tuple(values))

    return Param(name, key, index, "fixed", value=entry["value"])

