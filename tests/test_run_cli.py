"""run.py as users call it: option handling, one-line errors (exit 2), a tiny real run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN = REPO_ROOT / "run.py"

from tiny_data import write_tiny_benchmark as _write_tiny  # noqa: E402


def write_tiny_benchmark(root, name="tiny"):
    return _write_tiny(root, name, seed=2)


def run_cli(*args: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, str(RUN), *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    write_tiny_benchmark(root / "data")
    return root


def import_run():
    sys.path.insert(0, str(REPO_ROOT))
    try:
        import run
    finally:
        sys.path.remove(str(REPO_ROOT))
    return run


def main_in_process(*args: str, capsys) -> subprocess.CompletedProcess:
    """``run.main`` in this process (no interpreter start-up), captured like a subprocess."""
    capsys.readouterr()
    rc = import_run().main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["run.py", *args], rc, out, err)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def test_help_documents_the_options(workdir):
    proc = run_cli("--help", cwd=workdir)
    assert proc.returncode == 0
    for option in ("--model", "--dataset", "--config_files", "--checkpoint", "--result_file",
                   "--resume_file",
                   "--nproc", "--world_size", "--ip", "--port", "--group_offset",
                   "retailrocket-synthetic", "RecBoleSRGNN"):
        assert option in proc.stdout


def test_unknown_model_is_one_line_exit_2(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    proc = main_in_process("--model=NoSuchModel", "--dataset=tiny",
                           f"--data_path={workdir / 'data'}", capsys=capsys)
    assert_one_line_error(proc, "NoSuchModel", "RecBoleSRGNN")


def test_unreadable_dataset_files_are_one_line_exit_2(workdir, capsys, monkeypatch):
    folder = workdir / "data-broken" / "broken"
    folder.mkdir(parents=True)
    for split in ("train", "valid", "test"):  # no item_id_list column
        (folder / f"broken.{split}.inter").write_text("session_id:token\titem_id:token\n1\t2\n")
    monkeypatch.chdir(workdir)
    proc = main_in_process("--model=SRGNN", "--dataset=broken",
                           f"--data_path={workdir / 'data-broken'}", capsys=capsys)
    assert_one_line_error(proc, "could not read dataset 'broken'", "item_id_list")


def test_missing_dataset_is_one_line_exit_2_without_download(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    data = f"--data_path={workdir / 'data'}"
    proc = main_in_process("--model=GRU4Rec", "--dataset=not-here", data, capsys=capsys)
    assert_one_line_error(proc, "not-here")
    assert not (workdir / "data" / "not-here").exists()


def test_bad_config_file_is_one_line_exit_2(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    data = f"--data_path={workdir / 'data'}"
    bad = workdir / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    proc = main_in_process("--model=GRU4Rec", "--dataset=tiny", data, f"--config_files={bad}",
                           capsys=capsys)
    assert_one_line_error(proc, "bad.yaml")
    absent = workdir / "absent.yaml"
    proc = main_in_process("--model=GRU4Rec", "--dataset=tiny", data, f"--config_files={absent}",
                           capsys=capsys)
    assert_one_line_error(proc, "absent.yaml")


@pytest.mark.parametrize("args, needle", [
    (["stray"], "stray"),
    (["--epochs=1", "--epochs=2"], "--epochs"),
    (["--nproc=x"], "--nproc"),
    (["--metrics=['NoSuchMetric']"], "NoSuchMetric"),
    (["--threads", "many"], "--threads"),
    (["--threads", "0"], "--threads"),
    (["--threads=-1"], "--threads"),
])
def test_bad_options_are_one_line_exit_2(workdir, capsys, monkeypatch, args, needle):
    monkeypatch.chdir(workdir)
    data = f"--data_path={workdir / 'data'}"
    proc = main_in_process("--model=GRU4Rec", "--dataset=tiny", data, *args, capsys=capsys)
    assert_one_line_error(proc, needle)


def test_multi_process_needs_gpus_is_one_line_exit_2(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    data = f"--data_path={workdir / 'data'}"
    # On a CPU machine: "needs CUDA"; on a GPU machine: not 64 GPUs listed in gpu_id.
    proc = main_in_process("--model=GRU4Rec", "--dataset=tiny", data, "--nproc=64", capsys=capsys)
    line = assert_one_line_error(proc)
    assert "CUDA" in line or "gpu_id" in line


def test_checkpoint_that_is_not_ours_is_one_line_exit_2(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    bogus = workdir / "bogus.pth"
    bogus.write_bytes(b"not a checkpoint")
    proc = main_in_process(f"--checkpoint={bogus}", capsys=capsys)
    assert_one_line_error(proc, "bogus.pth")


def test_resume_file_errors_are_one_line_exit_2(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    data = f"--data_path={workdir / 'data'}"
    garbage = workdir / "garbage-state.pth"
    garbage.write_bytes(b"not a resume state")
    proc = main_in_process("--model=GRU4Rec", "--dataset=tiny", data, "--epochs=1",
                           f"--resume_file={garbage}", capsys=capsys)
    assert_one_line_error(proc, "garbage-state.pth", "resume state")
    proc = main_in_process(f"--checkpoint={garbage}", f"--resume_file={garbage}", capsys=capsys)
    assert_one_line_error(proc, "--resume_file")


def test_tiny_real_run_writes_result_file_and_checkpoint_evaluates(workdir):
    result_file = workdir / "out" / "gru.json"
    state = workdir / "gru-state.pth"
    proc = run_cli("--model=GRU4Rec", "--dataset=tiny", f"--data_path={workdir / 'data'}",
                   f"--checkpoint_dir={workdir / 'ck'}", "--epochs=1", "--embedding_size=8",
                   "--hidden_size=8", "--train_batch_size=64", "--topk=[1,10]",
                   "--learning_rate=1e-2", f"--result_file={result_file}",
                   f"--resume_file={state}", "--threads", "1", cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(result_file.read_text())
    assert results["model"] == "GRU4Rec" and results["epochs_trained"] == 1
    assert results["training_parts"] == 1 and not state.exists()  # complete: state removed
    assert results["model_build_s"] > 0 and results["test_eval_s"] > 0  # measured seconds
    config = results["config"]
    assert config["epochs"] == 1 and config["topk"] == [1, 10] and config["learning_rate"] == 0.01
    assert config["threads"] == 1 and results["torch_threads"] == 1  # --threads N
    assert set(results["test_result"]) >= {"hit@1", "hit@10", "mrr@10", "ndcg@10"}
    assert all(0.0 <= v <= 1.0 for v in results["test_result"].values())
    assert "Hit@1 (next-item accuracy)" in proc.stdout
    checkpoint = Path(results["checkpoint"])
    assert checkpoint.parent == workdir / "ck" and checkpoint.is_file()

    evaluated_file = workdir / "out" / "eval.json"
    proc = run_cli(f"--checkpoint={checkpoint}", f"--result_file={evaluated_file}", "--quiet",
                   cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(evaluated_file.read_text())["test_result"] == results["test_result"]


def test_split_options_unit():
    run = import_run()
    assert run.split_options(["--a=1", "--b=x=y", "--a=1"]) == {"a": "1", "b": "x=y"}
    parser = run.build_parser()
    args, extra = parser.parse_known_args(["--data_path=/d", "--model=NARM"])
    assert args.model == "NARM" and args.dataset == "retailrocket-synthetic"
    assert extra == ["--data_path=/d"]  # never taken as an abbreviation of --dataset


# ---------------------------------------------------------------------------------------------
# Options and output paths are checked before any work; checkpoints prove what they are
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("option, needle", [
    ("--learning_rate=abc", "learning_rate must be a number >= 0, got 'abc'"),
    ("--learning_rate=-1", "learning_rate must be a number >= 0, got -1"),
    ("--epochs=abc", "epochs must be an integer >= 1, got 'abc'"),
    ("--epochs=-1", "epochs must be an integer >= 1, got -1"),
    ("--train_batch_size=0", "train_batch_size must be an integer >= 1, got 0"),
    ("--valid_metric=MRR@11", "valid_metric must be MRR@K with K in topk"),
    ("--valid_metric=Recal@10", "Recal is not among metrics"),
    ("--learning_rat=0.01", "unknown option learning_rat; did you mean learning_rate?"),
])
def test_bad_values_are_refused_before_any_work(workdir, capsys, monkeypatch, option, needle):
    monkeypatch.chdir(workdir)
    checkpoints = workdir / f"ck-{abs(hash(option))}"
    proc = main_in_process("--model=SRGNN", "--dataset=tiny", f"--data_path={workdir / 'data'}",
                           f"--checkpoint_dir={checkpoints}", option, capsys=capsys)
    assert_one_line_error(proc, needle)
    assert not checkpoints.exists()  # no Config, no data, no model: nothing was set up


def test_output_paths_are_checked_before_training(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    folder = workdir / "an-output-folder"
    folder.mkdir()
    checkpoints = workdir / "ck-outputs"
    base = ["--model=GRU4Rec", "--dataset=tiny", f"--data_path={workdir / 'data'}",
            f"--checkpoint_dir={checkpoints}", "--epochs=1"]
    for flag in ("--resume_file", "--result_file"):
        proc = main_in_process(*base, f"{flag}={folder}", capsys=capsys)
        assert_one_line_error(proc, flag, "is a folder")
    assert list(folder.iterdir()) == [] and not checkpoints.exists()  # nothing left behind
    proc = main_in_process(f"--checkpoint={folder}", capsys=capsys)
    assert_one_line_error(proc, "is a folder")


def test_help_names_every_plugin_model(workdir):
    from recbole_srgnn.model import MODELS

    proc = run_cli("--help", cwd=workdir)
    text = " ".join(proc.stdout.split())
    assert all(name in text for name in MODELS), text


@pytest.fixture(scope="module")
def trained(workdir):
    """A one-epoch SR-GNN on the tiny data, its checkpoint and the data folder it came from."""
    data = workdir / "data-proof"
    write_tiny_benchmark(data)
    result_file = workdir / "proof.json"
    proc = run_cli("--model=SRGNN", "--dataset=tiny", f"--data_path={data}", "--epochs=1",
                   "--embedding_size=8", "--train_batch_size=64", "--threads", "1",
                   f"--checkpoint_dir={workdir / 'ck-proof'}", f"--result_file={result_file}",
                   cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(result_file.read_text())
    return Path(results["checkpoint"]), data, results, proc.stdout


def test_run_summary_names_the_checkpoint(trained):
    checkpoint, _, _, stdout = trained
    assert f"checkpoint: {checkpoint}" in stdout


def test_a_checkpoint_whose_tensor_bytes_changed_is_refused(trained, workdir, capsys, monkeypatch):
    import torch

    checkpoint, _, _, _ = trained
    state = torch.load(checkpoint, weights_only=True)
    raw = state["state_dict"]["item_embedding.weight"].numpy().tobytes()
    data = bytearray(checkpoint.read_bytes())
    at = bytes(data).find(raw[:64])
    assert at > 0
    data[at + 17] ^= 0x04  # one bit of one weight
    altered = workdir / "altered.pth"
    altered.write_bytes(bytes(data))
    monkeypatch.chdir(workdir)
    proc = main_in_process(f"--checkpoint={altered}", capsys=capsys)
    line = assert_one_line_error(proc, "altered.pth", "damaged or was modified")
    assert "weights_only" not in line
    proc = main_in_process(f"--checkpoint={checkpoint}", "--quiet",
                           f"--result_file={workdir / 'proof-eval.json'}", capsys=capsys)
    assert proc.returncode == 0, proc.stderr  # the untouched file still loads


def _copy_data(source: Path, target: Path, edit) -> Path:
    import shutil

    shutil.copytree(source, target)
    for path in (target / "tiny").glob("*.inter"):
        lines = path.read_text().splitlines()
        path.write_text("\n".join([lines[0], *map(edit, lines[1:])]) + "\n")
    return target


def test_a_checkpoint_on_changed_data_is_refused(trained, workdir, capsys, monkeypatch):
    checkpoint, data, _, _ = trained
    monkeypatch.chdir(workdir)
    # one more item: the embedding table no longer fits (a traceback before)
    more = _copy_data(data, workdir / "data-more", lambda row: row.replace("\t3\t", "\t99\t"))
    proc = main_in_process(f"--checkpoint={checkpoint}", f"--data_path={more}", capsys=capsys)
    assert_one_line_error(proc, "was trained on dataset 'tiny' with", "but the dataset now has")
    # the same number of items under other names: wrong metrics without a word before
    renamed = _copy_data(data, workdir / "data-renamed",
                         lambda row: "\t".join([row.split("\t")[0],
                                                " ".join("x" + i for i in row.split("\t")[1].split()),
                                                "x" + row.split("\t")[2], row.split("\t")[3]]))
    proc = main_in_process(f"--checkpoint={checkpoint}", f"--data_path={renamed}", capsys=capsys)
    assert_one_line_error(proc, "items (or their ids) differ")
