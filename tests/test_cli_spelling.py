"""One command-line convention: the tools' flags use underscores (like RecBole's keys); the
hyphenated spellings and ``--out`` of earlier versions are still accepted."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _parsers() -> dict[str, argparse.ArgumentParser]:
    from recbole_srgnn.data import cli as data_cli
    from recbole_srgnn.experiments import compare_cli, fusion_cli
    from recbole_srgnn.tune import cli as tune_cli

    sys.path.insert(0, str(REPO))
    try:
        import run
    finally:
        sys.path.remove(str(REPO))
    parsers = {"run.py": run.build_parser(), "compare": compare_cli.build_parser(),
               "fusion": fusion_cli.build_parser(), "tune": tune_cli.build_parser()}
    data = data_cli.build_parser()
    for action in data._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers.update({f"data {name}": sub for name, sub in action.choices.items()})
    return parsers


def test_every_flag_is_spelled_with_underscores():
    for name, parser in _parsers().items():
        flags = [flag for action in parser._actions for flag in action.option_strings
                 if flag.startswith("--")]
        assert flags, name
        hyphenated = [flag for flag in flags if "-" in flag[2:]]
        assert hyphenated == [], (name, hyphenated)
        assert "--out" not in flags, name


@pytest.mark.parametrize("command, argv, dest, value", [
    ("compare", ["--config", "c.yaml", "--out", "o", "--data-path", "d", "--dry-run"],
     "output", "o"),
    ("compare", ["--config", "c.yaml", "--output", "o", "--data_path", "d", "--dry_run"],
     "data_path", "d"),
    ("fusion", ["--config", "c.yaml", "--only-report"], "only_report", True),
    ("data retailrocket", ["--events", "e.csv", "--out", "o", "--session-gap", "60"],
     "session_gap", 60.0),
    ("data retailrocket", ["--events", "e.csv", "--output", "o", "--session_gap=60",
                           "--min-item-support=3"], "min_item_support", 3),
    ("data presplit", ["--source", "s", "-o", "o", "--valid-fraction", "0.2"],
     "valid_fraction", 0.2),
])
def test_old_and_new_spellings_parse_alike(command, argv, dest, value):
    args = _parsers()[command].parse_args(argv)
    assert getattr(args, dest) == value


def test_recbole_options_are_passed_on_as_given():
    args, extra = _parsers()["run.py"].parse_known_args(["--learning-rate=1", "--data_path=x"])
    assert extra == ["--learning-rate=1", "--data_path=x"]  # RecBole's keys are not rewritten
