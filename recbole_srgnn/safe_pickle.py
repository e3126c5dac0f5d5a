"""Unpickling files a user hands us: only the globals that a file of the expected kind needs.

A pickle is a small program: its opcodes build lists, dicts, numbers and strings by themselves,
and everything else is a *global* (a class or function named by module and name) that
``find_class`` looks up and the program may then call. ``pickle.load`` looks up any global, so
a crafted file runs ``os.system`` as easily as it builds a list. :class:`RestrictedUnpickler`
looks up only what its ``resolve`` function returns and refuses everything else, persistent ids
included; with no ``resolve`` it refuses every global, so only plain containers and scalars load.

:func:`restricted_load` reads a whole file that way and turns any failure into one
:class:`~recbole_srgnn.errors.InputError` line. Callers name what a file of theirs may hold:
``data.presplit`` nothing (lists of numbers), ``prepared_data`` the RecBole classes of a built
dataset (its allow-list is there).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Callable, Optional

from recbole_srgnn.errors import InputError

# (module, name) -> the object to use, or None to refuse.
Resolver = Callable[[str, str], Optional[Any]]


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that looks up only the globals ``resolve`` returns (None: refused).

    Without ``resolve`` every global is refused: classes, functions such as ``os.system``, numpy
    arrays. ``persistent_load`` is always refused.
    """

    def __init__(self, file, resolve: Resolver | None = None):
        super().__init__(file)
        self._resolve = resolve

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        found = self._resolve(module, name) if self._resolve is not None else None
        if found is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return found

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing a persistent id")


def restricted_load(path: str | Path, resolve: Resolver | None = None, *,
                    expected: str = "a pickle of plain lists and numbers") -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; any failure is one ``InputError``.

    ``expected`` completes the message "<path> is not ...".
    """
    path = Path(path)
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        if not handle.read(1):
            raise InputError(f"{path} is empty")
        handle.seek(0)
        try:
            return RestrictedUnpickler(handle, resolve).load()
        except Exception as exc:  # any failure of untrusted bytes is bad input
            raise InputError(f"{path} is not {expected}: {type(exc).__name__}: {exc}") from None

