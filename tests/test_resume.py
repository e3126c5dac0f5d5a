"""Resume states: an interrupted run continues from its last epoch and ends as an uninterrupted one."""

from __future__ import annotations

import pytest
import torch

from recbole_srgnn import pipeline
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
    return pipeline.run(model_of(model), "tiny", config_dict=config(root, model, **extra),
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
    from recbole_srgnn.trainer import resume_progress

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
