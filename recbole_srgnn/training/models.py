"""Model names: the plugin's models first, RecBole's built-in SR-GNN as ``RecBoleSRGNN``, then
RecBole's other models, matched case-insensitively when nothing matches exactly.

``SRGNN`` is only ever the plugin's model: RecBole's ``get_model("SRGNN")`` would hand out its
dense built-in under that name (docs/design.md §4.7), so that name never falls back to it.
"""

from __future__ import annotations

import contextlib
import re

from recbole.utils import get_model

from recbole_srgnn.errors import InputError
from recbole_srgnn.training import recbole_compat  # noqa: F401 (imports RecBole's models safely)

BUILTIN_SRGNN = "RecBoleSRGNN"  # RecBole's own (dense, CPU-graph) SR-GNN: our speed baseline


def plugin_models() -> dict[str, type]:
    """The plugin's model table (read at call time, so tests can replace it)."""
    from recbole_srgnn.model import MODELS

    return dict(MODELS)


def builtin_model_names() -> list[str]:
    """Class names of RecBole's sequential and general models (for messages and case matching)."""
    import recbole.model.general_recommender as general
    import recbole.model.sequential_recommender as sequential

    names = set()
    for module in (sequential, general):
        names.update(
            name for name, obj in vars(module).items()
            if isinstance(obj, type) and not name.startswith("_") and hasattr(obj, "type")
        )
    names.discard("SRGNN")  # reachable only as RecBoleSRGNN
    return sorted(names)


def resolve_model_name(name: str) -> tuple[str, type]:
    """(canonical name, class) for ``name``; unknown -> InputError listing the choices."""
    if not isinstance(name, str) or not name.strip():
        raise InputError("model name is empty")
    name = name.strip()
    plugins = plugin_models()
    if name in plugins:
        return name, plugins[name]
    if name == BUILTIN_SRGNN:
        return name, get_model("SRGNN")
    if name == "SRGNN":
        # RecBole would hand out its dense built-in under this name; ours must not fall back to it.
        raise InputError(
            "model SRGNN (the plugin model) is not available: recbole_srgnn.model.MODELS has no "
            f"'SRGNN'; RecBole's built-in SR-GNN is '{BUILTIN_SRGNN}'"
        )
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        with contextlib.suppress(Exception):
            return name, get_model(name)
    builtins = builtin_model_names()
    by_lower: dict[str, str] = {}
    for choice in sorted(plugins) + [BUILTIN_SRGNN] + builtins:
        by_lower.setdefault(choice.lower(), choice)
    match = by_lower.get(name.lower())  # e.g. "gru4rec" -> "GRU4Rec"
    if match is not None:
        return resolve_model_name(match)
    raise InputError(
        f"unknown model {name!r}; plugin models: {', '.join(sorted(plugins)) or 'none yet'}; "
        f"RecBole's built-in SR-GNN: {BUILTIN_SRGNN}; RecBole models: {', '.join(builtins)}"
    )


def resolve_model(name: str) -> type:
    """The model class for ``name``: plugin ``MODELS`` first, then RecBole's ``get_model``.

    ``RecBoleSRGNN`` is RecBole's built-in SRGNN class; ``SRGNN`` is only ever the plugin's.
    Names match case-insensitively when there is no exact match. Unknown -> InputError.
    """
    return resolve_model_name(name)[1]
