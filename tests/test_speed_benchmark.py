"""Smoke test of benchmarks/speed.py: every model trains a few batches and the report is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_speed_benchmark_smoke(tmp_path):
    out = tmp_path / "results"
    command = [
        sys.executable, "-m", "benchmarks.speed",
        "--datasets", "retailrocket-synthetic",
        "--models", "SRGNN", "RecBoleSRGNN",
        "--batches", "2", "--warmup", "1", "--rounds", "1", "--graph-batches", "2",
        "--batch-size", "64", "--embedding-size", "16", "--synthetic-events", "10000",
        "--data-path", str(tmp_path / "dataset"), "--out", str(out),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "speed.json").read_text())
    rows = {r["model"]: r for r in report["results"]}
    assert set(rows) == {"SRGNN", "RecBoleSRGNN"}
    for row in rows.values():
        assert row["cases"] == 2 * 64 and row["sequences_per_second"] > 0 and row["peak_rss_mb"] > 0
    graph = rows["SRGNN"]["graph_builder"]
    assert graph["batches"] == 2 and graph["ours_ms_per_batch"] > 0 and graph["recbole_ms_per_batch"] > 0
    markdown = (out / "speed.md").read_text()
    assert "| SRGNN |" in markdown and "| RecBoleSRGNN |" in markdown and "Graph construction" in markdown
    assert report["machine"]["cores"] >= 1
    # the small log was generated once and every worker used it (the default has ~2,900 items)
    assert {row["num_items"] for row in rows.values()} == {rows["SRGNN"]["num_items"]}
    assert rows["SRGNN"]["num_items"] < 1000
    raw = tmp_path / "dataset" / "raw" / "retailrocket-synthetic" / "events.csv"
    assert sum(1 for _ in raw.open()) - 1 == 10000
