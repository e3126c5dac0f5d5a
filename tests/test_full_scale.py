"""Smoke test of benchmarks/full_scale.py: the whole run on a 20,000-row log, its outputs checked;
its target checks and its one-line refusal of bad options."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.full_scale_report import targets

REPO = Path(__file__).resolve().parents[1]


def test_full_scale_smoke(tmp_path):
    out, work = tmp_path / "results", tmp_path / "work"
    command = [sys.executable, "-m", "benchmarks.full_scale", "--rows", "20000", "--threads", "1",
               "--workdir", str(work), "--output", str(out), "--note", "Smoke test."]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[full-scale] converting" in done.stdout and "[full-scale] SSM: epoch" in done.stdout

    r = json.loads((out / "full_scale.json").read_text())
    assert r["command"].startswith("python -m benchmarks.full_scale --rows 20000")
    assert r["machine"]["cores"] >= 1 and r["threads"] == 1 and r["note"] == "Smoke test."
    assert r["input"]["rows"] == r["input"]["raw"]["rows"] == 20000
    events = work / f"events-20000-seed0-items{r['input']['items_generated']}.csv"
    assert sum(1 for _ in events.open()) == 20001
    assert r["conversion"]["convert_s"] > 0 and r["conversion"]["peak_rss_mib"] > 0
    splits = r["conversion"]["splits"]

    load = r["load"]
    assert load["conversion_reused"] is True  # the pipeline's dataset step found the conversion
    assert load["load_s"] >= load["create_dataset_s"] + load["data_preparation_s"] > 0
    counts = {key: load[key] for key in ("num_items", "train_cases", "valid_cases", "test_cases")}
    assert counts == {"num_items": splits["train"]["items"], "train_cases": splits["train"]["cases"],
                      "valid_cases": splits["valid"]["cases"], "test_cases": splits["test"]["cases"]}

    assert set(r["trainings"]) == {"CE", "SSM"}
    for loss, t in r["trainings"].items():
        assert t["loss"] == loss and t["torch_threads"] == 1
        assert t["epoch_s"] > 0 and t["valid_eval_s"] > 0 and t["test_eval_s"] > 0
        assert t["process_s"] > t["run_s"] > t["epoch_s"] and t["peak_rss_mib"] > 0
        assert 0 <= t["test_result"]["hit@20"] <= 1
        assert {key: t[key] for key in counts} == counts
    # 20k rows leave fewer items than 2,048 negatives: clamped to the catalogue, as the model does
    assert r["trainings"]["SSM"]["num_negatives"] == counts["num_items"] < 2048
    assert r["trainings"]["CE"]["num_negatives"] is None

    assert [t["met"] for t in r["targets"]] == [
        r["conversion"]["convert_s"] < 10,
        max(t["peak_rss_mib"] for t in r["trainings"].values()) < 4e9 / 2**20,
        r["trainings"]["SSM"]["epoch_s"] <= r["trainings"]["CE"]["epoch_s"] / 4,
    ]
    markdown = (out / "full_scale.md").read_text()
    for text in ("| CE (full softmax) |", f"| SSM ({counts['num_items']:,} negatives) |",
                 "## Targets", "| conversion < 10 s |", "Smoke test.",
                 f"{counts['train_cases']:,} / {counts['valid_cases']:,} / "
                 f"{counts['test_cases']:,} train / valid / test cases"):
        assert text in markdown
    assert sorted(p.name for p in out.iterdir()) == ["full_scale.json", "full_scale.md"]


def test_targets_met_and_missed():
    fast = {"CE": {"epoch_s": 100.0, "peak_rss_mib": 3000.0},
            "SSM": {"epoch_s": 25.0, "peak_rss_mib": 3814.0}}
    assert [t["met"] for t in targets(9.9, fast)] == [True, True, True]
    slow = {"CE": {"epoch_s": 100.0, "peak_rss_mib": 3000.0},
            "SSM": {"epoch_s": 25.1, "peak_rss_mib": 3816.0}}
    checks = targets(10.0, slow)
    assert [t["met"] for t in checks] == [False, False, False]
    assert checks[2]["measured"] == "25.1 s / 100.0 s = 0.251"


def test_bad_option_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.full_scale", "--rows", "0",
                           "--output", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("error: ")
    assert not list(tmp_path.iterdir())
