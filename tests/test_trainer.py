"""SessionTrainer: LR decay (step, plateau), weights-only checkpoints, in-memory best model, resume, curve,
top-k collection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from recbole_srgnn.training.datasets import ready_config
from recbole_srgnn.training.models import resolve_model
from recbole_srgnn.errors import InputError
from recbole_srgnn.trainer import SessionTrainer
from recbole_srgnn.training_state import CHECKPOINT_FORMAT, load_checkpoint
from tiny_data import write_tiny_benchmark as _write_tiny


def write_tiny_benchmark(root, name="tiny"):
    return _write_tiny(root, name, seed=1)



@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer")
    write_tiny_benchmark(root / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # RecBole's Trainer writes log_tensorboard/ in the cwd
        yield root


@pytest.fixture(scope="module")
def data(workdir):
    config = ready_config("GRU4Rec", "tiny", config_dict=settings(workdir))
    dataset = create_dataset(config)
    return data_preparation(config, dataset)


def settings(root: Path, **extra) -> dict:
    return {"data_path": str(root / "data"), "checkpoint_dir": str(root / "saved"), "epochs": 2,
            "train_batch_size": 64, "eval_batch_size": 64, "embedding_size": 8, "hidden_size": 8,
            "stopping_step": 10, "show_progress": False, **extra}


def make_trainer(root: Path, data, **extra) -> SessionTrainer:
    config = ready_config("GRU4Rec", "tiny", config_dict=settings(root, **extra))
    init_seed(config["seed"], config["reproducibility"])
    model_class = resolve_model("GRU4Rec")
    trainer = SessionTrainer(config, model_class(config, data[0]._dataset), model_name="GRU4Rec")
    trainer.settings = {"epochs": config["epochs"]}
    return trainer


def test_lr_decay_steps_the_learning_rate(workdir, data):
    trainer = make_trainer(workdir, data, epochs=3, learning_rate=0.01, lr_decay_step=1,
                           lr_decay_rate=0.5)
    assert trainer.current_lr == pytest.approx(0.01)
    trainer.fit(data[0], data[1], verbose=False)
    assert [e["learning_rate"] for e in trainer.valid_curve] == pytest.approx([0.01, 0.005, 0.0025])
    assert trainer.current_lr == pytest.approx(0.00125)


def test_lr_decay_every_second_epoch(workdir, data):
    trainer = make_trainer(workdir, data, epochs=3, learning_rate=0.01, lr_decay_step=2,
                           lr_decay_rate=0.1)
    trainer.fit(data[0], None, verbose=False, saved=False)
    assert [e["learning_rate"] for e in trainer.valid_curve] == pytest.approx([0.01, 0.01, 0.001])


def test_lr_decay_off_by_default(workdir, data):
    trainer = make_trainer(workdir, data, learning_rate=0.01)
    assert trainer.lr_scheduler is None
    trainer.fit(data[0], data[1], verbose=False, saved=False)
    assert trainer.current_lr == pytest.approx(0.01)


class Scores:
    """Stands in for validation: hands out the given scores, one per epoch."""

    def __init__(self, scores: list[float]):
        self.scores = list(scores)

    def __call__(self, valid_data, show_progress=False):
        score = self.scores.pop(0)
        return score, {"mrr@10": score}


def fit_with_scores(monkeypatch, trainer: SessionTrainer, data, scores: list[float]) -> list[float]:
    """Fit with RecBole's validation replaced by ``scores``; the learning rate of every epoch."""
    from recbole.trainer import Trainer

    monkeypatch.setattr(Trainer, "_valid_epoch", Scores(scores))
    trainer.fit(data[0], data[1], verbose=False, saved=False)
    return [entry["learning_rate"] for entry in trainer.valid_curve]


def test_plateau_decays_only_when_validation_stops_improving(workdir, data, monkeypatch):
    trainer = make_trainer(workdir, data, epochs=6, learning_rate=0.01, lr_scheduler="plateau",
                           lr_decay_rate=0.1, lr_decay_patience=0)
    # improving, equal (no strict improvement: decay), better, worse (decay), worse (decay)
    rates = fit_with_scores(monkeypatch, trainer, data, [0.1, 0.2, 0.2, 0.3, 0.25, 0.25])
    assert rates == pytest.approx([0.01, 0.01, 0.01, 0.001, 0.001, 0.0001])
    assert trainer.current_lr == pytest.approx(0.00001)


def record_weights(monkeypatch, scores: list[float]):
    """Validation replaced by ``scores``; lists of the weights each validation saw and each
    training epoch started from (filled while ``fit`` runs)."""
    from recbole.trainer import Trainer

    weights: list[dict] = []
    starts: list[dict] = []
    valid = Scores(scores)
    original = SessionTrainer._train_epoch

    def record(self, valid_data, show_progress=False):  # weights of the epoch being validated
        weights.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return valid(valid_data)

    def train_epoch(self, *args, **kwargs):
        starts.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_valid_epoch", record)
    monkeypatch.setattr(SessionTrainer, "_train_epoch", train_epoch)
    return weights, starts, valid


def test_plateau_decay_restores_the_best_weights(workdir, data, monkeypatch):
    trainer = make_trainer(workdir, data, epochs=4, learning_rate=0.05, lr_scheduler="plateau",
                           lr_decay_rate=0.1, lr_decay_restore_best=True)
    weights, starts, valid = record_weights(monkeypatch, [0.3, 0.4, 0.2, 0.1])
    trainer.fit(data[0], data[1], verbose=False, saved=False)
    # epoch 3 (0.2) is worse: the rate decays and epoch 4 starts from epoch 2's weights (0.4)
    assert [e["learning_rate"] for e in trainer.valid_curve] == pytest.approx(
        [0.05, 0.05, 0.05, 0.005])
    assert all(torch.equal(starts[3][k], weights[1][k]) for k in weights[1])
    assert not all(torch.equal(weights[2][k], weights[1][k]) for k in weights[1])
    without = make_trainer(workdir, data, epochs=4, learning_rate=0.05, lr_scheduler="plateau",
                           lr_decay_rate=0.1, lr_decay_restore_best=False)
    weights.clear(), starts.clear()
    valid.scores = [0.3, 0.4, 0.2, 0.1]
    without.fit(data[0], data[1], verbose=False, saved=False)
    assert all(torch.equal(starts[3][k], weights[2][k]) for k in weights[2])  # went on as it was


def test_plateau_patience_waits_for_several_validations(workdir, data, monkeypatch):
    trainer = make_trainer(workdir, data, epochs=5, learning_rate=0.01, lr_scheduler="plateau",
                           lr_decay_rate=0.5, lr_decay_patience=1)
    rates = fit_with_scores(monkeypatch, trainer, data, [0.3, 0.2, 0.4, 0.3, 0.3])
    # one bad validation is tolerated; the second in a row decays
    assert rates == pytest.approx([0.01, 0.01, 0.01, 0.01, 0.01])
    assert trainer.current_lr == pytest.approx(0.005)


def test_step_schedule_ignores_validation(workdir, data, monkeypatch):
    trainer = make_trainer(workdir, data, epochs=4, learning_rate=0.01, lr_scheduler="step",
                           lr_decay_step=2, lr_decay_rate=0.1)
    rates = fit_with_scores(monkeypatch, trainer, data, [0.1, 0.2, 0.3, 0.4])
    assert rates == pytest.approx([0.01, 0.01, 0.001, 0.001])


def test_no_schedule(workdir, data):
    trainer = make_trainer(workdir, data, learning_rate=0.01, lr_scheduler="none",
                           lr_decay_step=1, lr_decay_rate=0.1)
    assert trainer.lr_scheduler is None


def test_plugin_models_default_to_plateau_and_the_paper_schedule_is_one_option_away(workdir):
    for model in ("SRGNN", "LastItem"):
        config = ready_config(model, "tiny", config_dict=settings(workdir))
        assert config["lr_scheduler"] == "plateau" and config["lr_decay_rate"] == 0.1
        assert config["lr_decay_patience"] == 0 and config["lr_decay_updates"] == 2500
        paper = ready_config(model, "tiny",
                             config_dict=settings(workdir, lr_scheduler="step"))
        assert (paper["lr_scheduler"], paper["lr_decay_step"], paper["lr_decay_rate"]) == \
            ("step", 3, 0.1)
    gru = ready_config("GRU4Rec", "tiny", config_dict=settings(workdir))
    assert gru["lr_scheduler"] == "step" and gru["lr_decay_step"] == 0  # RecBole's: constant


def test_plateau_also_decays_once_enough_updates_have_passed(workdir, data, monkeypatch):
    per_epoch = len(data[0])  # optimizer updates (batches) per epoch
    trainer = make_trainer(workdir, data, epochs=7, learning_rate=0.01, lr_scheduler="plateau",
                           lr_decay_rate=0.1, lr_decay_updates=2 * per_epoch)
    # always improving: only the update cap decays, after every second epoch; then a worse
    # validation decays at once (plateau) and restarts the count
    rates = fit_with_scores(monkeypatch, trainer, data, [0.1, 0.2, 0.3, 0.4, 0.35, 0.5, 0.6])
    assert rates == pytest.approx([0.01, 0.01, 0.001, 0.001, 0.0001, 0.00001, 0.00001])
    assert trainer.current_lr == pytest.approx(0.000001)
    assert trainer.checkpoint_state(6)["updates_since_decay"] == 0
    off = make_trainer(workdir, data, epochs=4, learning_rate=0.01, lr_scheduler="plateau",
                       lr_decay_rate=0.1, lr_decay_updates=0)
    assert fit_with_scores(monkeypatch, off, data, [0.1, 0.2, 0.3, 0.4]) == pytest.approx(
        [0.01] * 4)


def test_update_cap_decay_on_an_improving_epoch_keeps_its_weights(workdir, data, monkeypatch):
    """The cap can fire on an epoch that improved: the best weights are then the current ones
    (RecBole saves them only after this validation), so nothing is restored."""
    per_epoch = len(data[0])
    trainer = make_trainer(workdir, data, epochs=3, learning_rate=0.05, lr_scheduler="plateau",
                           lr_decay_rate=0.1, lr_decay_restore_best=True,
                           lr_decay_updates=2 * per_epoch)
    weights, starts, _ = record_weights(monkeypatch, [0.3, 0.4, 0.5])
    trainer.fit(data[0], data[1], verbose=False, saved=False)
    assert [e["learning_rate"] for e in trainer.valid_curve] == pytest.approx([0.05, 0.05, 0.005])
    # epoch 3 starts from epoch 2's weights (the best, just validated), not epoch 1's
    assert all(torch.equal(starts[2][k], weights[1][k]) for k in weights[1])
    assert not all(torch.equal(starts[2][k], weights[0][k]) for k in weights[0])


def test_plateau_state_is_checkpointed_and_restored(workdir, data, monkeypatch):
    first = make_trainer(workdir, data, epochs=3, learning_rate=0.01, lr_scheduler="plateau",
                         lr_decay_rate=0.1)
    fit_with_scores(monkeypatch, first, data, [0.3, 0.2, 0.1])
    state = first.checkpoint_state(2)
    assert state["lr_scheduler"]["num_bad_epochs"] == 0  # reset by the decay after epoch 3
    second = make_trainer(workdir, data, epochs=3, learning_rate=0.01, lr_scheduler="plateau",
                          lr_decay_rate=0.1)
    second.lr_scheduler.load_state_dict(state["lr_scheduler"])
    second.optimizer.load_state_dict(state["optimizer"])
    assert second.current_lr == pytest.approx(first.current_lr) == pytest.approx(0.0001)
    assert second.lr_scheduler.best == pytest.approx(0.3)


@pytest.mark.parametrize("extra", [{"lr_decay_step": -1}, {"lr_decay_step": 1.5},
                                   {"lr_decay_step": 1, "lr_decay_rate": 0},
                                   {"lr_scheduler": "cosine"}, {"lr_scheduler": "plateau",
                                                                 "lr_decay_patience": -1},
                                   {"lr_scheduler": "plateau", "lr_decay_updates": -5}])
def test_bad_lr_decay_settings(workdir, data, extra):
    with pytest.raises(InputError, match="lr_"):
        make_trainer(workdir, data, **extra)


def test_checkpoint_weights_only_and_best_model_reloaded(workdir, data):
    trainer = make_trainer(workdir, data, epochs=3, lr_decay_step=1, lr_decay_rate=0.5)
    epochs = []
    trainer.fit(data[0], data[1], verbose=False,
                epoch_callback=lambda e, result, score: epochs.append((e, result, score)))
    assert [e for e, _, _ in epochs] == [0, 1, 2]  # once per epoch
    assert all(result["mrr@10"] == score for _, result, score in epochs)
    path = Path(trainer.saved_model_file)
    assert trainer.checkpoint_written and path.is_file()
    state = torch.load(path, weights_only=True, map_location="cpu")
    assert state["format"] == CHECKPOINT_FORMAT
    assert {"state_dict", "optimizer", "epoch", "cur_step", "best_valid_score", "config",
            "model", "dataset", "lr_scheduler", "settings"} <= set(state)
    assert state["model"] == "GRU4Rec" and state["dataset"] == "tiny"
    assert state["epoch"] == trainer.best_epoch
    assert state["best_valid_score"] == trainer.best_valid_score
    assert state["config"]["MODEL_TYPE"] == "SEQUENTIAL" and state["config"]["device"] == "cpu"
    json.dumps(state["config"])
    assert state["settings"] == {"epochs": 3}

    # evaluate(load_best_model=True) restores exactly the saved weights
    for param in trainer.model.parameters():
        torch.nn.init.zeros_(param)
    result = trainer.evaluate(data[2], load_best_model=True)
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, state["state_dict"][key])
    assert result == trainer.evaluate(data[2], load_best_model=False)


def test_without_saving_the_best_weights_stay_in_memory(workdir, data):
    before = set((workdir / "saved").glob("*.pth")) if (workdir / "saved").exists() else set()
    trainer = make_trainer(workdir, data, epochs=2, learning_rate=0.05)
    trainer.fit(data[0], data[1], verbose=False, saved=False)
    assert not trainer.checkpoint_written
    assert set((workdir / "saved").glob("*.pth")) == before
    best = {k: v.clone() for k, v in trainer._best_in_memory["state_dict"].items()}
    for param in trainer.model.parameters():
        torch.nn.init.zeros_(param)
    trainer.evaluate(data[2], load_best_model=True)
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, best[key])


def test_evaluate_without_a_best_model_raises(workdir, data):
    trainer = make_trainer(workdir, data)
    with pytest.raises(RuntimeError, match="no best model"):
        trainer.evaluate(data[2], load_best_model=True)


def test_resume_checkpoint(workdir, data):
    first = make_trainer(workdir, data, epochs=2, lr_decay_step=1, lr_decay_rate=0.5)
    first.fit(data[0], data[1], verbose=False)
    state = load_checkpoint(first.saved_model_file)

    second = make_trainer(workdir, data, epochs=2, lr_decay_step=1, lr_decay_rate=0.5)
    second.resume_checkpoint(first.saved_model_file)
    assert second.start_epoch == state["epoch"] + 1
    assert second.best_valid_score == state["best_valid_score"]
    assert second.lr_scheduler.last_epoch == state["lr_scheduler"]["last_epoch"]
    for key, value in second.model.state_dict().items():
        assert torch.equal(value, state["state_dict"][key])


def test_load_checkpoint_rejects_other_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pth")
    pickled = tmp_path / "recbole_style.pth"
    torch.save({"config": Path("x"), "state_dict": {}}, pickled)  # arbitrary object: not weights-only
    with pytest.raises(InputError, match="weights-only"):
        load_checkpoint(pickled)
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(InputError, match="format"):
        load_checkpoint(other)


def test_strict_early_stopping_rule():
    from recbole_srgnn.training.recbole_compat import strict_early_stopping

    assert strict_early_stopping(0.5, 0.4, 2, 3) == (0.5, 0, False, True)
    # an equal score is no improvement (RecBole's own rule would reset patience here)
    assert strict_early_stopping(0.4, 0.4, 0, 3) == (0.4, 1, False, False)
    assert strict_early_stopping(0.4, 0.4, 3, 3) == (0.4, 4, True, False)
    assert strict_early_stopping(0.3, 0.4, 0, 3, bigger=False) == (0.3, 0, False, True)


def test_training_stops_when_the_validation_score_stops_moving(workdir, data):
    # learning rate 0: every epoch gives the same validation score, so after the first epoch no
    # epoch improves and training stops after stopping_step + 1 further epochs
    trainer = make_trainer(workdir, data, epochs=20, learning_rate=0.0, stopping_step=2)
    trainer.fit(data[0], data[1], verbose=False, saved=False)
    assert len(trainer.valid_curve) == 4
    assert trainer.best_epoch == 0
    import recbole.trainer.trainer as module
    from recbole.utils import early_stopping

    assert module.early_stopping is early_stopping  # RecBole's own rule is restored afterwards


def collected(collector, scores, positive_u, positive_i) -> dict:
    collector.eval_batch_collect(scores.clone(), None, positive_u, positive_i)
    struct = collector.get_data_struct()
    return {key: struct.get(key) for key in ("rec.topk", "rec.items", "rec.meanrank")
            if key in struct}


def test_topk_collector_collects_what_recboles_collector_does(workdir, data, monkeypatch):
    """Ties, rows without positives, several and repeated positives: the same tensors, and
    rec.items / rec.meanrank (other metrics) still come from RecBole's own code."""
    from recbole.evaluator import Collector

    from recbole_srgnn.training.recbole_compat import TopkCollector

    config = make_trainer(workdir, data, metrics=["Hit", "MRR", "NDCG", "ItemCoverage", "GAUC"],
                          topk=[1, 3, 7], valid_metric="MRR@3").config
    generator = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 4, (6, 40), generator=generator).float()  # many ties
    scores[:, 0] = -float("inf")
    positive_u = torch.tensor([0, 0, 0, 2, 3, 3, 5, 5, 5])  # rows 1 and 4 have none
    positive_i = torch.tensor([5, 9, 5, 1, 39, 2, 7, 8, 30])  # (0, 5) twice
    ours = collected(TopkCollector(config), scores, positive_u, positive_i)
    theirs = collected(Collector(config), scores, positive_u, positive_i)
    assert set(ours) == set(theirs) == {"rec.topk", "rec.items", "rec.meanrank"}
    for key in ours:
        assert ours[key].dtype == theirs[key].dtype and torch.equal(ours[key], theirs[key])
    assert ours["rec.topk"][:, -1].tolist() == [2, 0, 1, 2, 0, 3]

    topk_only = make_trainer(workdir, data).config  # Hit, MRR, NDCG: rec.topk only
    monkeypatch.setattr(torch, "zeros_like", lambda *a, **k: pytest.fail("dense matrix built"))
    assert collected(TopkCollector(topk_only), scores, positive_u, positive_i)["rec.topk"].shape \
        == (6, max(topk_only["topk"]) + 1)


def test_session_trainer_evaluates_as_recbole_does(workdir, data):
    from recbole.evaluator import Collector

    from recbole_srgnn.training.recbole_compat import TopkCollector

    trainer = make_trainer(workdir, data, epochs=1)
    assert isinstance(trainer.eval_collector, TopkCollector)
    trainer.fit(data[0], data[1], verbose=False, saved=False)
    ours = trainer.evaluate(data[2], load_best_model=True)
    trainer.eval_collector = Collector(trainer.config)
    assert trainer.evaluate(data[2], load_best_model=True) == ours
