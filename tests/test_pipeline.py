"""The training pipeline (``recbole_srgnn.training``): model names, config layers, the dataset
step, end-to-end runs and checkpoint evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from recbole_srgnn.errors import InputError
from recbole_srgnn.training import config as training_config
from recbole_srgnn.training import distributed, runs
from recbole_srgnn.training.checkpoints import evaluate_checkpoint
from recbole_srgnn.training.config import build_config, config_layers, merge_layers, parse_value
from recbole_srgnn.training.datasets import ready_config
from recbole_srgnn.training.models import resolve_model
from recbole_srgnn.training.results import default_result_path, results_table
from recbole_srgnn.training.startup import start
from tiny_data import HEADER, write_tiny_benchmark as _write_tiny


def write_tiny_benchmark(root, name="tiny"):
    return _write_tiny(root, name, seed=0, sessions=(80, 15, 15))



TINY = {"epochs": 2, "train_batch_size": 64, "eval_batch_size": 64, "embedding_size": 16,
        "hidden_size": 16, "stopping_step": 10, "show_progress": False}

METRIC_KEYS = {"hit@1", "hit@5", "hit@10", "hit@20", "mrr@10", "mrr@20", "ndcg@10"}
RESULT_KEYS = {
    "model", "dataset", "best_valid_score", "best_valid_result", "test_result", "valid_curve",
    "best_epoch", "epochs_trained", "seconds_per_epoch", "peak_rss_mb", "checkpoint", "config",
    "versions", "device", "num_items", "train_cases", "valid_cases", "test_cases", "result_file",
    "model_build_s", "test_eval_s",
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A scratch cwd (RecBole writes log/ and log_tensorboard/ there) with the tiny dataset."""
    root = tmp_path_factory.mktemp("pipeline")
    write_tiny_benchmark(root / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        yield root


def tiny_dict(root: Path, **extra) -> dict:
    return {**TINY, "data_path": str(root / "data"), "checkpoint_dir": str(root / "saved"), **extra}


@pytest.fixture(scope="module")
def gru_run(workdir):
    calls, anomaly = [], []

    def callback(*args):
        calls.append(args)
        anomaly.append(torch.is_anomaly_enabled())

    result_file = workdir / "gru.json"
    results = runs.run("GRU4Rec", "tiny", config_dict=tiny_dict(workdir),
                       epoch_callback=callback, result_file=result_file, quiet=True)
    assert anomaly == [False, False]  # RecBole's SINE import turns it on; recbole_compat undoes it
    return results, calls, result_file


# ---------------------------------------------------------------------------------------------
def test_resolve_model_plugin_builtin_and_aliases():
    from recbole.model.sequential_recommender.gru4rec import GRU4Rec
    from recbole.model.sequential_recommender.srgnn import SRGNN as RecBoleSRGNN

    from recbole_srgnn.model import MODELS

    assert resolve_model("SRGNN") is MODELS["SRGNN"]
    assert MODELS["SRGNN"] is not RecBoleSRGNN
    assert resolve_model("RecBoleSRGNN") is RecBoleSRGNN
    assert resolve_model("GRU4Rec") is GRU4Rec
    assert resolve_model("gru4rec") is GRU4Rec  # case-insensitive fallback


IMPORT_ORDERS = {
    # RecBole's models imported through the pipeline, then directly: the switch stays off
    "pipeline first": "from recbole_srgnn.training import models\n"
                      "for name in ('GRU4Rec', 'NARM', 'RecBoleSRGNN', 'SINE'):\n"
                      "    models.resolve_model(name)\n"
                      "import recbole.model.sequential_recommender.sine\n",
    # RecBole's models imported before the pipeline (SINE flipped the switch then): it is undone
    "recbole first": "import recbole.model.sequential_recommender\n"
                     "assert torch.is_anomaly_enabled()\n"
                     "from recbole_srgnn.training import runs\n",
}


@pytest.mark.parametrize("order", sorted(IMPORT_ORDERS))
def test_importing_recbole_models_leaves_anomaly_detection_off(order):
    import subprocess
    import sys

    code = "import torch\n" + IMPORT_ORDERS[order] + "print(torch.is_anomaly_enabled())\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False"]


def test_a_run_with_anomaly_detection_on_warns_that_it_is_slower(workdir, caplog):
    config = build_config("GRU4Rec", "tiny", config_dict=tiny_dict(workdir))
    torch.autograd.set_detect_anomaly(True)  # a user debugging, after importing the pipeline
    try:
        with caplog.at_level("WARNING", logger="recbole_srgnn.training.startup"):
            start(config, quiet=True)
    finally:
        torch.autograd.set_detect_anomaly(False)
    assert "anomaly detection is on" in caplog.text and "slower" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="recbole_srgnn.training.startup"):
        start(config, quiet=True)
    assert "anomaly" not in caplog.text


def test_resolve_model_unknown_lists_choices():
    with pytest.raises(InputError) as info:
        resolve_model("NoSuchModel")
    message = str(info.value)
    assert "NoSuchModel" in message
    for choice in ("SRGNN", "RecBoleSRGNN", "GRU4Rec", "NARM"):
        assert choice in message


def test_plugin_name_never_falls_back_to_recbole_builtin(monkeypatch):
    from recbole_srgnn import model as model_package

    monkeypatch.setattr(model_package, "MODELS", {})
    with pytest.raises(InputError, match="RecBoleSRGNN"):
        resolve_model("SRGNN")


def test_parse_value_like_recbole_command_line():
    assert parse_value("3") == 3
    assert parse_value("1e-3") == pytest.approx(0.001)
    assert parse_value("[10,20]") == [10, 20]
    assert parse_value("{'LS': 'valid_and_test'}") == {"LS": "valid_and_test"}
    assert parse_value("true") is True and parse_value("False") is False
    assert parse_value("None") is None
    assert parse_value("saved/x") == "saved/x"
    assert parse_value("adam") == "adam"


# ---------------------------------------------------------------------------------------------
def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def layered(tmp_path, monkeypatch):
    """A properties dir whose layers each set one more of the keys k1..k5 (and override below)."""
    props = tmp_path / "props"
    real_overall = (training_config.PROPERTIES_DIR / "overall.yaml").read_text()
    _write(props / "overall.yaml", real_overall + "\nk1: overall\nk2: overall\nk3: overall\n"
           "k4: overall\nk5: overall\n")
    _write(props / "model" / "GRU4Rec.yaml", "k2: model\nk3: model\nk4: model\nk5: model\n")
    _write(props / "dataset" / "tiny.yaml", "k3: dataset\nk4: dataset\nk5: dataset\n")
    user_file = _write(tmp_path / "user.yaml", "k4: file\nk5: file\n")
    monkeypatch.setattr(training_config, "PROPERTIES_DIR", props)
    write_tiny_benchmark(tmp_path / "data")
    common = {"data_path": str(tmp_path / "data"), "k5": "dict"}
    return props, user_file, common


def test_config_layers_order(layered):
    props, user_file, common = layered
    layers = config_layers("GRU4Rec", "tiny", [str(user_file)], common)
    assert [Path(name).name for name, _ in layers] == [
        "overall.yaml", "GRU4Rec.yaml", "tiny.yaml", "user.yaml", "config_dict"]
    merged = merge_layers(layers)
    assert [merged[f"k{i}"] for i in range(1, 6)] == ["overall", "model", "dataset", "file", "dict"]


def test_build_config_layer_winners_reach_recbole_config(layered, monkeypatch):
    props, user_file, common = layered
    # RecBole's Config reads sys.argv itself; ours must not (no double parsing, no pytest args)
    monkeypatch.setattr("sys.argv", ["prog", "--k5=argv", "--learning_rate=0.9"])
    config = build_config("GRU4Rec", "tiny", [str(user_file)], common)
    assert [config[f"k{i}"] for i in range(1, 6)] == ["overall", "model", "dataset", "file", "dict"]
    assert config["train_batch_size"] == 512  # our overall.yaml beats RecBole's default 2048
    assert config["learning_rate"] == 0.001  # sys.argv's --learning_rate=0.9 is ignored
    assert config["hidden_size"] == 128  # RecBole's own GRU4Rec default still underneath
    assert config["model"] == "GRU4Rec" and config["dataset"] == "tiny"
    assert Path(config["data_path"]) == (Path(common["data_path"]) / "tiny").resolve()


def test_build_config_with_real_properties(workdir):
    config = build_config(
        "GRU4Rec", "tiny", config_dict={"data_path": str(workdir / "data"), "topk": "[5,10]"})
    assert config["topk"] == [5, 10]  # string values parsed like RecBole's command line
    assert config["valid_metric"] == "MRR@10"
    assert config["benchmark_filename"] == ["train", "valid", "test"]
    assert config["train_neg_sample_args"]["distribution"] == "none"
    assert config["eval_args"]["mode"] == {"valid": "full", "test": "full"}
    assert config["lr_decay_step"] == 0 and config["flush_denormal"] is True


def test_builtin_srgnn_uses_its_own_model_layer(workdir):
    config = build_config("RecBoleSRGNN", "tiny",
                          config_dict={"data_path": str(workdir / "data")})
    # RecBole's SRGNN.yaml (step 1, embedding 64) applies; the plugin's SRGNN.yaml does not.
    assert config["embedding_size"] == 64
    assert "readout" not in config


@pytest.mark.parametrize("content, match", [
    (None, "does not exist"),
    ("a: [1, 2\n", "not valid YAML"),
    ("- just\n- a list\n", "mapping"),
])
def test_bad_config_file_is_an_input_error(tmp_path, content, match):
    path = tmp_path / "bad.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=match):
        build_config("GRU4Rec", "tiny", [str(path)], {"data_path": str(tmp_path)})


def test_missing_unregistered_dataset_is_an_input_error_not_a_download(tmp_path):
    with pytest.raises(InputError, match="not found"):
        ready_config("GRU4Rec", "no-such-data", None, {"data_path": str(tmp_path)})
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "half.train.inter").write_text(HEADER + "\n")
    with pytest.raises(InputError, match="half.valid.inter"):
        ready_config("GRU4Rec", "half", None, {"data_path": str(tmp_path)})


def test_registered_dataset_is_prepared_with_the_merged_layers(tmp_path, monkeypatch):
    from recbole_srgnn.data import registry

    seen = {}

    def fake_prepare(name, config):
        seen.update(name=name, config=dict(config))
        return write_tiny_benchmark(Path(config["data_path"]), name)

    monkeypatch.setattr(registry, "prepare_dataset", fake_prepare)
    config = ready_config("GRU4Rec", "madeup", None,
                          {"data_path": str(tmp_path / "d"), "epochs": "7"})
    assert seen["name"] == "madeup"
    assert seen["config"]["epochs"] == 7 and seen["config"]["valid_metric"] == "MRR@10"
    assert Path(config["data_path"]) == (tmp_path / "d" / "madeup").resolve()


def test_build_config_builds_and_checks_no_dataset(tmp_path):
    """Making the dataset ready is its own step (``ready_config``): build_config reads YAML only."""
    config = build_config("GRU4Rec", "no-such-data", None, {"data_path": str(tmp_path)})
    assert config["dataset"] == "no-such-data"
    config = build_config("GRU4Rec", "retailrocket-synthetic", None,
                          {"data_path": str(tmp_path / "d"), "synthetic_n_events": 1000})
    assert config["dataset"] == "retailrocket-synthetic"
    assert not (tmp_path / "d").exists()  # nothing generated or converted


# ---------------------------------------------------------------------------------------------
def _check_metrics(result: dict) -> None:
    assert METRIC_KEYS <= set(result)
    for key, value in result.items():
        assert type(value) is float and 0.0 <= value <= 1.0, (key, value)


def test_run_end_to_end_results_json(gru_run):
    results, calls, result_file = gru_run
    on_disk = json.loads(result_file.read_text())
    assert on_disk == results
    assert RESULT_KEYS <= set(results)
    assert results["model"] == "GRU4Rec" and results["dataset"] == "tiny"
    _check_metrics(results["test_result"])
    _check_metrics(results["best_valid_result"])
    assert results["epochs_trained"] == 2 and len(results["valid_curve"]) == 2
    for epoch, entry in enumerate(results["valid_curve"]):
        assert entry["epoch"] == epoch and entry["seconds"] > 0 and entry["train_loss"] > 0
        assert entry["anomaly_detection"] is False  # recorded per epoch: its time is not inflated
        assert 0.0 <= entry["mrr@10"] <= 1.0 and entry["valid_score"] == entry["mrr@10"]
    # strict improvement (recbole_compat.strict_early_stopping): of tied best epochs, the first is kept
    best = max(results["valid_curve"], key=lambda e: (e["valid_score"], -e["epoch"]))
    assert results["best_epoch"] == best["epoch"]
    assert results["best_valid_score"] == results["best_valid_result"]["mrr@10"]
    assert results["seconds_per_epoch"] == pytest.approx(
        sum(e["seconds"] for e in results["valid_curve"]) / 2)
    assert results["num_items"] == 30
    assert (results["train_cases"], results["valid_cases"], results["test_cases"]) == tuple(
        sum(1 for _ in open(f"data/tiny/tiny.{s}.inter")) - 1 for s in ("train", "valid", "test"))
    assert results["peak_rss_mb"] > 0 and results["device"] == "cpu"
    assert 0 < results["model_build_s"] < results["seconds_total"]
    assert 0 < results["test_eval_s"] < results["seconds_total"]
    assert set(results["versions"]) == {"python", "torch", "recbole", "torch_geometric", "numpy",
                                        "pandas", "recbole_srgnn"}
    assert results["config"]["MODEL_TYPE"] == "SEQUENTIAL" and results["config"]["epochs"] == 2
    assert Path(results["checkpoint"]).is_file()


@pytest.mark.parametrize("scores, stopping_step, first_best, trained", [
    ([0.1, 0.3, 0.2, 0.3, 0.3], 10, 1, 5),  # later ties of the best never replace it
    ([0.25, 0.25, 0.25, 0.25], 1, 0, 3),  # a tie is no improvement: patience runs out too
])
def test_tied_validation_scores_keep_the_first_best_epoch(workdir, monkeypatch, scores,
                                                          stopping_step, first_best, trained):
    from recbole.trainer import Trainer

    pending = list(scores)

    def fixed_scores(self, valid_data, show_progress=False):  # RecBole's validation, replaced
        score = pending.pop(0)
        return score, {"mrr@10": score}

    monkeypatch.setattr(Trainer, "_valid_epoch", fixed_scores)
    saved_to = workdir / f"ties-{first_best}"
    results = runs.run("GRU4Rec", "tiny",
                       config_dict=tiny_dict(workdir, epochs=len(scores),
                                             stopping_step=stopping_step,
                                             checkpoint_dir=str(saved_to)),
                       result_file=workdir / f"ties-{first_best}.json", quiet=True)
    assert [e["valid_score"] for e in results["valid_curve"]] == scores[:trained]
    assert results["epochs_trained"] == trained
    assert results["best_epoch"] == first_best == scores.index(max(scores))
    assert results["best_valid_score"] == scores[first_best]
    assert results["best_valid_result"] == {"mrr@10": scores[first_best]}
    # the tested model is the first tied epoch's: its checkpoint was never overwritten by a tie
    state = torch.load(results["checkpoint"], weights_only=True, map_location="cpu")
    assert state["epoch"] == first_best and state["best_valid_score"] == scores[first_best]


def test_epoch_callback_once_per_epoch(gru_run):
    results, calls, _ = gru_run
    assert [c[0] for c in calls] == [0, 1]
    for (epoch, valid_result, valid_score), entry in zip(calls, results["valid_curve"]):
        assert valid_result["mrr@10"] == valid_score == entry["valid_score"]


def test_evaluate_checkpoint_reproduces_test_metrics(gru_run, workdir):
    results, _, _ = gru_run
    out = workdir / "eval.json"
    evaluated = evaluate_checkpoint(results["checkpoint"], result_file=out, quiet=True)
    assert evaluated["test_result"] == results["test_result"]
    assert evaluated["checkpoint_epoch"] == results["best_epoch"]
    assert json.loads(out.read_text())["test_result"] == results["test_result"]


def test_checkpoint_is_weights_only_loadable(gru_run):
    results, _, _ = gru_run
    state = torch.load(results["checkpoint"], weights_only=True, map_location="cpu")
    assert state["format"] == "recbole_srgnn-1"
    assert state["model"] == "GRU4Rec" and state["dataset"] == "tiny"
    json.dumps(state["config"])  # plain, JSON-safe
    assert state["config"]["MODEL_TYPE"] == "SEQUENTIAL"


def test_run_plugin_srgnn(workdir):
    from recbole_srgnn.model import MODELS

    srgnn = MODELS["SRGNN"]  # the plugin model must exist: a KeyError here is a failure
    assert resolve_model("SRGNN") is srgnn
    results = runs.run("SRGNN", "tiny", config_dict=tiny_dict(workdir, epochs=1),
                       result_file=workdir / "srgnn.json", saved=False, quiet=True)
    assert RESULT_KEYS <= set(results)
    assert results["model"] == "SRGNN" and results["config"]["model"] == srgnn.__name__
    assert results["checkpoint"] is None and results["epochs_trained"] == 1
    _check_metrics(results["test_result"])


def test_run_without_test_evaluation(workdir, monkeypatch):
    from recbole_srgnn.trainer import SessionTrainer

    evaluated = []
    original = SessionTrainer.evaluate

    def counting_evaluate(self, eval_data, *args, **kwargs):
        evaluated.append(eval_data)
        return original(self, eval_data, *args, **kwargs)

    monkeypatch.setattr(SessionTrainer, "evaluate", counting_evaluate)
    results = runs.run("SRGNN", "tiny", config_dict=tiny_dict(workdir, epochs=2),
                       result_file=workdir / "no-test.json", saved=False, quiet=True, test=False)
    assert results["test_result"] is None and results["test_eval_s"] is None
    _check_metrics(results["best_valid_result"])
    # validation ran each epoch (through _valid_epoch -> evaluate), the test split never did
    assert len(evaluated) == 2


def test_build_and_test_times_are_measured_around_what_they_name(workdir, monkeypatch):
    """model_build_s covers the model's construction (a kNN model builds its index there) and
    nothing after it; test_eval_s the test evaluation, not the validations."""
    import time

    from recbole_srgnn.model.knn_models import KnnRecommender, SKNN
    from recbole_srgnn.trainer import SessionTrainer

    build_delay, test_delay = 0.2, 1.0
    original_init, original_evaluate = KnnRecommender.__init__, SessionTrainer.evaluate

    def slow_init(self, config, dataset):
        time.sleep(build_delay)
        original_init(self, config, dataset)

    def slow_test(self, eval_data, load_best_model=True, *args, **kwargs):
        if load_best_model:  # the test; each validation evaluates with load_best_model=False
            time.sleep(test_delay)
        return original_evaluate(self, eval_data, load_best_model, *args, **kwargs)

    monkeypatch.setattr(SKNN, "__init__", slow_init)
    monkeypatch.setattr(SessionTrainer, "evaluate", slow_test)
    results = runs.run("SKNN", "tiny", config_dict=tiny_dict(workdir, epochs=1),
                       result_file=workdir / "sknn-times.json", saved=False, quiet=True)
    assert build_delay <= results["model_build_s"] < test_delay
    assert test_delay <= results["test_eval_s"] < results["seconds_total"]
    assert json.loads((workdir / "sknn-times.json").read_text())["model_build_s"] == (
        results["model_build_s"])


def test_results_table_labels_hit_at_1():
    table = results_table({"hit@1": 0.25, "mrr@10": 0.5}, {"hit@1": 0.125, "mrr@10": 0.5})
    lines = table.splitlines()
    assert "valid" in lines[0] and "test" in lines[0]
    hit = next(line for line in lines if line.startswith("Hit@1"))
    assert "next-item accuracy" in hit and "0.2500" in hit and "0.1250" in hit
    assert any(line.startswith("MRR@10") for line in lines)


def test_run_distributed_gives_each_rank_the_ddp_keys(workdir, monkeypatch):
    """The spawn plumbing (the NCCL run itself needs GPUs): one ``run`` per rank, rank 0's result."""
    import torch.multiprocessing as mp

    calls = []

    def fake_run(model, dataset, config_files, config_dict, **kwargs):
        calls.append((model, dataset, config_files, dict(config_dict), kwargs))
        return {"rank": config_dict["local_rank"]}

    def fake_spawn(fn, args, nprocs, join):
        assert join
        for rank in range(nprocs):
            fn(rank, *args)

    monkeypatch.setattr(runs, "run", fake_run)
    monkeypatch.setattr(mp, "spawn", fake_spawn)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    base = {"data_path": str(workdir / "data"), "gpu_id": "0,1", "epochs": "1"}
    out = distributed.run_distributed("GRU4Rec", "tiny", None, base, nproc=2, port=1234,
                                      result_file="r.json", quiet=True)
    assert out == {"rank": 0}
    assert [c[3]["local_rank"] for c in calls] == [0, 1]
    for model, dataset, files, config_dict, kwargs in calls:
        assert (model, dataset, files) == ("GRU4Rec", "tiny", None)
        assert {k: config_dict[k] for k in ("world_size", "nproc", "offset", "ip", "port")} == {
            "world_size": 2, "nproc": 2, "offset": 0, "ip": "localhost", "port": "1234"}
        assert config_dict["epochs"] == "1" and config_dict["gpu_id"] == "0,1"
        assert kwargs == {"result_file": "r.json", "saved": True, "show_progress": True,
                          "quiet": True}
    with pytest.raises(InputError, match="gpu_id"):
        distributed.run_distributed("GRU4Rec", "tiny", None, {**base, "gpu_id": "0"}, nproc=2)
    with pytest.raises(InputError, match="world_size"):
        distributed.run_distributed("GRU4Rec", "tiny", None, base, nproc=2, world_size=1)


def test_default_result_path_keeps_dotted_names_and_never_overwrites(tmp_path):
    config = {"checkpoint_dir": str(tmp_path)}
    first = default_result_path(config, "SRGNN", "data.v2")
    assert first.parent == tmp_path and first.name.startswith("SRGNN-data.v2-")
    assert first.suffix == ".json"
    first.write_text("{}")
    second = default_result_path(config, "SRGNN", "data.v2")
    assert second != first and not second.exists()


def test_train_on_valid_trains_on_both_splits_for_exactly_epochs(workdir, monkeypatch):
    from recbole_srgnn.trainer import SessionTrainer

    real = SessionTrainer._valid_epoch

    def worse_each_time(self, valid_data, show_progress=False):  # every validation < the last
        _, result = real(self, valid_data, show_progress=show_progress)
        return -float(len(self.valid_curve)), result

    monkeypatch.setattr(SessionTrainer, "_valid_epoch", worse_each_time)
    settings = dict(epochs=3, stopping_step=0)
    plain = runs.run("SRGNN", "tiny", config_dict=tiny_dict(workdir, **settings),
                     result_file=workdir / "plain.json", saved=False, quiet=True)
    assert plain["epochs_trained"] == 2 and plain["best_epoch"] == 0  # early stopping works
    refit = runs.run("SRGNN", "tiny",
                     config_dict=tiny_dict(workdir, **settings, train_on_valid=True),
                     result_file=workdir / "refit.json", saved=False, quiet=True)
    assert refit["train_cases"] == plain["train_cases"] + plain["valid_cases"]
    assert (refit["valid_cases"], refit["test_cases"]) == (plain["valid_cases"], plain["test_cases"])
    assert refit["epochs_trained"] == 3 and refit["best_epoch"] == 2  # no stop; the last is kept
    _check_metrics(refit["test_result"])
    assert refit["test_result"] != plain["test_result"]


def test_train_on_valid_must_be_a_boolean(workdir):
    with pytest.raises(InputError, match="train_on_valid must be true or false"):
        runs.run("SRGNN", "tiny", config_dict=tiny_dict(workdir, train_on_valid="sometimes"),
                 result_file=workdir / "bad.json", saved=False, quiet=True)
