"""Resume states: an interrupted run continues from its last epoch and ends as an uninterrupted one."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from recbole_srgnn.training import runs
from recbole_srgnn.errors import InputError
from tiny_data import write_tiny_benchmark

TINY = {"epochs": 3, "train_batch_size": 32, "eval_batch_size": 64, "embedding_size": 16,
        "hidden_size": 16, "stopping_step": 10, "show_progress": False,
        "threads": 1}  # a fixed count: bit-for-bit equality needs the same thread count
SETTINGS = {
    "GRU4Rec": {"dropout_prob": 0.3},  # dropout draws from torch's global generator
    "SRGNN": {"lr_scheduler": "step", "lr_decay_step": 1, "lr_decay_rate": 0.5},  # the scheduler's state matters
    # plateau: so large a rate that the second validation falls back and the rate is halved in
    # the resumed part: only a restored scheduler (best score of epoch 1) decides that as before
    "SRGNN-plateau": {"lr_scheduler": "plateau", "learning_rate": 10.0, "lr_decay_rate": 0.5},
}


def model_of(key: str) -> str:
    return key.split("-")[0]


class Interrupted(Exception):
    """Stands for a killed process: raised after an epoch's resume state is written."""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    write_tiny_benchmark(root / "data", "tiny", seed=3, sessions=(90, 15, 15))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        yield root


def config(root, model, **extra) -> dict:
    return {**TINY, **SETTINGS[model], "data_path": str(root / "data"),
            "checkpoint_dir": str(root / "saved"), **extra}


def interrupt_after(epoch: int):
    def callback(done: int, valid_result, valid_score) -> None:
        if done == epoch:
            raise Interrupted
    return callback


def comparable(results: dict) -> dict:
    """What must not depend on an interruption: losses, learning rates, metrics, best epoch."""
    curve = [{k: v for k, v in entry.items() if "seconds" not in k}
             for entry in results["valid_curve"]]
    return {"curve": curve, "best_epoch": results["best_epoch"],
            "best_valid_result": results["best_valid_result"],
            "test_result": results["test_result"]}


def run(root, model, name, **kwargs):
    extra = kwargs.pop("extra", {})
    return runs.run(model_of(model), "tiny", config_dict=config(root, model, **extra),
                    result_file=root / f"{name}.json", quiet=True, **kwargs)


@pytest.mark.parametrize("model", ["GRU4Rec", "SRGNN", "SRGNN-plateau"])
@pytest.mark.parametrize("saved", [False, True])
def test_interrupted_run_resumes_to_the_uninterrupted_result(workdir, model, saved):
    torch.set_num_threads(1)
    straight = run(workdir, model, f"straight-{model}-{saved}", saved=saved)
    assert straight["training_parts"] == 1
    rates = [entry["learning_rate"] for entry in straight["valid_curve"]]
    if model != "GRU4Rec":
        assert len(set(rates)) > 1  # the schedule decayed: its state had to be restored

    state = workdir / f"{model}-{saved}.resume.pth"
    with pytest.raises(Interrupted):
        run(workdir, model, f"cut-{model}-{saved}", saved=saved, resume_file=state,
            epoch_callback=interrupt_after(0))
    assert state.is_file()  # written before the interruption, after epoch 1

    epochs_seen = []
    resumed = run(workdir, model, f"resumed-{model}-{saved}", saved=saved, resume_file=state,
                  epoch_callback=lambda epoch, *rest: epochs_seen.append(epoch))
    assert epochs_seen == [1, 2]  # epoch 0 was not trained again
    assert resumed["training_parts"] == 2 and resumed["epochs_trained"] == 3
    assert comparable(resumed) == comparable(straight)
    assert resumed["seconds_total"] > 0
    assert not state.exists()  # complete: nothing left to resume


class CutMidEpoch(Exception):
    """Stands for a process killed in the middle of an epoch (no resume state of that epoch)."""


def recording_trainers(monkeypatch, cut: tuple[int, int] | None = None) -> list[dict]:
    """Replace ``runs.run``'s SessionTrainer by a subclass that records, when ``fit`` returns, the
    weights, the optimizer and the LR scheduler (copies). ``cut=(epoch, k)``: the training step
    raises CutMidEpoch after ``k`` batches (optimizer steps) of epoch index ``epoch``; the record
    then holds the weights at the cut and the epoch's number of batches."""
    from recbole_srgnn.trainer import SessionTrainer

    records: list[dict] = []

    def snapshot(trainer) -> dict:
        return {"weights": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
                "optimizer": copy.deepcopy(trainer.optimizer.state_dict()),
                "scheduler": (None if trainer.lr_scheduler is None
                              else copy.deepcopy(trainer.lr_scheduler.state_dict()))}

    class Recording(SessionTrainer):
        def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
            if cut is not None and epoch_idx == cut[0]:
                done = [0]

                def step(interaction):  # RecBole's loop: zero_grad, this, backward, step
                    if done[0] == cut[1]:
                        records.append({**snapshot(self), "batches": len(train_data)})
                        raise CutMidEpoch
                    done[0] += 1
                    return self.model.calculate_loss(interaction)

                loss_func = step
            return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func,
                                        show_progress=show_progress)

        def fit(self, *args, **kwargs):
            result = super().fit(*args, **kwargs)
            records.append(snapshot(self))
            return result

    monkeypatch.setattr(runs, "SessionTrainer", Recording)
    return records


def assert_same_state(left, right, where="") -> None:
    """Equal nested dicts/lists of tensors (torch.equal: bit for bit) and plain values."""
    if isinstance(left, torch.Tensor):
        assert isinstance(right, torch.Tensor) and left.dtype == right.dtype, where
        assert torch.equal(left, right), where
    elif isinstance(left, dict):
        assert isinstance(right, dict) and set(left) == set(right), (where, set(left), set(right))
        for key in left:
            assert_same_state(left[key], right[key], f"{where}/{key}")
    elif isinstance(left, (list, tuple)):
        assert isinstance(right, (list, tuple)) and len(left) == len(right), where
        for index, (a, b) in enumerate(zip(left, right)):
            assert_same_state(a, b, f"{where}[{index}]")
    else:
        assert left == right, (where, left, right)


@pytest.mark.parametrize("model", ["GRU4Rec", "SRGNN", "SRGNN-plateau"])
def test_run_cut_mid_epoch_resumes_to_the_same_weights_and_optimizer(workdir, model,
                                                                     monkeypatch):
    from recbole_srgnn.training_state import read_resume_state, resume_progress

    torch.set_num_threads(1)
    cut_epoch, cut_batches = 1, 3  # 3 optimizer steps into the second epoch
    with monkeypatch.context() as mp:
        straight_records = recording_trainers(mp)
        straight = run(workdir, model, f"mid-straight-{model}", saved=True)
    (final_straight,) = straight_records

    state = workdir / f"mid-{model}.resume.pth"
    with monkeypatch.context() as mp:
        cut_records = recording_trainers(mp, cut=(cut_epoch, cut_batches))
        with pytest.raises(CutMidEpoch):
            run(workdir, model, f"mid-cut-{model}", saved=True, resume_file=state)
    (at_cut,) = cut_records
    assert at_cut["batches"] > cut_batches + 1  # the cut is inside the epoch, not at its end
    assert resume_progress(state)["epochs"] == 1  # only epoch 1's state exists
    saved = read_resume_state(state)
    # the half epoch moved the weights and Adam's moments past the state that resumes
    assert any(not torch.equal(saved["state_dict"][k], v) for k, v in at_cut["weights"].items())
    for index, moments in at_cut["optimizer"]["state"].items():
        assert int(moments["step"]) == int(saved["optimizer"]["state"][index]["step"]) + cut_batches

    epochs_seen = []
    with monkeypatch.context() as mp:
        resumed_records = recording_trainers(mp)
        resumed = run(workdir, model, f"mid-resumed-{model}", saved=True, resume_file=state,
                      epoch_callback=lambda epoch, *rest: epochs_seen.append(epoch))
    (final_resumed,) = resumed_records
    assert epochs_seen == [1, 2] and resumed["training_parts"] == 2
    assert not state.exists()

    # the weights, Adam's state (exp_avg, exp_avg_sq, step per parameter; lr in param_groups)
    # and the scheduler at the end of training: bit for bit those of the uninterrupted run
    adam = final_straight["optimizer"]["state"]
    assert adam and all({"step", "exp_avg", "exp_avg_sq"} <= set(s) for s in adam.values())
    assert_same_state(final_resumed["weights"], final_straight["weights"], "weights")
    assert_same_state(final_resumed["optimizer"], final_straight["optimizer"], "optimizer")
    assert_same_state(final_resumed["scheduler"], final_straight["scheduler"], "scheduler")
    # the tested model: the best epoch's checkpoint (weights and optimizer at that epoch)
    checkpoints = [torch.load(r["checkpoint"], weights_only=True, map_location="cpu")
                   for r in (straight, resumed)]
    assert checkpoints[0]["epoch"] == checkpoints[1]["epoch"] == straight["best_epoch"]
    for key in ("state_dict", "optimizer", "lr_scheduler"):
        assert_same_state(checkpoints[1][key], checkpoints[0][key], f"checkpoint {key}")
    assert comparable(resumed) == comparable(straight)


def test_resume_after_the_last_epoch_only_tests(workdir, monkeypatch):
    from recbole_srgnn.trainer import SessionTrainer

    straight = run(workdir, "GRU4Rec", "last-straight", saved=False)
    state = workdir / "last.resume.pth"
    with pytest.raises(Interrupted):  # killed after the last epoch, before the test
        run(workdir, "GRU4Rec", "last-cut", saved=False, resume_file=state,
            epoch_callback=interrupt_after(TINY["epochs"] - 1))

    def no_training(*args, **kwargs):
        raise AssertionError("training ran again")

    monkeypatch.setattr(SessionTrainer, "fit", no_training)
    resumed = run(workdir, "GRU4Rec", "last-resumed", saved=False, resume_file=state)
    assert comparable(resumed) == comparable(straight)


def test_resume_progress_says_how_far_a_cut_run_got(workdir):
    from recbole_srgnn.training_state import resume_progress

    straight = run(workdir, "GRU4Rec", "progress-straight", saved=False)
    scores = [entry["valid_score"] for entry in straight["valid_curve"]]
    state = workdir / "progress.resume.pth"
    assert resume_progress(state) is None  # nothing started
    with pytest.raises(Interrupted):
        run(workdir, "GRU4Rec", "progress-cut", saved=False, resume_file=state,
            epoch_callback=interrupt_after(1))
    progress = resume_progress(state)
    best = max(range(2), key=lambda i: (scores[i], -i))  # strict improvement: the first best
    assert {key: progress[key] for key in ("epochs", "last_score", "best_score", "best_epoch",
                                           "finished", "parts")} == {
        "epochs": 2, "last_score": scores[1], "best_score": scores[best], "best_epoch": best + 1,
        "finished": False, "parts": 1}
    assert progress["seconds"] > 0
    with pytest.raises(Interrupted):  # the resumed part is cut after the last epoch
        run(workdir, "GRU4Rec", "progress-cut", saved=False, resume_file=state,
            epoch_callback=interrupt_after(TINY["epochs"] - 1))
    progress = resume_progress(state)
    assert progress["epochs"] == TINY["epochs"] and progress["finished"] and progress["parts"] == 2
    garbage = workdir / "progress-garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable resume state"):
        resume_progress(garbage)


def test_resume_state_of_other_settings_is_refused(workdir):
    state = workdir / "other.resume.pth"
    with pytest.raises(Interrupted):
        run(workdir, "SRGNN", "other-cut", saved=False, resume_file=state,
            epoch_callback=interrupt_after(0))
    before = state.read_bytes()
    with pytest.raises(InputError) as info:
        run(workdir, "SRGNN", "other", saved=False, resume_file=state,
            extra={"learning_rate": 0.01})
    message = str(info.value)
    assert "other settings" in message and "\n" not in message
    assert state.read_bytes() == before  # left alone


def test_a_file_that_is_no_resume_state_is_refused(workdir):
    state = workdir / "garbage.resume.pth"
    state.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable resume state"):
        run(workdir, "SRGNN", "garbage", saved=False, resume_file=state)
    checkpoint = workdir / "checkpoint.resume.pth"
    torch.save({"format": "recbole_srgnn-1"}, checkpoint)
    with pytest.raises(InputError, match="not a recbole_srgnn resume state"):
        run(workdir, "SRGNN", "wrong-format", saved=False, resume_file=checkpoint)


def test_state_from_before_an_added_setting_resumes_a_run_that_keeps_its_default(workdir):
    """States written before ``train_on_valid`` existed lack it; they were trained with False."""
    state = workdir / "older.resume.pth"
    with pytest.raises(Interrupted):
        run(workdir, "SRGNN", "older-cut", saved=False, resume_file=state,
            epoch_callback=interrupt_after(0))
    saved = torch.load(state, weights_only=True)
    assert saved["settings"]["train_on_valid"] is False
    del saved["settings"]["train_on_valid"]  # as an older version wrote it
    del saved["checksum"], saved["data_fingerprint"]  # older versions recorded neither
    torch.save(saved, state)
    before = state.read_bytes()

    with pytest.raises(InputError, match="other settings"):  # a final fit is another run
        run(workdir, "SRGNN", "older-refit", saved=False, resume_file=state,
            extra={"train_on_valid": True})
    assert state.read_bytes() == before

    epochs_seen = []
    resumed = run(workdir, "SRGNN", "older-resumed", saved=False, resume_file=state,
                  epoch_callback=lambda epoch, *rest: epochs_seen.append(epoch))
    assert epochs_seen == [1, 2] and resumed["training_parts"] == 2


def test_state_from_before_a_removed_setting_resumes_a_run_that_no_longer_has_it(workdir):
    """States written while SRGNN had ``rule_fusion`` carry its defaults; they still resume."""
    state = workdir / "removed.resume.pth"
    with pytest.raises(Interrupted):
        run(workdir, "SRGNN", "removed-cut", saved=False, resume_file=state,
            epoch_callback=interrupt_after(0))
    saved = torch.load(state, weights_only=True)
    assert "rule_fusion" not in saved["settings"]  # the model's defaults no longer name it
    saved["settings"].update({"rule_fusion": 0, "rule_steps": 10, "rule_repeat_boost": 0.0})
    del saved["checksum"], saved["data_fingerprint"]  # older versions recorded neither
    torch.save(saved, state)  # as an older version wrote it
    epochs_seen = []
    resumed = run(workdir, "SRGNN", "removed-resumed", saved=False, resume_file=state,
                  epoch_callback=lambda epoch, *rest: epochs_seen.append(epoch))
    assert epochs_seen == [1, 2] and resumed["training_parts"] == 2


def test_resume_message_counts_epochs_like_the_lines_after_it(workdir, caplog):
    state = workdir / "message.resume.pth"
    with pytest.raises(Interrupted):
        run(workdir, "GRU4Rec", "message-cut", saved=False, resume_file=state,
            epoch_callback=interrupt_after(0))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        runs.run(model_of("GRU4Rec"), "tiny", config_dict=config(workdir, "GRU4Rec"),
                 result_file=workdir / "message.json", quiet=False, resume_file=state,
                 show_progress=False)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resumed")]
    assert "1 epoch(s) done, going on with epoch 1 (counted from 0" in line
