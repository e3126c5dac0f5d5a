"""Sampled softmax (loss_type SSM): the loss against references, its sampler, options, a run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from recbole.data.interaction import Interaction
from torch.nn import functional as F

from recbole_srgnn.model import LastItem, SRGNN
from recbole_srgnn.model.sampled_softmax import (
    NegativeSampler,
    estimated_softmax_loss,
    sampled_softmax_loss,
    target_counts,
)
from recbole_srgnn.run_identity import ADDED_SETTINGS, without_added_defaults, without_unread
from test_model import FakeConfig, make_config
from test_run_cli import assert_one_line_error, main_in_process, run_cli
from tiny_data import write_tiny_benchmark

NUM_ITEMS = 30


class CountedDataset:
    """A model's dataset: the catalogue size and the training targets (``inter_feat``)."""

    def __init__(self, targets: list[int], num_items: int = NUM_ITEMS) -> None:
        self.num_items = num_items
        self.inter_feat = {"item_id": torch.tensor(targets)}

    def num(self, field: str) -> int:
        assert field == "item_id"
        return self.num_items


# item 1..19 are training targets (item k k times), 20..29 never are
TRAIN_TARGETS = [k for k in range(1, 20) for _ in range(k)]


def ssm_model(model_class=SRGNN, seed: int = 0, targets=TRAIN_TARGETS, **overrides):
    torch.manual_seed(seed)
    config = make_config(**{"loss_type": "SSM", "num_negatives": 12, "sample_alpha": 0.75,
                            **overrides})
    return model_class(config, CountedDataset(targets))


def ssm_batch() -> Interaction:
    seq = torch.tensor([[1, 2, 3, 0], [4, 4, 5, 6], [7, 0, 0, 0], [2, 9, 2, 0], [5, 6, 0, 0]])
    lengths = torch.tensor([3, 4, 1, 3, 2])
    target = torch.tensor([4, 7, 8, 4, 3])  # rows 0 and 3 share their target
    return Interaction({"item_id_list": seq, "item_length": lengths, "item_id": target})


def naive_log_q(c: int, batch: int, negatives: int, alpha: float) -> float:
    counts = [TRAIN_TARGETS.count(i) for i in range(NUM_ITEMS)]
    p1 = counts[c] / sum(counts)
    weights = [n ** alpha if i else 0.0 for i, n in enumerate(counts)]
    pa = weights[c] / sum(weights)
    return math.log((batch * p1 + negatives * pa) / (batch + negatives))


def naive_ssm(full: torch.Tensor, targets: list[int], negatives: list[int], alpha: float,
              correct: bool = True) -> float:
    """``ssm_correction: logq``, one row at a time, in float64: -log softmax of the target among
    candidates != target, every logit minus its log Q."""
    candidates = targets + negatives
    losses = []
    for row, target in enumerate(targets):
        def logit(c: int) -> float:
            shift = naive_log_q(c, len(targets), len(negatives), alpha) if correct else 0.0
            return float(full[row, c]) - shift

        terms = [logit(target)] + [logit(c) for c in candidates if c != target]
        losses.append(-terms[0] + naive_logsumexp(terms))
    return sum(losses) / len(losses)


def naive_logsumexp(terms: list[float]) -> float:
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def naive_importance_ssm(full: torch.Tensor, targets: list[int], negatives: list[int],
                         alpha: float) -> float:
    """``ssm_correction: importance``, one row at a time, in float64: the target's logit once,
    every candidate draw != target weighted by 1 / (m Q(c)), m = the number of draws."""
    candidates = targets + negatives
    losses = []
    for row, target in enumerate(targets):
        terms = [float(full[row, target])]
        terms += [float(full[row, c]) - naive_log_q(c, len(targets), len(negatives), alpha)
                  - math.log(len(candidates)) for c in candidates if c != target]
        losses.append(-terms[0] + naive_logsumexp(terms))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("correction", ["importance", "logq"])
@pytest.mark.parametrize("model_class, options", [
    (SRGNN, {}),
    (SRGNN, {"norm_scale": 12.0, "repeat_recency": 3}),
    (LastItem, {}),
])
def test_loss_equals_a_naive_per_row_reference(model_class, options, correction):
    model = ssm_model(model_class, ssm_correction=correction, **options)
    if model_class is SRGNN and options:
        with torch.no_grad():
            model.repeat_bias.copy_(torch.tensor([0.5, -0.3, 0.2]))
    model.eval()
    data = ssm_batch()
    negatives = torch.tensor([4, 1, 12, 12, 19, 3, 8, 2, 15, 7, 5, 11])  # repeats, target hits
    loss = model.sampled_softmax(data, negatives)
    full = model.full_sort_predict(data).detach().double()
    naive = naive_importance_ssm if correction == "importance" else naive_ssm
    expected = naive(full, data["item_id"].tolist(), negatives.tolist(), 0.75)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    other = naive_ssm if correction == "importance" else naive_importance_ssm
    assert other(full, data["item_id"].tolist(), negatives.tolist(), 0.75) != pytest.approx(
        expected, rel=1e-3)  # the two estimators differ on this batch


def test_the_default_estimator_is_importance():
    assert ssm_model(SRGNN).ssm_correction == "importance"


def test_a_bad_estimator_is_refused_by_the_model():
    with pytest.raises(ValueError, match="ssm_correction must be one of importance, logq"):
        ssm_model(SRGNN, ssm_correction="exact")


def test_every_item_once_with_unit_counts_is_full_cross_entropy():
    model = ssm_model(SRGNN, norm_scale=10.0, repeat_recency=2).eval()
    with torch.no_grad():
        model.repeat_bias.copy_(torch.tensor([1.5, 0.4]))
    data = ssm_batch()
    full = model.full_sort_predict(data)
    targets = data["item_id"]
    everything = torch.arange(NUM_ITEMS)
    positive = full.gather(1, targets.unsqueeze(1)).squeeze(1)
    loss = estimated_softmax_loss(positive, full, targets, everything, torch.zeros(NUM_ITEMS))
    torch.testing.assert_close(loss, F.cross_entropy(full, targets))
    # a candidate equal to the row's target is masked: its score does not matter
    changed = full.clone()
    changed[torch.arange(len(targets)), targets] = 50.0
    torch.testing.assert_close(
        estimated_softmax_loss(positive, changed, targets, everything, torch.zeros(NUM_ITEMS)),
        loss)


@pytest.mark.parametrize("model_class, options", [
    (SRGNN, {}), (SRGNN, {"norm_scale": 12.0, "repeat_recency": 2}), (LastItem, {})])
def test_candidate_scores_are_the_full_scores_columns(model_class, options):
    model = ssm_model(model_class, **options).eval()
    if model_class is SRGNN and options:
        with torch.no_grad():
            model.repeat_bias.copy_(torch.tensor([0.7, -0.4]))
    data = ssm_batch()
    items = torch.tensor([5, 3, 3, 29, 1, 4, 6, 0, 2])
    full = model.full_sort_predict(data)
    part = model.candidate_scores(data["item_id_list"], data["item_length"], items)
    torch.testing.assert_close(part, full[:, items])


def test_every_item_a_candidate_without_correction_is_full_cross_entropy():
    model = ssm_model(SRGNN, norm_scale=10.0).eval()
    data = ssm_batch()
    full = model.full_sort_predict(data)
    targets = data["item_id"]
    everything = torch.arange(NUM_ITEMS)
    cand = model.candidate_scores(data["item_id_list"], data["item_length"], everything)
    positive = cand.gather(1, targets.unsqueeze(1)).squeeze(1)
    loss = sampled_softmax_loss(positive, cand, targets, everything)
    torch.testing.assert_close(loss, F.cross_entropy(full, targets))
    # uniform sampling (alpha 0) shifts every logit by the same log Q: the same loss again
    uniform = torch.full((NUM_ITEMS,), math.log(1.0 / NUM_ITEMS))
    torch.testing.assert_close(
        sampled_softmax_loss(positive, cand, targets, everything, uniform[targets], uniform), loss)


def test_a_candidate_equal_to_the_target_is_masked_for_that_row_only():
    targets = torch.tensor([2, 3])
    candidates = torch.tensor([2, 3, 2])
    pos = torch.tensor([1.0, 0.5])
    logits = torch.tensor([[9.0, 0.0, 9.0], [9.0, 1.0, 5.0]])
    loss = sampled_softmax_loss(pos, logits, targets, candidates)
    row0 = -1.0 + math.log(math.exp(1.0) + math.exp(0.0))  # both 2s masked, the 3 kept
    row1 = -0.5 + math.log(math.exp(0.5) + math.exp(9.0) + math.exp(5.0))  # its 3 masked
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # the masked scores do not matter, and get no gradient
    changed = logits.clone().requires_grad_(True)
    with torch.no_grad():
        changed[0, 0] = changed[0, 2] = -40.0
        changed[1, 1] = 70.0
    again = sampled_softmax_loss(pos, changed, targets, candidates)
    assert again.item() == pytest.approx(loss.item(), rel=1e-6)
    again.backward()
    assert changed.grad[0, 0] == 0 and changed.grad[0, 2] == 0 and changed.grad[1, 1] == 0


@pytest.mark.parametrize("correction", ["importance", "logq"])
@pytest.mark.parametrize("model_class", [SRGNN, LastItem])
def test_gradients_reach_only_the_candidates_rows(model_class, correction):
    model = ssm_model(model_class, ssm_correction=correction).train()
    data = ssm_batch()
    negatives = torch.tensor([10, 11, 12, 11])
    model.sampled_softmax(data, negatives).backward()
    grad = model.item_embedding.weight.grad
    touched = set(torch.nonzero(grad.abs().sum(1)).flatten().tolist())
    session_items = set(data["item_id_list"][data["item_id_list"] > 0].tolist())
    candidates = set(data["item_id"].tolist()) | set(negatives.tolist())
    assert touched <= candidates | session_items
    assert candidates <= touched  # every candidate row is trained
    untouched = set(range(1, NUM_ITEMS)) - candidates - session_items
    assert untouched and not touched & untouched
    # full cross-entropy, for contrast, moves every item's row
    ce = ssm_model(model_class)
    ce.loss_type = "CE"
    ce.calculate_loss(data).backward()
    assert torch.count_nonzero(ce.item_embedding.weight.grad[1:].abs().sum(1)) == NUM_ITEMS - 1


def test_training_does_not_build_the_full_score_matrix(monkeypatch):
    model = ssm_model(SRGNN).train()

    def refuse(*args):
        raise AssertionError("full scores computed in SSM training")

    monkeypatch.setattr(model.network, "forward", refuse)
    monkeypatch.setattr(model, "full_scores", refuse)
    loss = model.calculate_loss(ssm_batch())
    assert torch.isfinite(loss)


def test_sampler_follows_popularity_and_never_draws_padding():
    counts = target_counts(torch.tensor(TRAIN_TARGETS), NUM_ITEMS)
    sampler = NegativeSampler(counts, 0.75)
    generator = torch.Generator().manual_seed(3)
    draws = sampler.draw(200_000, generator)
    assert draws.min() >= 1 and draws.max() <= 19  # items never a target have weight 0
    freq = torch.bincount(draws, minlength=NUM_ITEMS).double() / draws.numel()
    expected = counts.pow(0.75) / counts.pow(0.75).sum()
    torch.testing.assert_close(freq, expected, atol=3e-3, rtol=0)
    uniform = NegativeSampler(counts, 0.0).draw(100_000, torch.Generator().manual_seed(4))
    assert uniform.min() == 1 and uniform.max() == NUM_ITEMS - 1  # the whole catalogue
    assert abs(torch.bincount(uniform).float()[1:].std() / (100_000 / 29)) < 0.05


def test_draws_are_deterministic_under_the_seed():
    def losses(seed: int) -> list[float]:
        model = ssm_model(SRGNN, seed=0).train()
        torch.manual_seed(seed)  # what RecBole's init_seed seeds
        return [model.calculate_loss(ssm_batch()).item() for _ in range(3)]

    first = losses(7)
    assert losses(7) == first
    assert losses(8) != first
    assert len(set(first)) == 3  # fresh negatives every step


def test_num_negatives_larger_than_the_catalogue_is_clamped():
    model = ssm_model(SRGNN, num_negatives=10_000)
    assert model.num_negatives == NUM_ITEMS - 1
    defaults = SRGNN(make_config(loss_type="SSM"), CountedDataset(TRAIN_TARGETS))
    assert defaults.num_negatives == NUM_ITEMS - 1 and defaults.sampler.alpha == 0.75


def test_state_dict_is_that_of_a_ce_model():
    ssm = ssm_model(SRGNN, seed=5)
    torch.manual_seed(5)
    ce = SRGNN(make_config(), CountedDataset(TRAIN_TARGETS))
    assert list(ssm.state_dict()) == list(ce.state_dict())
    for key, value in ce.state_dict().items():
        assert torch.equal(value, ssm.state_dict()[key])  # same initial weights for a seed


def test_new_keys_at_their_defaults_keep_old_run_identities():
    assert ADDED_SETTINGS["num_negatives"] == 2048 and ADDED_SETTINGS["sample_alpha"] == 0.75
    assert ADDED_SETTINGS["ssm_correction"] == "logq"  # what every SSM run before the key did
    old = {"loss_type": "CE", "epochs": 3}
    assert without_added_defaults({**old, "num_negatives": 2048, "sample_alpha": 0.75}) == old
    assert without_added_defaults({**old, "num_negatives": 512}) == {**old, "num_negatives": 512}
    ssm = {"loss_type": "SSM", "epochs": 3}
    assert without_added_defaults({**ssm, "ssm_correction": "logq"}) == ssm
    new = {**ssm, "ssm_correction": "importance"}
    assert without_added_defaults(new) == new
    # the sampled softmax's keys do not make a CE run what it is; an SSM run's they do
    assert without_unread({**old, "ssm_correction": "importance", "num_negatives": 8}) == old
    assert without_unread(new) == new


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_loss_equals_cpu_loss():
    model = ssm_model(SRGNN).eval()
    data = ssm_batch()
    negatives = torch.tensor([4, 1, 12, 12, 19, 3])
    cpu = model.sampled_softmax(data, negatives)
    model = model.cuda()
    gpu = model.sampled_softmax(data.to("cuda"), negatives.cuda())
    assert gpu.item() == pytest.approx(cpu.item(), rel=1e-5)
    torch.manual_seed(1)
    assert model.sampler.draw(64).device.type == "cuda"
    model.train()
    assert torch.isfinite(model.calculate_loss(data.to("cuda")))


# ---------------------------------------------------------------------------------------------
# run.py: options checked before any work, and a real SSM training
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssm")
    write_tiny_benchmark(root / "data", seed=2)
    return root


@pytest.mark.parametrize("model, option, needle", [
    ("SRGNN", "--loss_type=SSMX", "loss_type must be one of CE, BPR, SSM"),
    ("SRGNN", "--num_negatives=0", "num_negatives must be an integer >= 1, got 0"),
    ("SRGNN", "--num_negatives=2.5", "num_negatives must be an integer >= 1"),
    ("LastItem", "--sample_alpha=-0.5", "sample_alpha must be a number >= 0, got -0.5"),
    ("SRGNN", "--ssm_correction=exact", "ssm_correction must be one of importance, logq, got 'exact'"),
    ("GRU4Rec", "--loss_type=SSM", "loss_type SSM (sampled softmax) is for the SessionScorer"),
    ("SRGNN", "--loss_type=ssm", "loss_type must be written in capitals (CE, BPR or SSM)"),
])
def test_bad_options_are_one_line_before_any_work(workdir, capsys, monkeypatch, model, option,
                                                  needle):
    monkeypatch.chdir(workdir)
    checkpoints = workdir / f"ck-{abs(hash(option + model))}"
    proc = main_in_process(f"--model={model}", "--dataset=tiny", f"--data_path={workdir / 'data'}",
                           f"--checkpoint_dir={checkpoints}", option, capsys=capsys)
    assert_one_line_error(proc, needle)
    assert not checkpoints.exists()


def test_run_py_trains_with_ssm_and_evaluates_on_the_full_catalogue(workdir):
    def train(tag: str, *extra: str) -> dict:
        result_file = workdir / f"{tag}.json"
        proc = run_cli("--model=SRGNN", "--dataset=tiny", f"--data_path={workdir / 'data'}",
                       f"--checkpoint_dir={workdir / 'ck'}", "--epochs=2", "--embedding_size=8",
                       "--train_batch_size=32", "--learning_rate=1e-2", "--threads", "1",
                       f"--result_file={result_file}", *extra, cwd=workdir)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(result_file.read_text())

    # (draws deterministic under the seed: test_draws_are_deterministic_under_the_seed and the
    # resume tests below, in-process)
    first = train("ssm", "--loss_type=SSM", "--num_negatives=8", "--sample_alpha=0.5")
    assert first["config"]["loss_type"] == "SSM" and first["config"]["num_negatives"] == 8
    assert {"hit@10", "mrr@10"} <= set(first["test_result"])  # full ranking metrics
    checkpoint = first["checkpoint"]
    evaluated = workdir / "ssm-eval.json"
    proc = run_cli(f"--checkpoint={checkpoint}", f"--result_file={evaluated}", "--quiet",
                   cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(evaluated.read_text())["test_result"] == first["test_result"]


def test_model_refuses_a_bad_loss_type_directly():
    with pytest.raises(ValueError, match="CE, BPR or SSM"):
        SRGNN(FakeConfig(make_config(loss_type="XE")), CountedDataset(TRAIN_TARGETS))
    with pytest.raises(ValueError, match="sample_alpha"):
        ssm_model(SRGNN, sample_alpha=-1.0)


# ---------------------------------------------------------------------------------------------
# resume states: an SSM run resumes to the uninterrupted result; older states still resume
# ---------------------------------------------------------------------------------------------
class Interrupted(Exception):
    """Stands for a killed process: raised after an epoch's resume state is written."""


def stop_after_first_epoch(done: int, *rest) -> None:
    if done == 0:
        raise Interrupted


def run_in_process(root, name: str, **kwargs) -> dict:
    from recbole_srgnn.training import runs

    settings = {"epochs": 2, "train_batch_size": 32, "eval_batch_size": 64,
                "embedding_size": 8, "stopping_step": 10, "show_progress": False, "threads": 1,
                "data_path": str(root / "data"), "checkpoint_dir": str(root / "saved"),
                **kwargs.pop("extra", {})}
    return runs.run("SRGNN", "tiny", config_dict=settings, result_file=root / f"{name}.json",
                    quiet=True, saved=False, **kwargs)


def comparable(results: dict) -> dict:
    curve = [{k: v for k, v in entry.items() if "seconds" not in k}
             for entry in results["valid_curve"]]
    return {"curve": curve, "test_result": results["test_result"]}


def test_an_interrupted_ssm_run_resumes_to_the_uninterrupted_result(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    torch.set_num_threads(1)
    ssm = {"loss_type": "SSM", "num_negatives": 6}
    straight = run_in_process(workdir, "ssm-straight", extra=ssm)
    state = workdir / "ssm.resume.pth"
    with pytest.raises(Interrupted):
        run_in_process(workdir, "ssm-cut", extra=ssm, resume_file=state,
                       epoch_callback=stop_after_first_epoch)
    saved = torch.load(state, weights_only=True)
    assert saved["settings"]["num_negatives"] == 6
    resumed = run_in_process(workdir, "ssm-resumed", extra=ssm, resume_file=state)
    assert resumed["training_parts"] == 2
    assert comparable(resumed) == comparable(straight)  # the draws went on as uninterrupted


def test_a_state_from_before_the_ssm_keys_resumes_a_ce_run(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    state = workdir / "older-ce.resume.pth"
    with pytest.raises(Interrupted):
        run_in_process(workdir, "ce-cut", resume_file=state,
                       epoch_callback=stop_after_first_epoch)
    saved = torch.load(state, weights_only=True)
    assert saved["settings"]["num_negatives"] == 2048
    for key in ("num_negatives", "sample_alpha", "ssm_correction"):  # as before SSM
        del saved["settings"][key]
    del saved["checksum"], saved["data_fingerprint"]  # older versions recorded neither
    torch.save(saved, state)
    resumed = run_in_process(workdir, "ce-resumed", resume_file=state)
    assert resumed["training_parts"] == 2


def test_ssm_speed_benchmark_smoke(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "results"
    command = [sys.executable, "-m", "benchmarks.ssm", "--batches", "2", "--warmup", "1",
               "--rounds", "1", "--batch_size", "32", "--embedding_size", "8",
               "--synthetic_events", "6000", "--negatives", "16",
               "--data_path", str(tmp_path / "dataset"), "--out", str(out), "--threads", "1"]
    done = subprocess.run(command, cwd=Path(__file__).resolve().parents[1], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "ssm_speed.json").read_text())
    rows = {r["variant"]: r for r in report["results"]}
    assert list(rows) == ["CE", "SSM 16"]
    assert all(r["cases"] == 2 * 32 and r["sequences_per_second"] > 0 for r in rows.values())
    assert rows["SSM 16"]["num_negatives_used"] == 16
    assert rows["SSM 16"]["ssm_correction"] == "importance" and rows["CE"]["ssm_correction"] is None
    text = (out / "ssm_speed.md").read_text()
    assert "| SSM 16 | 16 | 16 |" in text and "estimator `ssm_correction: importance`" in text
    assert not [p for p in out.iterdir() if p.name not in ("ssm_speed.json", "ssm_speed.md")]
