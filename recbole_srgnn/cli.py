"""``recbole-srgnn COMMAND ...``: the installed commands behind one name.

    recbole-srgnn train   [--model=SRGNN] [--dataset=...] [--key=value ...]   # = python run.py
    recbole-srgnn convert retailrocket|presplit|synthetic ...                # = python -m recbole_srgnn.data
    recbole-srgnn compare --config FILE ...                                  # = python -m recbole_srgnn.compare
    recbole-srgnn fusion  --config FILE ...                                  # = python -m recbole_srgnn.fusion
    recbole-srgnn tune    --output DIR ...                                   # = python -m recbole_srgnn.tune
    recbole-srgnn export  --checkpoint PATH --output DIR                     # a model bundle
    recbole-srgnn recommend --model DIR --input FILE --output FILE | --session ITEM ...
    recbole-srgnn serve   --model DIR [--host 127.0.0.1] [--port 8000]        # HTTP service

Each command is the same code as its ``python -m`` form, with the same options
(``recbole-srgnn COMMAND --help``); this module only picks it. Commands load lazily, so
``--help`` and a misspelled command answer at once.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from typing import Sequence

from recbole_srgnn.errors import InputError, cli_errors, sigterm_as_interrupt

PROG = "recbole-srgnn"

# command -> (module with main(argv, ...), whether main takes prog, one-line description)
COMMANDS: dict[str, tuple[str, bool, str]] = {
    "train": ("recbole_srgnn.train_cli", True, "train and test a model, or test a checkpoint"),
    "convert": ("recbole_srgnn.data.cli", False, "make RecBole files from a click log"),
    "compare": ("recbole_srgnn.experiments.compare_cli", True,
                "run a comparison config and write its report"),
    "fusion": ("recbole_srgnn.experiments.fusion_cli", True,
               "SR-GNN with sequence rules and seed ensembles, chosen on validation"),
    "tune": ("recbole_srgnn.tune.cli", False, "Ray Tune hyperparameter search"),
    "export": ("recbole_srgnn.export_cli", True,
               "write a checkpoint as a model bundle for Recommender.load"),
    "recommend": ("recbole_srgnn.recommend_cli", True,
                  "next-item recommendations from a bundle: a file of sessions or one session"),
    "serve": ("recbole_srgnn.serve_cli", True,
              "serve a model bundle over HTTP (POST /recommend, docs at /docs)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} COMMAND [options]   ({PROG} COMMAND --help for its options)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, _, text) in COMMANDS.items()]
    return "\n".join(lines)


def _run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise InputError(f"{PROG}: unknown command {name!r}{hint} "
                         f"(commands: {', '.join(COMMANDS)})")
    module, takes_prog, _ = COMMANDS[name]
    command = importlib.import_module(module).main
    if name == "compare":
        sigterm_as_interrupt()  # `kill` on the runner also stops its run's child
    return command(rest, prog=f"{PROG} {name}") if takes_prog else command(rest)


@cli_errors
def main(argv: Sequence[str] | None = None) -> int:
    return _run(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
