"""Ray Tune search (recbole_srgnn.tune): space files, CLI errors, an end-to-end search with a
failing trial, per-epoch reports, outputs, and resume after Ctrl-C.

One Ray instance is shared by the module. The main search runs on the embedded default dataset
(retailrocket-synthetic, generated small in tmp); the resume test on a tiny benchmark dataset
written here.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
from pathlib import Path

import pytest
import yaml

from recbole_srgnn.tune import cli, driver, finish
from recbole_srgnn.tune import records as tune_records
from recbole_srgnn.tune import report as tune_report
from recbole_srgnn.tune.space import load_space, parse_space

REPO = Path(__file__).resolve().parents[1]
from tiny_data import write_tiny_benchmark  # noqa: E402


def write_tiny(root: Path, name: str = "tinytune") -> Path:
    write_tiny_benchmark(root, name, n_items=25, seed=1, length=(3, 5))
    return root


TINY = ["--train_batch_size=64", "--eval_batch_size=64", "--stopping_step=10",
        "--embedding_size=16", "--hidden_size=16"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------------------------------------
# Space files (no Ray, no RecBole)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["SRGNN", "GRU4Rec", "NARM"])
def test_shipped_space_files_are_valid_and_commented(model):
    path = REPO / "recbole_srgnn" / "properties" / "tune" / f"{model}.yaml"
    space = load_space(path)
    assert space.sampled
    assert "learning_rate" in space.keys and "weight_decay" in space.keys
    assert "train_batch_size" in space.keys
    # every option line carries a comment
    for line in path.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            assert "#" in line, f"{path.name}: no comment on {line!r}"
    lr = next(p for p in space.params if p.key == "learning_rate")
    assert lr.type == "loguniform" and 0 < lr.low < lr.high


def test_srgnn_space_covers_the_models_options():
    space = load_space(REPO / "recbole_srgnn" / "properties" / "tune" / "SRGNN.yaml")
    expected = {"embedding_size", "step", "readout", "embedding_dropout", "hidden_dropout",
                "learning_rate", "weight_decay", "lr_decay_step", "lr_decay_rate",
                "train_batch_size"}
    assert expected <= set(space.keys)


def test_list_valued_option_is_assembled():
    space = load_space(REPO / "recbole_srgnn" / "properties" / "tune" / "NARM.yaml")
    names = [p.name for p in space.sampled]
    assert "dropout_probs[0]" in names and "dropout_probs[1]" in names
    sampled = {p.name: (p.low if p.low is not None else p.values[-1]) for p in space.sampled}
    sampled["dropout_probs[1]"] = 0.30000000000000004  # a quantised sample's float noise
    values = space.config_values(sampled)
    assert values["dropout_probs"] == [0.0, 0.3]
    assert values["train_batch_size"] == 512


def test_fixed_values_and_unknown_keys_pass_through():
    space = parse_space(
        "learning_rate: {type: loguniform, low: 1e-4, high: 1e-2}\n"
        "not_a_model_option: {type: fixed, value: abc}\n"
        "dropout_probs: {type: list, items: [{type: fixed, value: 0.25}, "
        "{type: uniform, low: 0.1, high: 0.5}]}\n"
    )
    assert [p.name for p in space.sampled] == ["learning_rate", "dropout_probs[1]"]
    values = space.config_values({"learning_rate": 0.001, "dropout_probs[1]": 0.2})
    assert values == {"learning_rate": 0.001, "not_a_model_option": "abc",
                      "dropout_probs": [0.25, 0.2]}


BAD_SPACES = {
    "unknown_type": ("lr: {type: logunifrom, low: 1, high: 2}\n", "unknown type 'logunifrom'"),
    "low_ge_high": ("lr: {type: uniform, low: 0.5, high: 0.5}\n", "low < high"),
    "log_nonpositive": ("lr: {type: loguniform, low: 0, high: 1}\n", "low > 0"),
    "randint_float": ("step: {type: randint, low: 1.5, high: 3}\n", "whole number"),
    "missing_field": ("lr: {type: uniform, low: 0.1}\n", "lacks 'high'"),
    "extra_field": ("lr: {type: uniform, low: 0.1, high: 0.2, hi: 3}\n", "unexpected field 'hi'"),
    "no_type": ("lr: {low: 0.1, high: 0.2}\n", "has no type"),
    "scalar_entry": ("lr: 0.01\n", "must be a mapping"),
    "empty_choice": ("readout: {type: choice, values: []}\n", "non-empty list"),
    "quniform_bounds": ("d: {type: quniform, low: 0.05, high: 0.5, q: 0.1}\n", "multiples of q"),
    "reserved_key": ("epochs: {type: randint, low: 1, high: 5}\n", "--max_epochs"),
    "not_a_mapping": ("- a\n- b\n", "must map option names"),
    "empty": ("# nothing\n", "defines no parameters"),
    "only_fixed": ("a: {type: fixed, value: 1}\n", "nothing to search"),
    "yaml_error": ("lr: {type: uniform, low: 0.1\nstep: [\n", "not valid YAML"),
    "nested_list": ("d: {type: list, items: [{type: list, items: []}]}\n", "cannot be nested"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPACES))
def test_bad_space_file_exits_2_with_one_line(case, tmp_path, capsys):
    text, expected = BAD_SPACES[case]
    space = tmp_path / "space.yaml"
    space.write_text(text)
    rc = cli.main([f"--space={space}", f"--output={tmp_path / 'out'}"])
    assert rc == 2
    line = _one_error_line(capsys)
    assert expected in line and str(space) in line
    assert not (tmp_path / "out").exists()


def test_missing_space_file_exits_2(tmp_path, capsys):
    rc = cli.main([f"--space={tmp_path / 'nope.yaml'}", f"--output={tmp_path / 'out'}"])
    assert rc == 2
    assert "does not exist" in _one_error_line(capsys)


def test_space_error_needs_no_ray_or_recbole(tmp_path):
    """A bad space file is reported before Ray or RecBole is imported (instant errors)."""
    import subprocess
    import sys

    space = tmp_path / "bad.yaml"
    space.write_text("lr: {type: uniform, low: 2, high: 1}\n")
    code = ("import sys; from recbole_srgnn.tune import cli; rc = cli.main(sys.argv[1:]); "
            "assert 'ray' not in sys.modules and 'recbole' not in sys.modules, 'imported'; "
            "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, f"--space={space}",
                           f"--output={tmp_path / 'o'}"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "low < high" in proc.stderr


@pytest.mark.parametrize("argv, expected", [
    (["--epochs=3"], "--max_epochs"),
    (["--gpu_id=0"], "--gpus_per_trial"),
    (["--learning_rate=0.1"], "also in the space file"),
    (["--num_samples=0"], "at least 1"),
    (["--reduction_factor=1"], "at least 2"),
    (["--retry_failed"], "--resume only"),
    (["stray"], "--key=value"),
    (["--address=127.0.0.1:1"], "cannot reach the Ray cluster"),  # nothing listens on port 1
    (["--address=nohostport"], "HOST:PORT"),
])
def test_cli_option_errors(argv, expected, tmp_path, capsys):
    space = tmp_path / "s.yaml"
    space.write_text("learning_rate: {type: loguniform, low: 1e-4, high: 1e-2}\n")
    rc = cli.main([f"--space={space}", f"--output={tmp_path / 'out'}", *argv])
    assert rc == 2
    assert expected in _one_error_line(capsys)


def test_output_is_required(capsys):
    assert cli.main(["--space=recbole_srgnn/properties/tune/SRGNN.yaml"]) == 2
    assert "--output" in _one_error_line(capsys)


def test_resume_without_a_search_exits_2(tmp_path, capsys):
    assert cli.main(["--resume", f"--output={tmp_path}"]) == 2
    assert "holds no search" in _one_error_line(capsys)


def test_optuna_missing_is_one_line(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    rc = cli.main(["--space=recbole_srgnn/properties/tune/SRGNN.yaml", "--search=optuna",
                    f"--output={tmp_path / 'out'}"])
    assert rc == 2
    line = _one_error_line(capsys)
    assert "optuna" in line and "pip install" in line


def test_optuna_refuses_grid(tmp_path, capsys):
    space = tmp_path / "s.yaml"
    space.write_text("embedding_size: {type: grid, values: [8, 16]}\n")
    rc = cli.main([f"--space={space}", "--search=optuna", f"--output={tmp_path / 'out'}"])
    assert rc == 2
    assert "grid" in _one_error_line(capsys)


def test_best_yaml_names_no_machine_folder_the_user_did_not_give(tmp_path, monkeypatch):
    prepared = {"data_path": "/abs/where/the/driver/found/dataset/", "eval_batch_size": 2048}
    assert finish.best_yaml_options({"options": {"eval_batch_size": "2048"}}, prepared) == {
        "eval_batch_size": 2048}
    assert finish.best_yaml_options({"options": {"data_path": "dataset/"}}, prepared) == prepared
    monkeypatch.chdir(tmp_path)
    assert finish.shown_path(tmp_path / "out" / "best.yaml") == str(Path("out") / "best.yaml")
    outside = tmp_path.parent / "elsewhere" / "best.yaml"
    assert finish.shown_path(outside) == str(outside)


# ---------------------------------------------------------------------------------------------
# Ray search spaces (Ray's sampling, no cluster)
# ---------------------------------------------------------------------------------------------
def test_ray_domains_sample_inside_the_declared_ranges():
    space = parse_space(
        "lr: {type: loguniform, low: 1e-4, high: 1e-2}\n"
        "step: {type: randint, low: 1, high: 3}\n"
        "drop: {type: quniform, low: 0.0, high: 0.5, q: 0.1}\n"
        "u: {type: uniform, low: -1, high: 1}\n"
        "readout: {type: choice, values: [hybrid, global]}\n"
    )
    domains = driver.param_space(space)
    import numpy as np

    rng = np.random.default_rng(0)
    lr = np.asarray(domains["lr"].sample(size=500, random_state=rng), dtype=float)
    assert lr.min() >= 1e-4 and lr.max() <= 1e-2
    assert (lr < 1e-3).mean() > 0.3  # log-uniform: half the mass below the geometric middle
    steps = set(int(v) for v in domains["step"].sample(size=300, random_state=rng))
    assert steps == {1, 2, 3}  # both ends included
    drops = [space.config_values({"lr": 1e-3, "step": 1, "drop": float(v), "u": 0.0,
                                  "readout": "hybrid"})["drop"]
             for v in domains["drop"].sample(size=200, random_state=rng)]
    assert set(drops) <= {0.0, 0.1, 0.2, 0.3, 0.4, 0.5}
    assert set(domains["readout"].sample(size=50, random_state=rng)) == {"hybrid", "global"}


def test_optuna_accepts_the_shipped_spaces():
    pytest.importorskip("optuna")
    from ray.tune.search.optuna import OptunaSearch

    for model in ("SRGNN", "GRU4Rec", "NARM"):
        space = load_space(REPO / "recbole_srgnn" / "properties" / "tune" / f"{model}.yaml")
        space.check_search("optuna")
        searcher = driver.search_alg({"search": "optuna", "seed": 0})
        assert isinstance(searcher, OptunaSearch)
        assert searcher.set_search_properties("best_valid_score", "max", driver.param_space(space))
        suggestion = searcher.suggest("t1")
        assert set(suggestion) == {p.name for p in space.sampled}
        values = space.config_values(suggestion)
        assert 1e-4 <= values["learning_rate"] <= 1e-2


# ---------------------------------------------------------------------------------------------
# Records, selection and outputs from trial events (no Ray)
# ---------------------------------------------------------------------------------------------
def _events(tmp_path: Path, rows: list[dict]) -> Path:
    exp = tmp_path / "experiment"
    exp.mkdir(parents=True, exist_ok=True)
    for row in rows:
        tune_records.append_event(exp, row)
    return exp


def test_collect_trials_statuses_and_selection_on_validation(tmp_path):
    exp = _events(tmp_path, [
        {"event": "start", "trial_id": "a", "time": 0.0, "params": {"lr": 0.1}, "values": {"lr": 0.1}},
        {"event": "result", "trial_id": "a", "time": 1.0, "epoch": 1, "valid_score": 0.2},
        {"event": "result", "trial_id": "a", "time": 2.0, "epoch": 2, "valid_score": 0.3},
        {"event": "result", "trial_id": "a", "time": 3.0, "epoch": 3, "valid_score": 0.3},
        {"event": "complete", "trial_id": "a", "time": 4.0,
         "summary": {"train_seconds": 2.5, "setup_seconds": 0.5, "tail_seconds": 0.5}},
        {"event": "start", "trial_id": "b", "time": 4.0, "params": {"lr": 0.2}, "values": {"lr": 0.2}},
        {"event": "result", "trial_id": "b", "time": 5.0, "epoch": 1, "valid_score": 0.35},
        {"event": "complete", "trial_id": "b", "time": 5.0, "summary": None},  # stopped by ASHA
        {"event": "start", "trial_id": "c", "time": 5.0, "params": {"lr": 0.3}, "values": {"lr": 0.3}},
        {"event": "error", "trial_id": "c", "time": 6.0, "error": "RuntimeError: boom"},
        {"event": "start", "trial_id": "d", "time": 6.0, "params": {"lr": 0.4}, "values": {"lr": 0.4}},
        {"event": "result", "trial_id": "d", "time": 7.0, "epoch": 1, "valid_score": 0.9},
        # d was interrupted, then restarted from scratch by --resume: only the last run counts
        {"event": "start", "trial_id": "d", "time": 8.0, "params": {"lr": 0.4}, "values": {"lr": 0.4}},
        {"event": "result", "trial_id": "d", "time": 9.0, "epoch": 1, "valid_score": 0.1},
    ])
    records = tune_records.collect_trials(exp, bigger=True)
    by_id = {r.trial_id: r for r in records}
    assert [r.index for r in records] == [0, 1, 2, 3]
    assert by_id["a"].status == "completed"
    assert (by_id["a"].best_valid_score, by_id["a"].best_epoch) == (0.3, 2)  # ties: earlier epoch
    assert by_id["a"].overhead_seconds == pytest.approx(1.5)
    assert by_id["b"].status == "stopped" and by_id["b"].epochs_run == 1
    assert by_id["c"].status == "failed" and by_id["c"].error == "RuntimeError: boom"
    assert by_id["d"].status == "interrupted" and by_id["d"].curve == [(1, 0.1)]
    # a completed trial's best epoch is the trainer's (the epoch of its checkpoint)
    exp2 = _events(tmp_path / "two", [
        {"event": "start", "trial_id": "e", "time": 0.0},
        {"event": "result", "trial_id": "e", "time": 1.0, "epoch": 1, "valid_score": 0.5},
        {"event": "result", "trial_id": "e", "time": 2.0, "epoch": 2, "valid_score": 0.5},
        {"event": "complete", "trial_id": "e", "time": 3.0, "summary": {"best_epoch": 2}},
    ])
    (e,) = tune_records.collect_trials(exp2)
    assert (e.best_epoch, e.best_valid_score) == (2, 0.5)
    assert tune_records.best_trial(records, bigger=True).trial_id == "b"
    assert tune_records.best_trial(records, bigger=False).trial_id == "d"
    text = tune_report.trials_csv_text(records, ["lr"], "MRR@10")
    rows = list(csv.DictReader(text.splitlines()))
    assert [row["status"] for row in rows] == ["completed", "stopped", "failed", "interrupted"]
    assert rows[0]["best_epoch"] == "2" and rows[0]["epochs_run"] == "3"
    assert rows[2]["error"] == "RuntimeError: boom"


def test_trials_csv_names_the_node_of_each_trial(tmp_path):
    """The node in a trial's reports goes to trials.csv; a restarted trial keeps its last node."""
    exp = _events(tmp_path, [
        {"event": "start", "trial_id": "a", "time": 0.0},
        {"event": "result", "trial_id": "a", "time": 1.0, "epoch": 1, "valid_score": 0.2,
         "node_id": "n1", "node_ip": "10.0.0.1"},
        {"event": "complete", "trial_id": "a", "time": 2.0, "summary": None},
        {"event": "start", "trial_id": "b", "time": 0.0},
        {"event": "result", "trial_id": "b", "time": 1.0, "epoch": 1, "valid_score": 0.3,
         "node_id": "n1", "node_ip": "10.0.0.1"},
        {"event": "start", "trial_id": "b", "time": 3.0},  # --resume: started again elsewhere
        {"event": "result", "trial_id": "b", "time": 4.0, "epoch": 1, "valid_score": 0.3,
         "node_id": "n2", "node_ip": "10.0.0.2"},
        {"event": "start", "trial_id": "c", "time": 0.0},
        {"event": "error", "trial_id": "c", "time": 1.0, "error": "E: before any report"},
    ])
    records = tune_records.collect_trials(exp)
    rows = list(csv.DictReader(tune_report.trials_csv_text(records, [], "MRR@10").splitlines()))
    assert [(row["node_id"], row["node_ip"]) for row in rows] == [
        ("n1", "10.0.0.1"), ("n2", "10.0.0.2"), ("", "")]


def test_a_trial_that_cannot_see_the_search_folder_says_so(tmp_path):
    """On a cluster whose nodes do not share --output, the trial's error names the cause."""
    from recbole_srgnn.tune import progress
    from recbole_srgnn.tune.trial import require_shared_output

    require_shared_output(None, "10.0.0.2")
    cache = tmp_path / "dataset_cache" / "d.pth"
    cache.parent.mkdir()
    cache.write_bytes(b"")
    require_shared_output(str(cache), "10.0.0.2")
    with pytest.raises(FileNotFoundError, match=r"not on this Ray node \(10\.0\.0\.2\).*--output"):
        require_shared_output(str(tmp_path / "elsewhere.pth"), "10.0.0.2")

    class Trial:  # what the driver's callback sees of a failed remote trial
        local_path = str(tmp_path / "no-such-trial-folder")
        error_msg = "Traceback (most recent call last):\n  File x\nFileNotFoundError: not here\n"

    assert progress.trial_error_line(Trial()) == "FileNotFoundError: not here"


# ---------------------------------------------------------------------------------------------
# End to end with Ray (one local Ray for the module)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
                 object_store_memory=128 * 1024 * 1024, logging_level="WARNING")
    root = tmp_path_factory.mktemp("tune")
    write_tiny(root / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # RecBole writes log folders into the cwd
        yield root
    if started:
        ray.shutdown()


# The embedded default dataset, generated small (40k events, ~25k training cases) in tmp.
DEFAULT_DATA = ["--dataset=retailrocket-synthetic", "--synthetic_n_events=40000",
                "--train_batch_size=512", "--embedding_size=16", "--stopping_step=10"]


@pytest.fixture(scope="module")
def search(ray_session):
    """SR-GNN on the embedded default dataset, 2 trials x 2 epochs with ASHA: one completes,
    the other raises in the pipeline (lr_decay_step -1)."""
    root = ray_session
    space = root / "space.yaml"
    space.write_text(
        "learning_rate: {type: loguniform, low: 3.0e-3, high: 1.0e-2}  # lr\n"
        "step: {type: randint, low: 1, high: 2}                      # propagation rounds\n"
        "my_unused_option: {type: choice, values: [7]}               # passed through\n"
        "lr_decay_step: {type: grid, values: [1, -1]}                # -1 makes the trainer raise\n"
    )
    out = root / "search"
    argv = ["--model=SRGNN", f"--space={space}", "--num_samples=1", "--max_epochs=2",
            f"--output={out}", f"--data_path={root / 'default_data'}", *DEFAULT_DATA]
    rc = cli.main(argv)
    return rc, out


def test_search_outputs(search):
    rc, out = search
    assert rc == 0
    for name in ("trials.csv", "best.yaml", "report.md", "valid_curves.png", "best_test.json",
                 "tune_settings.json"):
        assert (out / name).is_file(), name
    assert (out / "valid_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = _read_csv(out / "trials.csv")
    assert len(rows) == 2
    statuses = sorted(row["status"] for row in rows)
    assert statuses == ["completed", "failed"]
    ok = next(row for row in rows if row["status"] == "completed")
    bad = next(row for row in rows if row["status"] == "failed")
    assert ok["lr_decay_step"] == "1" and bad["lr_decay_step"] == "-1"
    assert "lr_decay_step" in bad["error"] and bad["best_valid_score"] == ""
    assert ok["epochs_run"] == "2" and ok["best_epoch"] in ("1", "2")
    assert 3e-3 <= float(ok["learning_rate"]) <= 1e-2 and ok["step"] in ("1", "2")
    assert ok["valid_metric"] == "MRR@10"
    assert len(ok["node_id"]) > 8 and ok["node_ip"]  # the Ray node the trial ran on
    assert "test" not in ",".join(rows[0].keys())  # no test metric in the selection table


def test_every_epoch_is_reported_with_validation_only(search):
    _, out = search
    rows = _read_csv(out / "trials.csv")
    ok = next(row for row in rows if row["status"] == "completed")
    trial_dir = Path(ok["trial_dir"])
    progress = _read_csv(trial_dir / "progress.csv")
    assert [int(r["training_iteration"]) for r in progress] == [1, 2]
    assert [int(r["epoch"]) for r in progress] == [1, 2]
    scores = [float(r["valid_score"]) for r in progress]
    assert float(ok["best_valid_score"]) == pytest.approx(max(scores), abs=1e-6)
    assert all(not key.startswith("test") for key in progress[0])
    assert float(progress[0]["valid_mrr@10"]) == pytest.approx(scores[0])
    summary = json.loads((trial_dir / "summary.json").read_text())
    assert summary["completed"] and summary["epochs_trained"] == 2
    assert int(ok["best_epoch"]) == summary["best_epoch"]  # the trainer's best = its checkpoint
    assert [float(r["best_valid_score"]) for r in progress][-1] == pytest.approx(max(scores))
    per_trial = json.loads((trial_dir / "pipeline_result.json").read_text())
    assert per_trial["test_result"] is None  # the search never keeps test metrics of a trial
    # trials read the splits the driver built once; the cache is gone after the search
    cache = Path(per_trial["config"]["prepared_data_path"])
    assert cache.parent == out / "dataset_cache" and not cache.parent.exists()


def test_trials_run_one_after_another_in_one_reused_worker(search):
    _, out = search
    rows = _read_csv(out / "trials.csv")
    starts = [(Path(row["trial_dir"]) / "starts.txt").read_text().split() for row in rows]
    assert len(starts) == 2 and all(len(s) == 2 for s in starts)  # "<time> pid=<pid>" each
    pids = {s[1] for s in starts}
    assert len(pids) == 1 and pids != {f"pid={os.getpid()}"}  # one Ray worker, not the driver


def test_best_yaml_reproduces_the_best_trial(search, ray_session):
    from recbole_srgnn.training.config import build_config

    _, out = search
    text = (out / "best.yaml").read_text()
    assert text.startswith("# Best configuration of a Ray Tune search")
    assert "python run.py --model=SRGNN --dataset=retailrocket-synthetic" in text
    values = yaml.safe_load(text)
    rows = _read_csv(out / "trials.csv")
    ok = next(row for row in rows if row["status"] == "completed")
    assert values["learning_rate"] == pytest.approx(float(ok["learning_rate"]), rel=1e-5)
    assert values["step"] == int(ok["step"]) and values["lr_decay_step"] == 1
    assert values["my_unused_option"] == 7 and values["epochs"] == 2
    assert values["train_batch_size"] == 512 and values["synthetic_n_events"] == 40000
    config = build_config("SRGNN", "retailrocket-synthetic", [str(out / "best.yaml")])
    assert config["learning_rate"] == pytest.approx(values["learning_rate"])
    assert config["step"] == values["step"] and config["epochs"] == 2
    assert config["embedding_size"] == 16


def test_report_has_best_config_test_metrics_and_overhead(search):
    _, out = search
    report = (out / "report.md").read_text()
    best_test = json.loads((out / "best_test.json").read_text())
    test = best_test["test_result"]
    assert set(test) >= {"hit@10", "mrr@10"}
    assert f"| mrr@10 |" in report and f"{test['mrr@10']:.4f}" in report
    assert "![validation curves](valid_curves.png)" in report
    assert "Search space (`space.yaml`)" in report  # relative to the working folder
    assert "## Trial overhead" in report and "mean **" in report
    rows = _read_csv(out / "trials.csv")
    ok = next(row for row in rows if row["status"] == "completed")
    assert best_test["checkpoint"].startswith(ok["trial_dir"])
    assert float(ok["overhead_seconds"]) >= 0
    # the failed trial's checkpoint folder (if any) was pruned; the best one is kept
    bad = next(row for row in rows if row["status"] == "failed")
    assert not (Path(bad["trial_dir"]) / "checkpoints").exists()
    assert Path(best_test["checkpoint"]).is_file()


def test_the_best_checkpoint_exports_as_a_bundle(search, tmp_path):
    from recbole_srgnn import Recommender, cli

    _, out = search
    best_test = json.loads((out / "best_test.json").read_text())
    assert cli.main(["export", "--checkpoint", best_test["checkpoint"], "--output",
                     str(tmp_path / "bundle"), "--quiet"]) == 0
    rec = Recommender.load(tmp_path / "bundle")
    assert rec.bundle.metadata["model"] == "SRGNN"
    assert len(rec.recommend([rec.items[1], rec.items[2]], k=5)) == 5


def test_second_search_in_the_same_output_is_refused(search, capsys):
    _, out = search
    assert cli.main([f"--output={out}", "--space=recbole_srgnn/properties/tune/SRGNN.yaml"]) == 2
    assert "--resume" in _one_error_line(capsys)


@pytest.fixture(scope="module")
def asha_search(ray_session, search):
    """A real ASHA run: a strong trial (lr 1e-2) runs first and fills the rungs, then a weak one
    (lr 1e-7, an untrained model) reaches the first rung below the cutoff and Ray stops it.
    One CPU, so the trials run one after another in the grid's order."""
    root = ray_session
    space = root / "asha_space.yaml"
    space.write_text(
        "learning_rate: {type: grid, values: [1.0e-2, 1.0e-7]}  # strong first, then weak\n"
    )
    out = root / "asha"
    argv = ["--model=SRGNN", f"--space={space}", "--num_samples=1", "--max_epochs=3",
            "--scheduler=asha", "--grace_period=1", "--reduction_factor=2",
            f"--output={out}", f"--data_path={root / 'default_data'}", *DEFAULT_DATA]
    return cli.main(argv), out


def test_asha_stops_the_weak_trial_in_a_real_ray_run(asha_search):
    rc, out = asha_search
    assert rc == 0
    rows = {float(row["learning_rate"]): row for row in _read_csv(out / "trials.csv")}
    strong, weak = rows[1e-2], rows[1e-7]
    assert strong["status"] == "completed" and strong["epochs_run"] == "3"
    assert weak["status"] == "stopped" and weak["epochs_run"] == "1"
    assert float(weak["best_valid_score"]) < float(strong["best_valid_score"])
    # Ray itself stopped it after one epoch: its progress has exactly one reported epoch
    progress = _read_csv(Path(weak["trial_dir"]) / "progress.csv")
    assert [int(r["epoch"]) for r in progress] == [1]
    assert "stopped" in (out / "report.md").read_text()


def _interrupt_after_first_trial():
    """A Ray Tune callback that presses Ctrl-C (SIGINT to this process) when a trial finishes."""
    from ray.tune import Callback

    class Interrupt(Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            os.kill(os.getpid(), signal.SIGINT)

    return Interrupt()


def test_interrupted_search_resumes_without_redoing_finished_trials(ray_session, capsys):
    root = ray_session
    space = root / "space_resume.yaml"
    space.write_text("learning_rate: {type: loguniform, low: 1.0e-3, high: 1.0e-2}\n")
    out = root / "resumable"
    argv = ["--model=GRU4Rec", "--dataset=tinytune", f"--space={space}", "--num_samples=3",
            "--max_epochs=1", "--scheduler=fifo", f"--output={out}",
            f"--data_path={root / 'data'}", *TINY]
    rc = cli.main(argv, extra_callbacks=[_interrupt_after_first_trial()])
    assert rc == 130
    captured = capsys.readouterr()
    assert "--resume" in captured.err
    # progress: a line per epoch of a trial, then one when it finishes
    assert re.search(r"trial \w+ epoch 1: valid MRR@10 \d\.\d{4} \(best \d\.\d{4}, \d+ s\)",
                     captured.out), captured.out
    assert re.search(r"\[1/3\] trial \w+ completed: best valid MRR@10 \d\.\d{4}", captured.out)
    first = _read_csv(out / "trials.csv")
    finished = [row for row in first if row["status"] == "completed"]
    assert len(finished) == 1
    done_dir = Path(finished[0]["trial_dir"])
    summary_before = (done_dir / "summary.json").read_text()
    assert not (out / "report.md").exists()

    # changing the experiment on resume is refused
    assert cli.main(["--resume", f"--output={out}", "--num_samples=5"]) == 2
    assert "--num_samples=3" in _one_error_line(capsys)

    rc = cli.main(["--resume", f"--output={out}"])
    assert rc == 0
    rows = _read_csv(out / "trials.csv")
    assert len(rows) == 3 and all(row["status"] == "completed" for row in rows)
    assert (done_dir / "starts.txt").read_text().count("\n") == 1  # not run again
    assert (done_dir / "summary.json").read_text() == summary_before
    assert {row["trial_id"] for row in rows} >= {finished[0]["trial_id"]}
    assert (out / "report.md").is_file() and (out / "best.yaml").is_file()
