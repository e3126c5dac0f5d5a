"""Prepared data (``prepared_data_path``): splits built once give the same batches as building
them anew, follow the current batch size, are refused when the dataset options differ, are read
once per process, and leave a pipeline run's results unchanged."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from recbole_srgnn import prepared_data
from recbole_srgnn.training import runs
from recbole_srgnn.training.datasets import ready_config
from recbole_srgnn.errors import InputError
from tiny_data import write_tiny_benchmark

TINY = {"epochs": 1, "train_batch_size": 32, "eval_batch_size": 16, "embedding_size": 16,
        "stopping_step": 10, "show_progress": False}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    write_tiny_benchmark(root / "data", "tinyprep", seed=5, sessions=(50, 10, 10))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # RecBole writes log folders into the cwd
        yield root


def _config(root: Path, **extra):
    return ready_config("SRGNN", "tinyprep", None,
                        {**TINY, "data_path": str(root / "data"), **extra})


@pytest.fixture(scope="module")
def prepared(root):
    path = root / "cache" / "tinyprep.pth"
    prepared_data.save_prepared(_config(root), path)
    return path


def _batches(loader) -> list[dict]:
    out = []
    for batch in loader:  # training: an Interaction; evaluation: (Interaction, indices, ...)
        interaction = batch[0] if isinstance(batch, tuple) else batch
        out.append({k: v.clone() for k, v in interaction.interaction.items()})
    return out


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


def test_prepared_splits_give_the_batches_of_a_fresh_build(root, prepared):
    fresh = prepared_data.prepare_data(_config(root))
    reused = prepared_data.prepare_data(_config(root, prepared_data_path=str(prepared)))
    assert reused[0].item_num == fresh[0].item_num
    for fresh_loader, reused_loader in zip(fresh[1:], reused[1:]):
        assert reused_loader._dataset.inter_num == fresh_loader._dataset.inter_num
        assert _same(_batches(reused_loader), _batches(fresh_loader))


def test_dataloaders_follow_the_current_batch_size(root, prepared):
    _, train, valid, _ = prepared_data.prepare_data(
        _config(root, prepared_data_path=str(prepared), train_batch_size=7, eval_batch_size=5))
    sizes = [len(batch) for batch in train]
    assert max(len(batch[0]) for batch in valid) == 5
    assert max(sizes) == 7 and sum(sizes) == train._dataset.inter_num


def test_other_dataset_options_build_anew(root, prepared):
    columns = {"inter": ["session_id", "item_id_list", "item_id"]}  # no timestamp column
    config = _config(root, prepared_data_path=str(prepared), load_col=columns)
    assert prepared_data.load_prepared(config) is None
    _, train, _, _ = prepared_data.prepare_data(config)
    assert "timestamp" not in next(iter(train))  # built with the run's own options
    _, train, _, _ = prepared_data.prepare_data(_config(root, prepared_data_path=str(prepared)))
    assert "timestamp" in next(iter(train))
    same = _config(root, prepared_data_path=str(prepared), learning_rate=0.5, train_batch_size=3)
    assert prepared_data.load_prepared(same) is not None  # training options do not matter


def test_the_file_is_read_once_per_process(root, prepared, monkeypatch):
    prepared_data._memory.clear()
    reads = []
    real_load = prepared_data.restricted_load

    def counting_load(path, *args, **kwargs):
        reads.append(Path(path))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(prepared_data, "restricted_load", counting_load)
    config = _config(root, prepared_data_path=str(prepared))
    first = prepared_data.load_prepared(config)
    second = prepared_data.load_prepared(config)
    assert reads == [prepared] and first[0] is second[0]
    prepared.touch()  # a rewritten file is read again
    prepared_data.load_prepared(config)
    assert reads == [prepared, prepared]


class _Runs:
    """Unpickling this calls ``function(*args)``: what a crafted file does to run code."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def test_a_crafted_file_is_refused_and_runs_nothing(root, tmp_path):
    prepared_data._memory.clear()
    marker = tmp_path / "ran"
    crafted = tmp_path / "crafted.pth"
    crafted.write_bytes(pickle.dumps({"format": prepared_data.FORMAT,
                                      "payload": _Runs(Path.touch, marker)}))
    with pytest.raises(InputError, match=r"not a file written by save_prepared.*"
                                         r"refusing to load global pathlib"):
        prepared_data.prepare_data(_config(root, prepared_data_path=str(crafted)))
    assert not marker.exists()
    # a tensor storage is read back with weights_only: code pickled inside one is refused too
    inner = pickle.dumps(_Runs(Path.touch, marker))
    storage = tmp_path / "storage.pth"
    storage.write_bytes(pickle.dumps(_Runs(torch.storage._load_from_bytes, inner)))
    with pytest.raises(InputError, match="not a file written by save_prepared"):
        prepared_data.prepare_data(_config(root, prepared_data_path=str(storage)))
    assert not marker.exists()


def test_recbole_never_unpickles_a_file_left_in_checkpoint_dir(root, tmp_path):
    # RecBole's create_dataset and data_preparation read these default names when they exist
    marker = tmp_path / "ran"
    saved = tmp_path / "saved"
    saved.mkdir()
    for name in ("tinyprep-SequentialDataset.pth", "tinyprep-for-SRGNN-dataloader.pth"):
        (saved / name).write_bytes(pickle.dumps(_Runs(Path.touch, marker)))
    config = _config(root, checkpoint_dir=str(saved))
    dataset, train, _, _ = prepared_data.prepare_data(config)
    assert not marker.exists() and train._dataset.inter_num > 0
    assert config["dataset_save_path"] is None and config["dataloaders_save_path"] is None


def test_the_allow_list_admits_recommenders_only(root, prepared):
    from recbole_srgnn.model.srgnn import SRGNN
    assert prepared_data.prepared_global("recbole_srgnn.model.srgnn", "SRGNN") is SRGNN
    assert prepared_data.prepared_global("recbole_srgnn.model.srgnn", "torch") is None
    assert prepared_data.prepared_global("recbole.model.abstract_recommender", "set_color") is None
    assert prepared_data.prepared_global("torch", "float32") is torch.float32
    assert prepared_data.prepared_global("torch", "load") is None
    assert prepared_data.prepared_global("builtins", "eval") is None
    assert prepared_data.prepared_global("os", "system") is None


def test_a_missing_file_builds_anew_and_a_foreign_one_is_a_clear_error(root, tmp_path, caplog):
    missing = tmp_path / "nope.pth"
    built = prepared_data.prepare_data(_config(root, prepared_data_path=str(missing)))
    fresh = prepared_data.prepare_data(_config(root))
    assert _same(_batches(built[3]), _batches(fresh[3]))
    assert any("no such file" in r.getMessage() for r in caplog.records)
    foreign = tmp_path / "foreign.pth"
    foreign.write_bytes(pickle.dumps({"something": 1}))
    with pytest.raises(InputError, match="not a file written by save_prepared"):
        prepared_data.prepare_data(_config(root, prepared_data_path=str(foreign)))


def test_a_failed_save_leaves_no_file(root, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(prepared_data.pickle, "dump", broken)
    target = tmp_path / "cache" / "x.pth"
    with pytest.raises(RuntimeError):
        prepared_data.save_prepared(_config(root), target)
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_pipeline_results_are_the_same_with_prepared_data(root, prepared):
    options = {**TINY, "data_path": str(root / "data"), "checkpoint_dir": str(root / "saved")}
    plain = runs.run("SRGNN", "tinyprep", config_dict=options, saved=False, quiet=True,
                     result_file=root / "plain.json")
    reused = runs.run("SRGNN", "tinyprep",
                      config_dict={**options, "prepared_data_path": str(prepared)},
                      saved=False, quiet=True, result_file=root / "reused.json")
    assert reused["test_result"] == plain["test_result"]
    assert reused["best_valid_result"] == plain["best_valid_result"]
    assert (reused["num_items"], reused["train_cases"], reused["test_cases"]) == \
        (plain["num_items"], plain["train_cases"], plain["test_cases"])
