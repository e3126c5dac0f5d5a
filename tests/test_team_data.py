"""The benchmark commands run on the team's real data (``benchmarks/team_data.py``) while the
product itself looks only where its docs say."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks import compare, team_data
from recbole_srgnn.data import registry

REPO = Path(__file__).resolve().parents[1]


def test_the_benchmark_commands_point_the_registry_at_the_team_folder(monkeypatch, tmp_path):
    monkeypatch.setenv(registry.SOURCES_ENV, "")  # unset for the product (restored afterwards)
    assert registry.sources_dir() is None
    rc = compare.main(["--config", str(REPO / "benchmarks" / "configs" / "smoke.yaml"),
                       "--out", str(tmp_path / "out"), "--dry-run"])
    assert rc == 0
    assert os.environ[registry.SOURCES_ENV] == str(team_data.TEAM_DATA)
    assert team_data.TEAM_DATA == REPO.parent / "shared" / "data"
    monkeypatch.setenv(registry.SOURCES_ENV, str(tmp_path))  # a folder set by the user wins
    assert team_data.use_team_data() == tmp_path
    assert os.environ[registry.SOURCES_ENV] == str(tmp_path)


def test_with_the_benchmarks_setting_the_real_sample_is_found(monkeypatch, tmp_path):
    if not (team_data.TEAM_DATA / "retailrocket-sample" / "events.csv").is_file():
        pytest.skip(f"{team_data.TEAM_DATA} holds no retailrocket-sample")
    monkeypatch.setenv(registry.SOURCES_ENV, "")
    team_data.use_team_data()
    folder = registry.prepare_dataset("retailrocket-sample", {"data_path": str(tmp_path),
                                                               "data_progress": False})
    stats = json.loads((folder / "retailrocket-sample.stats.json").read_text())
    assert stats["input"]["path"] == str(
        (team_data.TEAM_DATA / "retailrocket-sample" / "events.csv").resolve())
    assert stats["raw"]["rows"] == 10_080
