"""``--key=value`` options after a command's own flags, as run.py and the tuner take them.

Both pass the raw text on to the pipeline, which parses every value once, the way RecBole's own
command line does.
"""

from __future__ import annotations

from recbole_srgnn.errors import InputError


def split_options(extra: list[str]) -> dict[str, str]:
    """``--key=value`` strings -> {key: raw value}; InputError for anything else or a key given
    twice with different values."""
    options: dict[str, str] = {}
    for arg in extra:
        if not arg.startswith("--") or "=" not in arg or arg.startswith("--="):
            raise InputError(f"unrecognised argument {arg!r}: options are written --key=value")
        key, value = arg[2:].split("=", 1)
        if key in options and options[key] != value:
            raise InputError(f"option --{key} given twice with different values")
        options[key] = value
    return options
