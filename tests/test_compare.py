"""Comparison runner and report: smoke run end to end, resume, selection on validation, errors."""

from __future__ import annotations

import collections
import contextlib
import copy
import csv
import io
import json
import os
import re
import shutil
import signal
import socket
from pathlib import Path

import pytest
import torch

from benchmarks import compare
from recbole_srgnn.experiments import compare_config, compare_exec, compare_report, compare_runs
from recbole_srgnn import files
from recbole_srgnn.training.config import load_yaml
from recbole_srgnn.training.datasets import ready_config
from recbole_srgnn.experiments import stats as report_stats
from recbole_srgnn.errors import InputError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "benchmarks" / "configs"
SMOKE = CONFIGS / "smoke.yaml"
SMOKE_ROWS = ["SRGNN", "SRGNN-global", "GRU4Rec", "SessionPop"]
SMOKE_RUNS = 3 * 2 * 2 + 2  # 3 tunable rows x 2 grid points x 2 seeds + SessionPop x 2 seeds


def call(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = compare.main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """smoke.yaml run once, in-process, into a scratch folder (RecBole logs land in its cwd)."""
    root = tmp_path_factory.mktemp("compare")
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        real = compare_exec.run_one
        mp.setattr(compare_exec, "run_one",
                   lambda job, **kw: calls.append(job["path"]) or real(job, **kw))
        argv = ["--config", SMOKE, "--out", root / "out", "--data-path", root / "data", "--in-process"]
        rc, out, err = call(argv)
        yield {"root": root, "out": root / "out", "argv": argv, "rc": rc, "stdout": out,
               "stderr": err, "calls": calls, "mp": mp}


def run_files(out: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in sorted((out / "runs").rglob("*.json"))}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------
def test_smoke_runs_everything_and_writes_the_report(smoke):
    assert smoke["rc"] == 0, smoke["stderr"]
    out = smoke["out"]
    assert len(smoke["calls"]) == SMOKE_RUNS
    assert len(run_files(out)) == SMOKE_RUNS
    # progress: the run's line, a line per validation epoch, then its result
    assert re.search(rf"\[1/{SMOKE_RUNS}\] SRGNN lr=0.001 seed 1 \.\.\. \n"
                     rf"    epoch 1: valid MRR@10 \d\.\d{{4}} \([^)]+\)\n"
                     rf"(    epoch \d+: .*\n)*    done: hit@10 \d\.\d{{4}}", smoke["stdout"])
    for name in ("report.md", "summary.csv", "runs.csv", "metrics.png", "valid_curves.png"):
        assert (out / name).is_file(), name
    for png in ("metrics.png", "valid_curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    summary = read_csv(out / "summary.csv")
    assert [row["name"] for row in summary] == SMOKE_ROWS
    for row in summary:
        assert row["seeds_finished"] == "2" and row["runs_finished"] == row["runs_planned"]
        assert 0.0 <= float(row["hit@1_mean"]) <= float(row["hit@10_mean"]) <= 1.0
        assert float(row["seconds_per_epoch_mean"]) > 0 and float(row["peak_rss_mb_max"]) > 0
    runs = read_csv(out / "runs.csv")
    assert len(runs) == SMOKE_RUNS
    assert sum(row["selected"] == "true" for row in runs) == 4 * 2  # one point x 2 seeds per row

    text = (out / "report.md").read_text()
    assert "PARTIAL" not in text
    assert "Hit@1 (next-item accuracy)" in text
    # RecBole's GRU4Rec (isolated child processes) trained without anomaly detection
    gru = [json.loads(p.read_text()) for p in run_files(out) if p.parent.name == "GRU4Rec"]
    assert gru and all(e["anomaly_detection"] is False for run in gru for e in run["valid_curve"])
    assert "†" not in text
    assert "ttest_rel" in text and "wilcoxon" in text
    assert "## Faithful default vs best option" in text and "SRGNN-global" in text
    assert "python -m benchmarks.compare --config benchmarks/configs/smoke.yaml" in text
    assert "CPU:" in text and "recbole 1.2.1" in text
    # the variant is compared in its own section, the other models in the baseline table
    baseline_rows = re.findall(r"^\| (\S+) \| Hit@10 \| 2 \|", text, flags=re.M)
    assert baseline_rows == ["GRU4Rec", "SessionPop"]


def test_run_json_has_the_pipeline_results_and_identity(smoke):
    path = smoke["out"] / "runs" / "SRGNN-global" / "learning_rate=0.01-seed2.json"
    data = json.loads(path.read_text())
    assert data["model"] == "SRGNN" and data["dataset"] == "retailrocket-synthetic"
    assert data["config"]["readout"] == "global" and data["config"]["learning_rate"] == 0.01
    assert data["config"]["seed"] == 2 and data["config"]["epochs"] == 1
    assert data["compare"]["name"] == "SRGNN-global" and data["compare"]["seed"] == 2
    assert data["compare"]["isolated"] is False and data["compare"]["threads"] == 1
    assert {"hit@1", "hit@10", "mrr@10", "ndcg@10"} <= set(data["test_result"])
    assert data["checkpoint"] is None and data["result_file"] == str(path.resolve())


def test_second_invocation_reruns_nothing(smoke):
    before = run_files(smoke["out"])
    calls = smoke["calls"]
    n = len(calls)
    rc, out, _ = call(smoke["argv"])
    assert rc == 0
    assert len(calls) == n
    assert f"{SMOKE_RUNS} finished, 0 to run now" in out
    assert run_files(smoke["out"]) == before


def test_resume_redoes_only_missing_or_half_written_runs(smoke, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(smoke["out"], out)
    runs = out / "runs"
    removed = runs / "GRU4Rec" / "learning_rate=0.01-seed2.json"
    removed.unlink()
    truncated = runs / "SRGNN" / "learning_rate=0.001-seed1.json"
    truncated.write_text(truncated.read_text()[:200])  # what a non-atomic writer could leave
    (runs / "SessionPop" / ".default-seed1.json.tmp-99999").write_text("{")  # stray temp file
    before = run_files(out)
    calls = smoke["calls"]
    n = len(calls)
    argv = list(smoke["argv"])
    argv[argv.index("--out") + 1] = out
    rc, stdout, _ = call(argv)
    assert rc == 0
    assert sorted(calls[n:]) == sorted([str(removed.resolve()), str(truncated.resolve())])
    after = run_files(out)
    changed = {path for path in after if before.get(path) != after[path]}
    assert changed == {removed, truncated}
    assert f"{SMOKE_RUNS - 2} finished, 2 to run now" in stdout


def test_seeds_option_runs_only_those_seeds(smoke, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(smoke["out"], out)
    runs = out / "runs"
    seed1 = runs / "SessionPop" / "default-seed1.json"
    seed2 = runs / "SessionPop" / "default-seed2.json"
    seed1.unlink()
    seed2.unlink()
    calls = smoke["calls"]
    n = len(calls)
    argv = list(smoke["argv"])
    argv[argv.index("--out") + 1] = out
    threads = torch.get_num_threads()
    rc, stdout, _ = call([*argv, "--models", "SessionPop", "--seeds", "2", "--threads", "2"])
    assert rc == 0 and "1 to run now" in stdout
    assert calls[n:] == [str(seed2.resolve())] and seed2.is_file() and not seed1.exists()
    # --threads sets the run's torch threads (recorded), restores them after, and is not part
    # of a run's identity: the run is not redone without it
    assert json.loads(seed2.read_text())["compare"]["threads"] == 2
    assert torch.get_num_threads() == threads
    text = (out / "report.md").read_text()  # the config's threads, and the run that differs
    assert "torch threads per run: 1." in text
    assert "(`--threads`; results do not depend on it beyond floating-point rounding, seconds " \
           "per epoch do): SessionPop seed 2 (2)." in text
    rc, stdout, _ = call([*argv, "--seeds", "1"])
    assert rc == 0 and calls[n + 1:] == [str(seed1.resolve())] and seed1.is_file()
    rc, stdout, _ = call(argv)
    assert rc == 0 and "0 to run now" in stdout and calls[n + 2:] == []
    rc, stdout, err = call([*argv, "--seeds", "7"])
    assert rc == 2 and "--seeds: 7 not in" in err and "Traceback" not in err


def test_a_run_another_process_holds_is_left_to_it(smoke, tmp_path):
    """Two processes on one results folder split the runs: a claimed run is skipped, not redone."""
    from recbole_srgnn.files import claimed

    out = tmp_path / "out"
    shutil.copytree(smoke["out"], out)
    seed1 = out / "runs" / "SessionPop" / "default-seed1.json"
    seed2 = out / "runs" / "SessionPop" / "default-seed2.json"
    seed1.unlink()
    seed2.unlink()
    argv = list(smoke["argv"])
    argv[argv.index("--out") + 1] = out
    todo, _, _ = compare_runs.plan(compare_config.load_experiment(SMOKE), out, str(smoke["root"] / "data"))
    held = next(spec for spec in todo if spec.path == seed1.resolve())
    calls = smoke["calls"]
    n = len(calls)
    with claimed(compare_runs.resume_path(out, held)) as mine:  # what the other process holds
        assert mine
        rc, stdout, _ = call(argv)
        assert rc == 0
        assert calls[n:] == [str(seed2.resolve())] and seed2.is_file() and not seed1.exists()
        assert f"{held.describe()}: another process runs it ({os.uname().nodename} {os.getpid()}); " \
               "skipped here" in stdout
        assert "1 run(s) were left to the other process(es)" in stdout
        assert "PARTIAL" in (out / "report.md").read_text()
    rc, stdout, _ = call(argv)  # released: the run is this process's again
    assert rc == 0 and calls[n + 1:] == [str(seed1.resolve())] and seed1.is_file()
    assert "left to the other" not in stdout and not (out / "partial").exists()


def test_only_report_reads_without_training(smoke, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(smoke["out"], out)
    (out / "report.md").unlink()
    n = len(smoke["calls"])
    rc, _, _ = call(["--config", SMOKE, "--out", out, "--only-report"])
    assert rc == 0 and len(smoke["calls"]) == n
    assert "PARTIAL" not in (out / "report.md").read_text()


def test_isolated_run_is_its_own_process(smoke, tmp_path):
    data = load_yaml(SMOKE)
    data.update(name="iso", seeds=[1], reference="SessionPop", isolate=True,
                models=[{"name": "SessionPop", "tunable": False}])
    path = tmp_path / "iso.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    rc, stdout, err = call(["--config", path, "--out", tmp_path / "out",
                            "--data-path", smoke["root"] / "data"])
    assert rc == 0, stdout + err
    run = json.loads((tmp_path / "out" / "runs" / "SessionPop" / "default-seed1.json").read_text())
    assert run["compare"]["isolated"] is True and run["compare"]["threads"] == 1
    assert run["peak_rss_mb"] > 0
    # the child's validation epoch reaches this process's progress output, its marker does not
    assert re.search(r"\] SessionPop seed 1 \.\.\. \n    epoch 1: valid MRR@10 \d\.\d{4} ", stdout)
    assert compare_exec.EPOCH_MARK.strip() not in stdout


def test_keep_models_keeps_each_runs_checkpoint_for_export(smoke, tmp_path):
    """keep_models: true: the run record names its best checkpoint under <out>/models/, and
    that checkpoint exports as a bundle that recommends."""
    from recbole_srgnn import Recommender, cli

    data = load_yaml(SMOKE)
    data.update(name="kept", seeds=[1], reference="LastItem", isolate=False, keep_models=True,
                tuning={"budget": 1}, settings={**data.get("settings", {}), "epochs": 1},
                models=[{"name": "LastItem", "tunable": False}])
    path = tmp_path / "kept.yaml"
    path.write_text(json.dumps(data))
    out = tmp_path / "out"
    rc, stdout, err = call(["--config", path, "--out", out, "--data-path", smoke["root"] / "data",
                            "--in-process"])
    assert rc == 0, stdout + err
    run = json.loads((out / "runs" / "LastItem" / "default-seed1.json").read_text())
    checkpoint = Path(run["checkpoint"])
    assert checkpoint.is_file() and (out / "models" / "LastItem" / "default-seed1") in \
        checkpoint.parents
    assert cli.main(["export", "--checkpoint", str(checkpoint), "--output",
                     str(tmp_path / "bundle"), "--quiet"]) == 0
    rec = Recommender.load(tmp_path / "bundle")
    assert len(rec.recommend([rec.items[1]], k=3)) == 3
    data["keep_models"] = "yes"
    path.write_text(json.dumps(data))
    rc, _, err = call(["--config", path, "--out", tmp_path / "out2", "--dry-run"])
    assert rc == 2 and "keep_models must be true or false" in err


def test_run_cut_off_mid_training_continues_from_its_last_epoch(smoke, tmp_path, monkeypatch):
    data = load_yaml(SMOKE)
    data["settings"].update(epochs=3, stopping_step=5)
    data.update(name="cut", seeds=[1], reference="GRU4Rec", isolate=False,
                tuning={"budget": 1}, models=[{"name": "GRU4Rec", "grid": {"learning_rate": [0.01]}}])
    path = tmp_path / "cut.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    base = ["--config", path, "--data-path", smoke["root"] / "data"]
    rc, _, err = call([*base, "--out", tmp_path / "straight"])
    assert rc == 0, err
    run_file = Path("runs") / "GRU4Rec" / "learning_rate=0.01-seed1.json"
    straight = json.loads((tmp_path / "straight" / run_file).read_text())

    out = tmp_path / "cut"
    real_epoch = compare_exec.RunProgress.epoch

    def killed_after_epoch_2(self, info):
        real_epoch(self, info)
        if info["epoch"] == 2:
            raise KeyboardInterrupt  # Ctrl-C (or a lost session) after the second epoch

    monkeypatch.setattr(compare_exec.RunProgress, "epoch", killed_after_epoch_2)
    rc, _, err = call([*base, "--out", out, "--models", "GRU4Rec", "--seeds", "1", "--threads", "1"])
    assert rc == 130 and "rerun the same command to resume" in err
    assert "--models GRU4Rec --seeds 1 --threads 1)" in err  # the hint keeps the selection
    states = list((out / "partial").rglob("*.pth"))
    assert len(states) == 1 and not (out / run_file).exists()
    rc, stdout, err = call([*base, "--out", out, "--dry-run"])  # what the plan says about it
    assert rc == 0, err
    status = re.search(r"GRU4Rec lr=0\.01 seed 1 -> .*\n      2 epoch\(s\) done, .* in 1 part\(s\); "
                       r"valid MRR@10 (\d\.\d{4}) last, (\d\.\d{4}) best \(epoch (\d)\)\n",
                       stdout)
    scores = [entry["valid_score"] for entry in straight["valid_curve"]][:2]
    assert status, stdout
    assert float(status[1]) == scores[1] and float(status[2]) == max(scores)
    assert int(status[3]) == scores.index(max(scores)) + 1 and "running now" not in stdout
    with files.claimed(states[0]):  # as while another runner trains it
        rc, stdout, err = call([*base, "--out", out, "--dry-run"])
    assert rc == 0 and f"; running now ({socket.gethostname()} {os.getpid()})\n" in stdout, err

    monkeypatch.setattr(compare_exec.RunProgress, "epoch", real_epoch)
    rc, stdout, err = call([*base, "--out", out])
    assert rc == 0, err + "".join(log.read_text() for log in (out / "failed").rglob("*.log"))
    assert "(continuing an interrupted run)" in stdout
    assert re.search(r"\n    epoch 3: valid", stdout) and "epoch 1: valid" not in stdout
    resumed = json.loads((out / run_file).read_text())
    assert resumed["training_parts"] == 2 and straight["training_parts"] == 1
    for key in ("test_result", "best_valid_result", "best_epoch"):
        assert resumed[key] == straight[key]
    assert ([entry["train_loss"] for entry in resumed["valid_curve"]]
            == [entry["train_loss"] for entry in straight["valid_curve"]])
    assert not (out / "partial").exists()  # the finished run's state and folders are gone
    assert "1 run(s) were cut off and continued" in (out / "report.md").read_text()
    assert "each epoch's own): GRU4Rec lr=0.01 seed 1 (2 parts)." in (out / "report.md").read_text()
    assert "cut off" not in (tmp_path / "straight" / "report.md").read_text()


def test_parent_stopped_alone_stops_its_isolated_child(smoke, tmp_path, monkeypatch):
    """`kill` on the parent only (no Ctrl-C to the process group): the run's child must not go on
    training as an orphan, and the epoch it finished stays resumable."""
    data = load_yaml(SMOKE)
    data["settings"].update(epochs=20, stopping_step=20)
    data.update(name="orphan", seeds=[1], reference="GRU4Rec", isolate=True, threads=1,
                tuning={"budget": 1}, models=[{"name": "GRU4Rec", "grid": {"learning_rate": [0.01]}}])
    path = tmp_path / "orphan.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    children = []
    real_popen = compare_exec.subprocess.Popen

    def popen(*args, **kwargs):  # as under `nohup python -m benchmarks.compare ... &`: no SIGINT
        kwargs["preexec_fn"] = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)
        children.append(real_popen(*args, **kwargs))
        return children[-1]

    monkeypatch.setattr(compare_exec.subprocess, "Popen", popen)

    def parent_killed(self, info):
        raise KeyboardInterrupt  # what sigterm_as_interrupt turns `kill PARENT` into

    monkeypatch.setattr(compare_exec.RunProgress, "epoch", parent_killed)
    out = tmp_path / "out"
    rc, _, err = call(["--config", path, "--data-path", smoke["root"] / "data", "--out", out])
    assert rc == 130 and "rerun the same command to resume" in err
    assert len(children) == 1 and children[0].returncode == 130  # its own clean Ctrl-C exit
    assert len(list((out / "partial").rglob("*.pth"))) == 1  # epoch 1 is kept for the rerun
    assert not (out / "runs").exists() or not list((out / "runs").rglob("*.json"))


def test_sigterm_ends_a_real_comparison_and_its_child_cleanly(tmp_path):
    """`kill RUNNER` (SIGTERM) on `python -m benchmarks.compare` while its isolated child trains:
    the runner exits 130 with its one-line message (no traceback), the child is gone, the claim is
    released and no half-written run JSON is left under runs/."""
    import subprocess
    import sys
    import time

    psutil = pytest.importorskip("psutil")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    argv = [sys.executable, "-m", "benchmarks.compare", "--config", str(SMOKE), "--out", str(out),
            "--data-path", str(tmp_path / "data")]
    with open(tmp_path / "stdout.txt", "w") as stdout, open(tmp_path / "stderr.txt", "w") as stderr:
        # its own session: the signal reaches the runner alone, as `kill PID` does
        runner = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=stdout, stderr=stderr,
                                  start_new_session=True)
    watched = [psutil.Process(runner.pid)]

    def logs() -> str:
        return ((tmp_path / "stdout.txt").read_text() + "\n--- stderr ---\n"
                + (tmp_path / "stderr.txt").read_text())

    try:
        child, deadline = None, time.monotonic() + 60
        while child is None and runner.poll() is None and time.monotonic() < deadline:
            for proc in watched[0].children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if "--run-one" in proc.cmdline():
                        child = proc
            time.sleep(0.1)
        assert child is not None, f"no run child within 60 s (rc {runner.poll()}):\n{logs()}"
        watched.append(child)
        locks = list((out / "partial").rglob("*.lock"))
        assert len(locks) == 1  # the runner claimed the run it handed to the child
        time.sleep(1.5)  # let the child get going (its imports alone take longer than this)
        assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE, logs()
        descendants = watched[0].children(recursive=True)
        watched.extend(p for p in descendants if p.pid != child.pid)

        os.kill(runner.pid, signal.SIGTERM)
        try:
            rc = runner.wait(timeout=45)  # the child gets SIGINT, then a kill after 30 s
        except subprocess.TimeoutExpired:
            pytest.fail(f"the runner did not end within 45 s of SIGTERM:\n{logs()}")
        _, alive = psutil.wait_procs(watched[1:], timeout=10)
        assert not alive, f"left running: {alive}"
        err = (tmp_path / "stderr.txt").read_text()
        assert rc == 130, logs()  # Ctrl-C's status, as cli_errors gives it: not 0, not -15
        assert "Traceback" not in err and "rerun the same command to resume" in err, err
        assert not list((out / "partial").rglob("*.lock"))  # the claim is released
        # nothing half-written: whatever runs/ holds is a complete run JSON
        for path in [p for p in (out / "runs").rglob("*") if p.is_file()]:
            assert path.suffix == ".json" and compare.read_run(path)[0] is not None, path
        assert not (out / "report.md").exists()
    finally:
        for proc in reversed(watched):
            with contextlib.suppress(psutil.Error):
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            runner.wait(timeout=10)


def test_stop_child_kills_a_child_that_ignores_ctrl_c():
    code = ("import signal, sys, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)")
    proc = compare_exec.subprocess.Popen([compare_exec.sys.executable, "-c", code],
                                    stdout=compare_exec.subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    compare_exec.stop_child(proc, grace=0.5)
    assert proc.returncode == -9  # SIGKILL after the grace period
    proc.stdout.close()
    compare_exec.stop_child(proc)  # a finished child: nothing to do


# ---------------------------------------------------------------------------------------------
# Selection, planning, statistics (fake runs, no training)
# ---------------------------------------------------------------------------------------------
def experiment(**changes) -> compare_config.Experiment:
    data = {
        "name": "fake", "dataset": "retailrocket-synthetic", "seeds": [1, 2, 3],
        "tuning": {"budget": 2},
        "settings": {"epochs": 1},
        "models": [
            {"name": "SRGNN", "grid": {"learning_rate": [0.001, 0.01]}},
            {"name": "GRU4Rec", "grid": {"learning_rate": [0.001, 0.01]}},
        ],
    }
    data.update(changes)
    return compare_config.parse_experiment(data, "fake.yaml")


def write_fake(exp, out, name, tag, seed, valid, test, phase=1, curve=None):
    spec = compare_runs.make_spec(exp, exp.entry(name), tag, seed, phase, out)
    run = {
        "model": spec.model, "dataset": exp.dataset, "valid_metric": "mrr@10",
        "best_valid_score": valid, "best_valid_result": {"mrr@10": valid},
        "test_result": {"hit@1": test / 2, "hit@10": test, "mrr@10": test / 3},
        "valid_curve": curve or [{"epoch": 0, "mrr@10": valid, "valid_score": valid}],
        "best_epoch": 0, "epochs_trained": 1, "seconds_per_epoch": 1.0, "peak_rss_mb": 100.0,
        "versions": {"recbole": "1.2.1"}, "device": "cpu",
        "compare": {"name": name, "tag": tag, "seed": seed, "phase": phase,
                    "spec_hash": spec.spec_hash, "isolated": True},
    }
    spec.path.parent.mkdir(parents=True, exist_ok=True)
    spec.path.write_text(json.dumps(run))
    return spec.path


def test_selection_uses_mean_validation_never_test(tmp_path):
    exp = experiment()
    out = tmp_path / "out"
    lo, hi = "learning_rate=0.001", "learning_rate=0.01"
    # SRGNN: lr=0.001 has the better MEAN validation (seed 1 alone would favour lr=0.01) and the
    # worse test scores; lr=0.01 has the best test scores.
    for seed, (v_lo, v_hi) in {1: (0.30, 0.40), 2: (0.30, 0.10), 3: (0.30, 0.10)}.items():
        write_fake(exp, out, "SRGNN", lo, seed, v_lo, 0.20 + seed / 1000)
        write_fake(exp, out, "SRGNN", hi, seed, v_hi, 0.90)
        write_fake(exp, out, "GRU4Rec", lo, seed, 0.10, 0.80)
        write_fake(exp, out, "GRU4Rec", hi, seed, 0.20, 0.10)
    runs = compare_runs.finished_runs(exp, exp.entry("SRGNN"), out)
    selection = compare_runs.select_point(exp.entry("SRGNN"), runs, exp.tuning_seeds)
    assert selection.tag == lo and not selection.provisional
    assert selection.mean == pytest.approx(0.30)

    config = tmp_path / "fake.yaml"
    config.write_text(json.dumps({
        "name": "fake", "dataset": "retailrocket-synthetic", "seeds": [1, 2, 3],
        "tuning": {"budget": 2}, "settings": {"epochs": 1},
        "models": [{"name": "SRGNN", "grid": {"learning_rate": [0.001, 0.01]}},
                   {"name": "GRU4Rec", "grid": {"learning_rate": [0.001, 0.01]}}]}))
    rc, _, err = call(["--config", config, "--out", out, "--only-report"])
    assert rc == 0, err
    rows = {row["name"]: row for row in read_csv(out / "summary.csv")}
    assert json.loads(rows["SRGNN"]["selected"]) == {"learning_rate": 0.001}
    assert float(rows["SRGNN"]["hit@10_mean"]) == pytest.approx(0.202)
    assert json.loads(rows["GRU4Rec"]["selected"]) == {"learning_rate": 0.01}
    assert float(rows["GRU4Rec"]["hit@10_mean"]) == pytest.approx(0.10)
    text = (out / "report.md").read_text()
    assert "| SRGNN | lr=0.001 | **0.3000 ± 0.0000** | 3/3 |" in text
    assert "PARTIAL" not in text
    # paired over 3 seeds: SRGNN (0.201..0.203) vs GRU4Rec (0.10) on Hit@10
    line = next(l for l in text.splitlines() if l.startswith("| GRU4Rec | Hit@10 | 3 |"))
    assert "+0.1020" in line


def test_partial_runs_banner_and_na_significance(tmp_path):
    exp = experiment()
    out = tmp_path / "out"
    for tag in ("learning_rate=0.001", "learning_rate=0.01"):
        write_fake(exp, out, "SRGNN", tag, 1, 0.3, 0.5)
        write_fake(exp, out, "GRU4Rec", tag, 1, 0.2, 0.4)
    write_fake(exp, out, "SRGNN", "learning_rate=0.01", 2, 0.9, 0.5)
    paths, collected = compare_report.write_report(exp, out, command="python -m benchmarks.compare ...")
    assert (collected.finished, collected.planned) == (5, 12)
    text = paths["report"].read_text()
    assert "**PARTIAL: 5 of 12 runs finished**" in text
    assert "Provisional grid selection for SRGNN, GRU4Rec" in text
    # SRGNN picks among points with ALL tuning seeds first: none complete, so the best partial
    sel = collected.row("SRGNN").selection
    assert sel.provisional and sel.tag == "learning_rate=0.01"
    assert "n/a (fewer than 2 paired seeds)" in text


def test_epochs_timed_with_anomaly_detection_on_are_flagged(tmp_path):
    exp = experiment(seeds=[1])
    out = tmp_path / "out"

    def curve(*flags):  # None: an epoch recorded before the flag existed
        return [{"epoch": i, "mrr@10": 0.2, "valid_score": 0.2,
                 **({} if flag is None else {"anomaly_detection": flag})} for i, flag in enumerate(flags)]

    for tag in ("learning_rate=0.001", "learning_rate=0.01"):  # the plugin's model: never slowed
        write_fake(exp, out, "SRGNN", tag, 1, 0.3, 0.5, curve=curve(None, None))
    # RecBole's GRU4Rec: 2 unflagged epochs (before the fix: on), then one with it off
    write_fake(exp, out, "GRU4Rec", "learning_rate=0.001", 1, 0.3, 0.4, curve=curve(None, None, False))
    write_fake(exp, out, "GRU4Rec", "learning_rate=0.01", 1, 0.2, 0.4, curve=curve(False, True))
    paths, collected = compare_report.write_report(exp, out, command="python -m benchmarks.compare ...")
    text = paths["report"].read_text()
    assert "GRU4Rec lr=0.001 seed 1 (2 of 3 epochs); GRU4Rec lr=0.01 seed 1 (1 of 2 epochs)." in text
    assert "SRGNN lr" not in text.split("† Seconds per epoch inflated")[1]
    table = text.split("## Test results")[1].split("\n\n")[1].splitlines()  # the main table
    rows = {line.split(" | ")[0]: line for line in table}
    assert "| 1.00 † |" in rows["| GRU4Rec"] and "†" not in rows["| SRGNN"]
    # every epoch trained off: no mark, no note
    for tag in ("learning_rate=0.001", "learning_rate=0.01"):
        write_fake(exp, out, "GRU4Rec", tag, 1, 0.3, 0.4, curve=curve(False))
    paths, _ = compare_report.write_report(exp, out, command="python -m benchmarks.compare ...")
    assert "†" not in paths["report"].read_text()


def test_runs_trained_with_other_thread_counts_are_flagged(tmp_path):
    exp = experiment(seeds=[1])  # config: threads 1
    out = tmp_path / "out"
    for name in ("SRGNN", "GRU4Rec"):
        for tag in ("learning_rate=0.001", "learning_rate=0.01"):
            path = write_fake(exp, out, name, tag, 1, 0.3 if tag == "learning_rate=0.001" else 0.2, 0.4)
            run = json.loads(path.read_text())
            run["compare"]["threads"] = 2 if (name, tag) == ("GRU4Rec", "learning_rate=0.001") else 1
            path.write_text(json.dumps(run))
    paths, _ = compare_report.write_report(exp, out, command="python -m benchmarks.compare ...")
    text = paths["report"].read_text()
    assert "‡ Trained with another number of torch threads than the config's 1" in text
    assert text.split("‡ Trained")[1].split("\n")[0].endswith(": GRU4Rec lr=0.001 seed 1 (2).")
    table = text.split("## Test results")[1].split("\n\n")[1].splitlines()
    rows = {line.split(" | ")[0]: line for line in table}
    assert "1.00 † ‡ |" in rows["| GRU4Rec"] and "‡" not in rows["| SRGNN"]


def test_report_shows_build_and_test_times_and_na_for_older_records(tmp_path):
    exp = experiment(models=[{"name": name, "grid": {"learning_rate": [0.001, 0.01]}}
                             for name in ("SRGNN", "GRU4Rec", "NARM")])
    out = tmp_path / "out"
    timings = {"GRU4Rec": {1: (0.5, 2.0), 2: (0.7, 2.0), 3: (0.9, 2.0)},
               "NARM": {1: (1.0, 4.0), 2: (3.0, 6.0)}}  # NARM seed 3: an older record
    for name in ("SRGNN", "GRU4Rec", "NARM"):  # SRGNN: every record older than the timings
        for seed in (1, 2, 3):
            for tag, valid in (("learning_rate=0.001", 0.3), ("learning_rate=0.01", 0.2)):
                path = write_fake(exp, out, name, tag, seed, valid, 0.5)
                if seed in timings.get(name, {}) and tag == "learning_rate=0.001":
                    run = json.loads(path.read_text())
                    run["model_build_s"], run["test_eval_s"] = timings[name][seed]
                    path.write_text(json.dumps(run))
    paths, _ = compare_report.write_report(exp, out, command="x")
    text = paths["report"].read_text()
    table = text.split("## Test results")[1].split("\n\n")[1].splitlines()
    assert table[0].endswith("| peak RSS MB | build s | test eval s |")
    rows = {line.split(" | ")[0]: line for line in table}
    assert rows["| SRGNN"].endswith("| 1.0 ± 0.0 | 100 | n/a | n/a |")
    assert rows["| GRU4Rec"].endswith("| 100 | 0.700 ± 0.200 | 2.000 ± 0.000 |")
    assert rows["| NARM"].endswith("| 100 | 2.000 ± 1.414 (2 of 3 seeds) | "
                                   "5.000 ± 1.414 (2 of 3 seeds) |")
    assert "n/a = run records written before they were measured" in text
    summary = {row["name"]: row for row in read_csv(paths["summary"])}
    assert (summary["SRGNN"]["model_build_s_mean"], summary["SRGNN"]["model_build_s_seeds"]) == ("", "0")
    assert float(summary["GRU4Rec"]["model_build_s_mean"]) == pytest.approx(0.7)
    assert float(summary["NARM"]["test_eval_s_mean"]) == pytest.approx(5.0)
    assert summary["NARM"]["test_eval_s_seeds"] == "2"
    runs = [row for row in read_csv(paths["runs"]) if row["name"] == "GRU4Rec"
            and row["tag"] == "learning_rate=0.001"]
    assert [float(row["model_build_s"]) for row in runs] == [0.5, 0.7, 0.9]
    assert all(row["model_build_s"] == "" for row in read_csv(paths["runs"])
               if row["name"] == "SRGNN")


def test_paired_test_against_scipy():
    from scipy import stats

    a = {1: 0.40, 2: 0.42, 3: 0.45, 4: 0.41}
    b = {1: 0.38, 2: 0.41, 3: 0.40, 4: 0.40, 5: 0.9}  # seed 5 has no partner
    result = report_stats.paired_test(a, b)
    xs, ys = [0.40, 0.42, 0.45, 0.41], [0.38, 0.41, 0.40, 0.40]
    assert result["n"] == 4
    assert result["diff"] == pytest.approx(sum(x - y for x, y in zip(xs, ys)) / 4)
    assert result["t_p"] == pytest.approx(stats.ttest_rel(xs, ys).pvalue)
    assert result["w_p"] == pytest.approx(stats.wilcoxon(xs, ys).pvalue)
    assert report_stats.paired_test({1: 0.4}, {1: 0.3})["t_p"] is None
    assert report_stats.paired_test({1: 0.4, 2: 0.5}, {1: 0.4, 2: 0.5})["note"].startswith("n/a")


def test_wilson_interval_against_scipy():
    from scipy import stats

    for k, n in [(50, 100), (7858, 15132), (0, 40), (40, 40), (3, 1000)]:
        expected = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
        low, high = report_stats.wilson_interval(k / n, n)
        assert (low, high) == (pytest.approx(expected.low, abs=1e-4), pytest.approx(expected.high, abs=1e-4))
        assert low <= k / n <= high
    with pytest.raises(ValueError):
        report_stats.wilson_interval(0.5, 0)


def test_tuning_on_fewer_seeds_plans_the_rest_for_the_chosen_point(tmp_path):
    exp = experiment(tuning={"budget": 2, "seeds": 1})
    assert exp.total_runs == 2 * (2 * 1 + 2)
    out = tmp_path / "out"
    todo, done, waiting = compare_runs.plan(exp, out)
    assert len(todo) == 4 and not done and waiting == 4  # 2 rows x 2 other seeds wait
    write_fake(exp, out, "SRGNN", "learning_rate=0.001", 1, 0.1, 0.9)
    write_fake(exp, out, "SRGNN", "learning_rate=0.01", 1, 0.2, 0.1)
    todo, done, waiting = compare_runs.plan(exp, out)
    srgnn = [(s.tag, s.seed, s.phase) for s in todo if s.name == "SRGNN"]
    assert srgnn == [("learning_rate=0.01", 2, 2), ("learning_rate=0.01", 3, 2)]
    assert waiting == 2 and len(done) == 2


def test_changed_settings_make_runs_stale_but_data_path_does_not(tmp_path):
    exp = experiment()
    out = tmp_path / "out"
    for name in ("SRGNN", "GRU4Rec"):
        for tag in ("learning_rate=0.001", "learning_rate=0.01"):
            for seed in (1, 2, 3):
                write_fake(exp, out, name, tag, seed, 0.1, 0.1)
    assert compare_runs.plan(exp, out)[0] == []
    assert compare_runs.plan(exp, out, data_path="/elsewhere")[0] == []
    changed = experiment(models=[
        {"name": "SRGNN", "settings": {"step": 2}, "grid": {"learning_rate": [0.001, 0.01]}},
        {"name": "GRU4Rec", "grid": {"learning_rate": [0.001, 0.01]}}])
    todo = compare_runs.plan(changed, out)[0]
    assert {s.name for s in todo} == {"SRGNN"} and len(todo) == 6
    assert len(compare_runs.plan(experiment(settings={"epochs": 2}), out)[0]) == 12
    assert [s.name for s in compare_runs.plan(changed, out, only=["GRU4Rec"])[0]] == []
    # naming the schedule every earlier run used implicitly keeps those runs; another reruns them
    assert compare_runs.plan(experiment(settings={"epochs": 1, "lr_scheduler": "step"}), out)[0] == []
    assert len(compare_runs.plan(experiment(settings={"epochs": 1, "lr_scheduler": "plateau"}), out)[0]) == 12


# ---------------------------------------------------------------------------------------------
# Config errors: one line, exit status 2
# ---------------------------------------------------------------------------------------------
BASE = {"name": "x", "dataset": "retailrocket-synthetic", "seeds": [1, 2],
        "tuning": {"budget": 2},
        "models": [{"name": "SRGNN", "grid": {"learning_rate": [0.001, 0.01]}}]}


@pytest.mark.parametrize("change, message", [
    ({"models": None}, "'models' is required"),
    ({"colour": "red"}, "unknown key(s) colour"),
    ({"seeds": [1, 1]}, "seeds repeat"),
    ({"seeds": "1,2"}, "seeds must be a list"),
    ({"tuning": {"budget": 3}}, "has 2 point(s) but tuning.budget is 3"),
    ({"tuning": {"budget": 2, "seeds": 5}}, "tuning.seeds must be"),
    ({"settings": {"seed": 3}}, "sets seed"),
    ({"models": [{"name": "SRGNN", "grid": {"learning_rate": 0.01}}]}, "non-empty list"),
    ({"models": ["SRGNN", "SRGNN"], "tuning": {"budget": 1}}, "SRGNN repeat"),
    ({"models": [{"name": "SessionPop", "tunable": False, "grid": {"x": [1, 2]}}]},
     "tunable: false means no grid"),
    ({"models": [{"name": "NoSuchNet", "grid": {"learning_rate": [1, 2]}}]},
     "model NoSuchNet: unknown model"),
    ({"reference": "GRU4Rec"}, "reference 'GRU4Rec' is not one of the models"),
])
def test_bad_config_is_one_line_exit_2(tmp_path, change, message):
    data = copy.deepcopy(BASE)
    data.update(change)
    data = {key: value for key, value in data.items() if value is not None}
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(data))
    rc, out, err = call(["--config", path, "--out", tmp_path / "out", "--dry-run"])
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, message", [
    ({"settings": {"learning_rat": 0.01}}, "unknown option learning_rat; did you mean learning_rate?"),
    ({"models": [{"name": "SRGNN", "grid": {"learning_rate": [0.001, -1]}}]},
     "learning_rate must be a number >= 0, got -1"),
    ({"settings": {"valid_metric": "MRR@7"}}, "valid_metric must be MRR@K with K in topk"),
])
def test_bad_options_stop_the_comparison_before_any_run(tmp_path, monkeypatch, change, message):
    data = copy.deepcopy(BASE)
    data.update(change)
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(data))
    monkeypatch.chdir(tmp_path)
    rc, out, err = call(["--config", path, "--out", tmp_path / "out", "--in-process"])
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not list((tmp_path / "out").rglob("*.json"))  # no run was made
    assert not (tmp_path / "dataset").exists()  # nor any data prepared


def test_cli_errors_are_one_line(tmp_path):
    for argv, message in [
        (["--config", tmp_path / "missing.yaml"], "does not exist"),
        ([], "--config is required"),
        (["--config", SMOKE, "--models", "Nope"], "--models: Nope not in"),
        (["--config", SMOKE, "--bogus"], "unrecognized arguments"),
        (["--config", SMOKE, "--threads", "0"], "--threads must be a whole number >= 1"),
    ]:
        rc, _, err = call(argv)
        assert rc == 2 and err.startswith("error: ") and message in err, (argv, err)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    rc, _, err = call(["--config", bad])
    assert rc == 2 and "not valid YAML" in err


def test_shipped_configs_are_valid_commented_and_fair():
    files = sorted(CONFIGS.glob("*.yaml"))
    assert {f.name for f in files} >= {"smoke.yaml", "retailrocket-sample.yaml",
                                       "retailrocket-cotrec.yaml"}
    key_line = re.compile(r"^\s*(-\s+)?[A-Za-z_][\w.-]*\s*:")
    for path in files:
        exp = compare_config.load_experiment(path)
        assert exp.name == path.stem
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if key_line.match(line):
                assert "#" in line, f"{path.name}:{number} has no comment: {line!r}"
        if path.stem != "smoke":
            assert len(exp.seeds) >= 3, path.name
        if path.stem in ("retailrocket-sample", "retailrocket-cotrec"):  # the main comparisons
            names = {entry.model for entry in exp.models}
            assert {"SRGNN", "GRU4Rec", "NARM", "RecBoleSRGNN", "SessionPop"} <= names, path.name
        grids = {len(entry.points) for entry in exp.models if entry.tunable}
        assert grids <= {exp.budget}, path.name  # every tuned row gets the same budget


# ---------------------------------------------------------------------------------------------
# SessionPop
# ---------------------------------------------------------------------------------------------
def test_session_pop_scores_training_target_frequency(smoke):
    from recbole.data import create_dataset, data_preparation

    from recbole_srgnn.model import MODELS
    from recbole_srgnn.model.pop import SessionPop

    assert MODELS["SessionPop"] is SessionPop  # registered plugin model, resolvable by name
    data_dir = smoke["root"] / "data"
    config = ready_config("SessionPop", "retailrocket-synthetic", None, {
        "data_path": str(data_dir), "synthetic_n_events": 10000,
        "checkpoint_dir": str(smoke["root"] / "saved")})
    dataset = create_dataset(config)
    train, _, test = data_preparation(config, dataset)
    model = SessionPop(config, train._dataset)

    train_file = data_dir / "retailrocket-synthetic" / "retailrocket-synthetic.train.inter"
    with open(train_file, encoding="utf-8") as handle:
        next(handle)
        counts = collections.Counter(line.rstrip("\n").split("\t")[2] for line in handle)
    for token, count in counts.most_common(20) + counts.most_common()[-5:]:
        assert model.item_count[dataset.token2id("item_id", token)].item() == count
    assert model.item_count.sum().item() == sum(counts.values())

    batch = next(iter(test))[0]
    scores = model.full_sort_predict(batch)
    assert scores.shape == (len(batch), dataset.item_num)
    scores[:, 0] = float("-inf")  # what RecBole's evaluator does in place
    best = dataset.token2id("item_id", counts.most_common(1)[0][0])
    assert (scores.argmax(dim=1) == best).all()
    loss = model.calculate_loss(batch)
    assert loss.requires_grad and loss.item() == 0.0
    assert torch.equal(model.predict(batch), model.item_count[batch["item_id"]])


def test_report_warns_when_the_best_epoch_is_the_epoch_cap(tmp_path):
    exp = experiment(seeds=[1], models=[{"name": "SRGNN", "grid": {"learning_rate": [1, 2]}}])
    out = tmp_path / "out"
    for tag, best in (("learning_rate=1", 2), ("learning_rate=2", 1)):
        path = write_fake(exp, out, "SRGNN", tag, 1, 0.5 if best == 2 else 0.1, 0.5)
        run = json.loads(path.read_text())
        run.update(best_epoch=best, config={"epochs": 3})
        path.write_text(json.dumps(run))
    paths, _ = compare_report.write_report(exp, out, command="x")
    assert ("1 of 1 reported runs had their best validation score in the last allowed epoch"
            in paths["report"].read_text())
