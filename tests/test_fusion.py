"""SR-GNN + sequence rules: the fused ranker's scores, SRGNN left plain, the fusion runner."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from tiny_data import write_tiny_benchmark

from benchmarks import fusion
from recbole_srgnn.experiments import fusion_ensemble, fusion_plan, fusion_seed
from recbole_srgnn.training import checkpoints
from recbole_srgnn.training import runs as training_runs
from recbole_srgnn.training.datasets import ready_config
from recbole_srgnn.errors import InputError
from recbole_srgnn.model import SRGNN
from recbole_srgnn.model.fused import FusedRanker
from recbole_srgnn.model.rules import RuleScorer, SequenceRules

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion")
    write_tiny_benchmark(root / "data", "tiny", seed=5, sessions=(80, 16, 16), length=(2, 7))
    return root


def build(tiny, model_class, name, **extra):
    from recbole.data import create_dataset, data_preparation

    config = ready_config(name, "tiny", None, {
        "data_path": str(tiny / "data"), "checkpoint_dir": str(tiny / "saved"),
        "show_progress": False, "embedding_size": 8, **extra})
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    torch.manual_seed(0)
    return model_class(config, train._dataset), train, test


# ---------------------------------------------------------------------------------------------
# The ranker (recbole_srgnn/model/fused.py)
# ---------------------------------------------------------------------------------------------
def test_fused_scores_are_softmax_plus_weighted_rules(tiny):
    plain, train, test = build(tiny, SRGNN, "SRGNN", norm_scale=12, repeat_recency=3)
    scorer = RuleScorer.from_dataset(plain, train._dataset, steps=3, repeat_boost=0.4)
    fused = FusedRanker([plain], scorer, alpha=0.7)
    # the rule tables are not part of the weights: the ranker's weights are the model's
    assert set(fused.state_dict()) == {f"members.0.{k}" for k in plain.state_dict()}
    rules, _, _ = build(tiny, SequenceRules, "SequenceRules", rule_steps=3, repeat_boost=0.4)
    fused.eval()
    batch = next(iter(test))[0]
    seq, length = batch["item_id_list"], batch["item_length"]
    with torch.no_grad():
        expected = torch.softmax(plain.full_sort_predict(batch), -1) + 0.7 * rules.forward(seq, length)
        got = fused.full_sort_predict(batch)
        assert torch.allclose(got, expected, atol=1e-5)
        assert torch.allclose(fused.predict(batch), got.gather(1, batch["item_id"].unsqueeze(1)).squeeze(1))
        # the weight can be changed on a built ranker (what the runner's sweep does); 0 = the model alone
        fused.alpha = 0.0
        assert torch.equal(fused.full_sort_predict(batch).argsort(-1, descending=True)[:, :5],
                           plain.full_sort_predict(batch).argsort(-1, descending=True)[:, :5])


def test_fusing_into_a_buffer_rounds_as_the_formula():
    """The one-pass sweep fuses into a reused buffer: bit for bit the ranker's own sum."""
    generator = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(6, 500, generator=generator), -1)
    scores = torch.randint(0, 4, (6, 500), generator=generator).float() / 3  # many ties
    buffer = torch.full((6, 500), float("nan"))
    for alpha in (0.001, 0.02, 0.3, 7.0):
        expected = FusedRanker.fuse(probs, scores, alpha)
        assert torch.equal(expected, probs + alpha * scores)
        assert FusedRanker.fuse(probs, scores, alpha, out=buffer) is buffer
        assert torch.equal(buffer, expected)


def test_topk_rows_are_recboles_collected_rows(tiny):
    """``rec.topk`` rows from [B, k] comparisons equal RecBole's collector's (its positive
    matrix), with ties, several positives per case, a duplicate positive and a case without."""
    from recbole.evaluator import Collector

    from recbole_srgnn.experiments.fusion_pass import positives, topk_rows

    _, train, _ = build(tiny, SRGNN, "SRGNN")
    config = train.config
    n_items, k = 40, max(config["topk"])
    scores = torch.randint(0, 5, (5, n_items), generator=torch.Generator().manual_seed(1)).float()
    scores[:, 0] = -float("inf")
    positive_u = torch.tensor([0, 1, 1, 2, 2, 4, 4, 4])
    positive_i = torch.tensor([3, 7, 9, 5, 5, 1, 2, 30])
    collector = Collector(config)
    collector.eval_batch_collect(scores.clone(), None, positive_u, positive_i)
    expected = collector.get_data_struct()["rec.topk"]
    got = topk_rows(scores.clone(), k, *positives(positive_u, positive_i, n_items))
    assert got.dtype == expected.dtype and torch.equal(got, expected)
    assert got[:, -1].tolist() == [1, 2, 1, 0, 3] and got[:, :-1].sum() > 0


def test_srgnn_is_plain_and_refuses_the_removed_rule_fusion(tiny):
    """SRGNN ranks by its own scores only; an old checkpoint's ``rule_fusion: 0`` still loads."""
    plain, train, _ = build(tiny, SRGNN, "SRGNN", norm_scale=12, repeat_recency=3)
    old, _, _ = build(tiny, SRGNN, "SRGNN", norm_scale=12, repeat_recency=3,
                      rule_fusion=0, rule_steps=3, rule_repeat_boost=0.4)
    assert set(old.state_dict()) == set(plain.state_dict())
    old.load_state_dict(plain.state_dict())
    # training is untouched: the same loss with and without the old options
    plain.train(), old.train()
    train_batch = next(iter(train))
    torch.manual_seed(1)
    loss_plain = plain.calculate_loss(train_batch)
    torch.manual_seed(1)
    loss_old = old.calculate_loss(train_batch)
    assert torch.equal(loss_plain, loss_old)
    with pytest.raises(InputError, match="python -m recbole_srgnn.fusion"):
        build(tiny, SRGNN, "SRGNN", rule_fusion=0.3)


def test_rule_scorer_is_the_sequence_rules_model(tiny):
    rules, train, test = build(tiny, SequenceRules, "SequenceRules", rule_steps=2, repeat_boost=1.5)
    scorer = RuleScorer.from_dataset(rules, train._dataset, steps=2, repeat_boost=1.5)
    batch = next(iter(test))[0]
    assert torch.equal(scorer(batch["item_id_list"], batch["item_length"]), rules.full_sort_predict(batch))
    assert list(scorer.state_dict()) == []  # rebuilt from the training split, never saved


@pytest.mark.parametrize("extra, message", [({"alpha": -1}, "alpha"),
                                            ({"alpha": 1, "steps": 0}, "rule_steps")])
def test_bad_fusion_options_are_refused(tiny, extra, message):
    model, train, _ = build(tiny, SRGNN, "SRGNN")
    with pytest.raises(ValueError, match=message):
        scorer = RuleScorer.from_dataset(model, train._dataset, steps=extra.get("steps", 10),
                                         repeat_boost=0.0)
        FusedRanker([model], scorer, alpha=extra["alpha"])


# ---------------------------------------------------------------------------------------------
# The runner: python -m benchmarks.fusion
# ---------------------------------------------------------------------------------------------
def call(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = fusion.main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def write_config(root: Path, data: Path | None = None, **changes) -> Path:
    """A fusion config in ``root`` for the tiny data under ``data`` (default ``root``)."""
    config = {
        "name": "fusion-test", "dataset": "tiny", "seeds": [1, 2], "threads": 1,
        "settings": {"data_path": str((data or root) / "data"), "epochs": 2, "embedding_size": 8,
                     "train_batch_size": 64, "show_progress": False},
        "alphas": [0.5, 4], "repeat_boosts": [0, 1],
        "references": {"SequenceRules": [str(root / "rules.json")]},
    }
    config.update(changes)
    path = root / "fusion.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def fused_run(tiny):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tiny)
        rules = training_runs.run("SequenceRules", "tiny", config_dict={
            "data_path": str(tiny / "data"), "checkpoint_dir": str(tiny / "saved"),
            "show_progress": False}, quiet=True, result_file=tiny / "rules.json")
        config = write_config(tiny)
        rc, out, err = call(["--config", config, "--output", tiny / "out"])
        yield {"rc": rc, "stdout": out, "stderr": err, "config": config, "out": tiny / "out",
               "rules": rules, "root": tiny, "mp": mp}


def records(out: Path) -> dict[int, dict]:
    return {int(p.stem[4:]): json.loads(p.read_text()) for p in sorted((out / "runs").glob("seed*.json"))}


def test_runner_chooses_alpha_on_validation_and_reports(fused_run):
    assert fused_run["rc"] == 0, fused_run["stderr"]
    found = records(fused_run["out"])
    assert sorted(found) == [1, 2]
    for seed, record in found.items():
        assert [(s["alpha"], s["repeat_boost"]) for s in record["sweep"]] == [
            (0.0, None), (0.5, 0.0), (4.0, 0.0), (0.5, 1.0), (4.0, 1.0)]
        metric = record["valid_metric"]
        best = max(record["sweep"], key=lambda s: s["valid"][metric])
        assert (record["chosen_alpha"], record["chosen_repeat_boost"]) == (best["alpha"], best["repeat_boost"])
        # alpha 0 on the reloaded checkpoint = what training measured at its best epoch
        assert record["sweep"][0]["valid"][metric] == pytest.approx(record["best_valid_result"][metric])
        assert 0 < record["epochs_trained"] <= 2
        assert set(record["test_fused"]) >= set(fusion_plan.METRICS)
        if record["chosen_alpha"] == 0:
            assert record["test_fused"] == record["test_plain"]
    # the tiny walk k -> k+1 is exactly what the rules know: fusing them must help on validation
    assert all(r["chosen_alpha"] > 0 for r in found.values())
    # a config without 'scorers' records the fields it did before the key (no scorer names)
    for record in found.values():
        assert set(record) == {
            "best_epoch", "best_valid_result", "chosen_alpha", "chosen_repeat_boost", "config",
            "data", "epochs_trained", "peak_rss_mb", "rules", "seconds_per_epoch", "seed",
            "settings_hash", "sweep", "test_fused", "test_plain", "threads", "train_seconds",
            "trained_by", "training_parts", "valid_curve", "valid_metric", "versions"}
        assert all(set(s) == {"alpha", "repeat_boost", "valid", "seconds"} for s in record["sweep"])
    assert "seed 1: training SRGNN on tiny" in fused_run["stdout"]
    assert "valid mrr@10" in fused_run["stdout"] and "chose alpha" in fused_run["stdout"]
    report = (fused_run["out"] / "report.md").read_text()
    assert "PARTIAL" not in report
    assert "| SR-GNN + rules (alpha chosen on validation) | 2 |" in report
    assert "| SequenceRules (reference) | 1 | " + f"{fused_run['rules']['test_result']['hit@1']:.4f}" in report
    assert "python -m benchmarks.fusion --config" in report
    assert report.startswith("# SR-GNN + sequence rules: `fusion-test`")
    assert "| scorer |" not in report and "Chosen scorer" not in report
    with open(fused_run["out"] / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["seed", "alpha", "repeat_boost", "split", "chosen", *fusion_plan.METRICS]
    assert len([r for r in rows if r["split"] == "valid"]) == 10
    assert len([r for r in rows if r["split"] == "test"]) == 4
    assert (fused_run["out"] / "alpha_valid.png").stat().st_size > 1000


def test_finished_seeds_are_not_redone_and_partial_is_marked(fused_run, tmp_path, monkeypatch):
    out = tmp_path / "out"
    for name in ("seed1.json", "seed2.json"):
        (out / "runs").mkdir(parents=True, exist_ok=True)
        (out / "runs" / name).write_text((fused_run["out"] / "runs" / name).read_text())
    trained = []
    finished = json.loads((fused_run["out"] / "runs" / "seed1.json").read_text())
    monkeypatch.setattr(fusion_seed, "run_seed",
               lambda plan, seed, scratch, **kw: trained.append(seed) or {**finished, "seed": seed})
    rc, out_text, _ = call(["--config", fused_run["config"], "--output", out])
    assert rc == 0 and trained == [] and "2 finished, 0 to run" in out_text
    (out / "runs" / "seed2.json").unlink()
    rc, _, _ = call(["--config", fused_run["config"], "--output", out, "--only-report"])
    assert rc == 0 and trained == []
    assert "PARTIAL: 1 of 2 seeds finished" in (out / "report.md").read_text()
    # other alphas make the records stale: both seeds would be trained again
    changed = write_config(tmp_path, alphas=[1.0])
    call(["--config", changed, "--output", out, "--seeds", "1"])
    assert trained == [1]


def test_a_seed_another_process_holds_is_left_to_it(fused_run, tmp_path, monkeypatch):
    from recbole_srgnn.files import claimed

    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    finished = json.loads((fused_run["out"] / "runs" / "seed1.json").read_text())
    trained = []
    monkeypatch.setattr(fusion_seed, "run_seed",
               lambda plan, seed, scratch, **kw: trained.append(seed) or {**finished, "seed": seed})
    expected = fusion_plan.settings_hash(fusion_plan.load_plan(fused_run["config"]))
    with claimed(fusion_plan.partial_path(out, 2, expected)) as mine:  # another process trains seed 2
        assert mine
        rc, text, err = call(["--config", fused_run["config"], "--output", out])
        assert rc == 0, err
        assert trained == [1] and not (out / "runs" / "seed2.json").exists()
        assert f"seed 2: training: another process runs it ({os.uname().nodename} {os.getpid()}); " \
               "skipped here" in text
    rc, text, err = call(["--config", fused_run["config"], "--output", out])
    assert rc == 0 and trained == [1, 2] and not (out / "partial").exists()


@pytest.mark.parametrize("change, message", [
    ({"alphas": [0]}, "'alphas' must be"),
    ({"repeat_boosts": [-1]}, "'repeat_boosts' must be"),
    ({"settings": {"rule_repeat_boost": 1}}, "not both"),
    ({"bogus": 1}, "unknown key(s) bogus"),
    ({"settings": {"seed": 3}}, "may not set seed"),
    ({"model": "NARM"}, "'model' must be SRGNN"),
    ({"config_files": ["nowhere.yaml"]}, "nowhere.yaml not found"),
])
def test_bad_config_is_one_line_exit_2(tmp_path, change, message):
    rc, out, err = call(["--config", write_config(tmp_path, **change), "--output", tmp_path / "o"])
    assert rc == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_unknown_seed_and_missing_config_are_one_line(tmp_path):
    rc, _, err = call(["--config", write_config(tmp_path), "--output", tmp_path / "o", "--seeds", "9"])
    assert rc == 2 and "--seeds 9 not in" in err and err.count("\n") == 1
    rc, _, err = call(["--config", tmp_path / "none.yaml"])
    assert rc == 2 and "not found" in err and err.count("\n") == 1


def test_shipped_fusion_config_is_valid_and_commented():
    path = REPO / "benchmarks" / "configs" / "fusion" / "cotrec.yaml"
    plan = fusion_plan.load_plan(path)
    assert plan.dataset == "retailrocket-cotrec" and len(plan.seeds) >= 3
    for files in plan.references.values():
        assert all((REPO / f).is_file() for f in files)
    keys = [line for line in path.read_text().splitlines() if re.match(r"^\s*-?\s*[A-Za-z_][\w ]*:", line)]
    assert len(keys) > 10
    for line in keys:
        assert "#" in line, f"uncommented key: {line}"


def test_a_model_trained_before_with_run_py_is_reused_not_retrained(fused_run, tmp_path, monkeypatch):
    config = write_config(tmp_path, fused_run["root"], seeds=[1, 2, 3])
    plan = fusion_plan.load_plan(config)
    settings = {**plan.settings, "seed": 3, "checkpoint_dir": str(tmp_path / "saved")}
    before = training_runs.run("SRGNN", "tiny", config_dict=settings, quiet=True,
                               result_file=tmp_path / "seed3-run.json")
    monkeypatch.setattr(training_runs, "run", lambda *a, **k: pytest.fail("retrained"))
    out = tmp_path / "out"
    rc, text, err = call(["--config", config, "--output", out, "--seeds", "3",
                          "--trained", f"3={tmp_path / 'seed3-run.json'}"])
    assert rc == 0, err
    assert "trained before" in text
    record = records(out)[3]
    assert record["trained_by"].startswith("run.py")
    assert record["sweep"][0]["valid"]["mrr@10"] == pytest.approx(before["best_valid_result"]["mrr@10"])
    assert record["rules"] == {"rule_steps": 10, "rule_repeat_boost": [0.0, 1.0]}
    # a results JSON of another seed, or other settings, is refused in one line
    rc, _, err = call(["--config", config, "--output", out, "--seeds", "2",
                       "--trained", f"2={tmp_path / 'seed3-run.json'}"])
    assert rc == 2 and "trained with seed=3" in err and err.count("\n") == 1
    rc, _, err = call(["--config", write_config(tmp_path, fused_run["root"], seeds=[3], settings={**plan.settings, "epochs": 3}),
                       "--output", out, "--trained", f"3={tmp_path / 'seed3-run.json'}"])
    assert rc == 2 and "epochs=2" in err and err.count("\n") == 1
    rc, _, err = call(["--config", config, "--output", out, "--trained", "3"])
    assert rc == 2 and "expected SEED=RESULTS_JSON" in err


def test_a_seed_cut_off_continues_training_then_skips_it(fused_run, tmp_path, monkeypatch):
    """Killed after epoch 1: the rerun trains epoch 2 only; killed in the sweep: no training."""
    config = write_config(tmp_path, fused_run["root"], seeds=[1])
    out = tmp_path / "out"
    real_run = training_runs.run
    epochs = []

    def cut_after_first_epoch(*args, epoch_callback=None, **kwargs):
        def callback(epoch, result, score):
            epochs.append(epoch)
            epoch_callback(epoch, result, score)
            if epoch == 0:
                raise KeyboardInterrupt
        return real_run(*args, epoch_callback=callback, **kwargs)

    monkeypatch.setattr(training_runs, "run", cut_after_first_epoch)
    rc, _, err = call(["--config", config, "--output", out])
    assert rc == 130 and "rerun the command to resume" in err
    assert len(list((out / "partial").glob("seed1-*/train.resume.pth"))) == 1

    real_load = checkpoints.load_trained

    def cut_in_the_sweep(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints, "load_trained", cut_in_the_sweep)
    rc, text, _ = call(["--config", config, "--output", out])
    assert rc == 130 and "continuing the training cut off before" in text
    assert epochs == [0, 1]  # epoch 0 was not trained again
    assert list((out / "partial").glob("seed1-*/train.json"))

    monkeypatch.setattr(training_runs, "run", lambda *a, **k: pytest.fail("trained again"))
    monkeypatch.setattr(checkpoints, "load_trained", real_load)
    rc, text, err = call(["--config", config, "--output", out])
    assert rc == 0, err
    assert "training finished before an interruption" in text
    record, straight = records(out)[1], records(fused_run["out"])[1]
    assert record["training_parts"] == 2
    for key in ("sweep", "test_plain", "test_fused", "best_epoch"):
        if key == "sweep":
            assert ([s["valid"] for s in record[key]] == [s["valid"] for s in straight[key]])
        else:
            assert record[key] == straight[key]
    assert not (out / "partial").exists()


def test_refit_trains_finished_seeds_again_on_train_and_valid(fused_run, tmp_path, monkeypatch):
    """refit: true adds a final fit to finished records (kept valid), for the chosen epoch count."""
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    for name in ("seed1.json", "seed2.json"):
        (out / "runs" / name).write_text((fused_run["out"] / "runs" / name).read_text())
    before = records(out)
    config = write_config(tmp_path, fused_run["root"], refit=True)
    monkeypatch.setattr(fusion_seed, "run_seed", lambda *a, **k: pytest.fail("trained from scratch"))
    real_run = training_runs.run
    runs = []

    def recording_run(*args, **kwargs):
        runs.append(args[3])  # config_dict
        return real_run(*args, **kwargs)

    monkeypatch.setattr(training_runs, "run", recording_run)
    rc, text, err = call(["--config", config, "--output", out])
    assert rc == 0, err
    assert "2 finished, 0 to run, 2 to refit on train + valid" in text
    assert "seed 1: refitting SRGNN on tiny" in text
    after = records(out)
    assert [r["train_on_valid"] for r in runs] == [True, True]
    assert [r["epochs"] for r in runs] == [before[s]["best_epoch"] + 1 for s in (1, 2)]
    for seed in (1, 2):
        refit = after[seed].pop("refit")
        assert after[seed] == before[seed]  # the record itself is untouched
        data = before[seed]["data"]
        assert refit["train_cases"] == data["train_cases"] + data["valid_cases"]
        assert refit["epochs"] == before[seed]["best_epoch"] + 1
        assert set(refit["test_fused"]) >= set(fusion_plan.METRICS)
        assert refit["test_plain"] != before[seed]["test_plain"]  # another model was tested
        if before[seed]["chosen_alpha"]:
            assert refit["test_fused"] != refit["test_plain"]
    assert not (out / "partial").exists()
    report = (out / "report.md").read_text()
    assert "Refitted seeds: 2 of 2" in report
    assert "| refit on train + valid + rules (same alpha) | 2 |" in report
    assert "## Refit on train + valid vs trained on train only" in report
    with open(out / "runs.csv", newline="") as handle:
        assert len([r for r in csv.DictReader(handle) if r["split"] == "test-refit"]) == 4
    # done: a rerun refits nothing, and without refit the report has no refit rows to invent
    runs.clear()
    rc, text, _ = call(["--config", config, "--output", out])
    assert rc == 0 and runs == [] and "2 finished, 0 to run, 0 to refit" in text
    rc, _, _ = call(["--config", fused_run["config"], "--output", fused_run["out"], "--only-report"])
    assert "refit" not in (fused_run["out"] / "report.md").read_text().lower()


def test_refit_must_be_a_boolean(tmp_path):
    rc, _, err = call(["--config", write_config(tmp_path, refit="yes"), "--output", tmp_path / "o"])
    assert rc == 2 and "'refit' must be true or false" in err


# ---------------------------------------------------------------------------------------------
# Ensemble of the seeds' models (recbole_srgnn/experiments/fusion_ensemble.py)
# ---------------------------------------------------------------------------------------------
def test_seed_ensemble_scores_are_mean_probabilities_plus_weighted_rules(tiny):
    one, train, test = build(tiny, SRGNN, "SRGNN", repeat_recency=2)
    rules = RuleScorer.from_dataset(one, train._dataset, steps=3, repeat_boost=0.5)
    torch.manual_seed(7)
    two, _, _ = build(tiny, SRGNN, "SRGNN", repeat_recency=2)
    two.reset_parameters()
    one.eval(), two.eval()
    batch = next(iter(test))[0]
    seq, length = batch["item_id_list"], batch["item_length"]
    with torch.no_grad():
        p1 = torch.softmax(one.full_scores(seq, length), -1)
        p2 = torch.softmax(two.full_scores(seq, length), -1)
        # one member with the rules = "SR-GNN + rules" of that model
        alone = FusedRanker([one], rules, alpha=0.3)
        assert torch.allclose(alone.full_sort_predict(batch), p1 + 0.3 * rules(seq, length), atol=1e-6)
        both = FusedRanker([one, two], rules, alpha=0.3)
        expected = (p1 + p2) / 2 + 0.3 * rules(seq, length)
        assert torch.allclose(both.full_sort_predict(batch), expected, atol=1e-6)
        assert not torch.allclose(p1, p2)  # two different models, so the mean is not either one
        swapped = FusedRanker([two, one], rules, alpha=0.3)  # member order does not matter
        assert torch.allclose(swapped.full_sort_predict(batch), expected, atol=1e-6)
        items = batch["item_id"]
        assert torch.allclose(both.predict(batch), expected.gather(1, items.unsqueeze(1)).squeeze(1))
    with pytest.raises(ValueError, match="at least one member"):
        FusedRanker([])
    with pytest.raises(ValueError, match="only with a scorer"):
        FusedRanker([one], None, alpha=0.5)


@pytest.fixture(scope="module")
def ensembled(fused_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    config = write_config(root, fused_run["root"], refit=True, ensemble=True)
    rc, out, err = call(["--config", config, "--output", root / "out"])
    return {"rc": rc, "stdout": out, "stderr": err, "config": config, "out": root / "out",
            "root": root}


def test_ensemble_of_the_seeds_models_is_chosen_on_validation_and_reported(ensembled):
    assert ensembled["rc"] == 0, ensembled["stderr"]
    out = ensembled["out"]
    found = records(out)
    expected = fusion_plan.settings_hash(fusion_plan.load_plan(ensembled["config"]))
    for seed in (1, 2):  # every recorded model is kept, and the record does not name the file
        assert fusion_plan.model_path(out, seed, expected).is_file()
        assert fusion_plan.model_path(out, seed, expected, refit=True).is_file()
        assert "_checkpoint" not in found[seed] and "_checkpoint" not in found[seed]["refit"]
    result = json.loads((out / "ensemble.json").read_text())
    assert result["seeds"] == [1, 2]
    assert len(result["member_checks"]) == 4 and all(c["max_diff"] <= fusion_ensemble.TOLERANCE
                                                     for c in result["member_checks"])
    boosts = sorted({r["chosen_repeat_boost"] for r in found.values()})
    assert result["repeat_boosts"] == boosts
    assert [(s["alpha"], s["repeat_boost"]) for s in result["sweep"]] == [(0.0, None)] + [
        (a, b) for b in boosts for a in (0.5, 4.0)]
    metric = result["valid_metric"]
    best = max(result["sweep"], key=lambda s: s["valid"][metric])
    assert (result["chosen_alpha"], result["chosen_repeat_boost"]) == (best["alpha"], best["repeat_boost"])
    # the ensemble is another ranking than either seed's model
    assert result["test_plain"] not in [r["test_plain"] for r in found.values()]
    assert set(result["refit"]["test_fused"]) >= set(fusion_plan.METRICS)
    assert "ensemble of seeds 1, 2" in ensembled["stdout"]
    assert "reproduces its record" in ensembled["stdout"]
    report = (out / "report.md").read_text()
    assert "## Ensemble of the seeds' models" in report
    assert "| ensemble of the refits + rules (same alpha) | 2 (one ensemble) |" in report
    from recbole_srgnn.experiments.stats import wilson_interval

    cases, hit = found[1]["data"]["test_cases"], result["refit"]["test_fused"]["hit@10"]
    low, high = wilson_interval(hit, cases)
    assert (f"Hit@10 of the refit ensemble + rules, {hit:.4f}, is a proportion of {cases} test cases; its "
            f"95 % Wilson interval is [{low:.4f}, {high:.4f}]") in report
    with open(out / "runs.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["seed"] == "ensemble"]
    assert len([r for r in rows if r["split"] == "valid"]) == len(result["sweep"])
    assert len([r for r in rows if r["split"] == "test-refit"]) == (2 if result["chosen_alpha"] else 1)


def test_ensemble_is_not_redone_and_a_lost_model_is_retrained_to_its_record(ensembled, monkeypatch):
    out, config = ensembled["out"], ensembled["config"]
    expected = fusion_plan.settings_hash(fusion_plan.load_plan(config))
    monkeypatch.setattr(fusion_ensemble, "evaluate", lambda *a, **k: pytest.fail("evaluated again"))
    rc, text, err = call(["--config", config, "--output", out])
    assert rc == 0, err
    monkeypatch.undo()
    before = json.loads((out / "ensemble.json").read_text())
    # lose seed 2's trained model and the result: it is trained again, same seed, and must match
    fusion_plan.model_path(out, 2, expected).unlink()
    (out / "ensemble.json").unlink()
    threads, real_run = [], training_runs.run
    monkeypatch.setattr(training_runs, "run", lambda *a, **k: threads.append(torch.get_num_threads())
                        or real_run(*a, **k))
    before_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rc, text, err = call(["--config", config, "--output", out])
    finally:
        torch.set_num_threads(before_threads)
    assert rc == 0, err
    assert "seed 2's trained model was not kept; training it again" in text
    assert threads == [1]  # the config's torch threads, as in the seed's own training
    after = json.loads((out / "ensemble.json").read_text())
    assert after["test_fused"] == pytest.approx(before["test_fused"], abs=fusion_ensemble.TOLERANCE)
    assert not (out / "partial").exists(), list((out / "partial").rglob("*"))


def test_a_model_file_that_is_not_the_recorded_model_is_refused(ensembled, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(ensembled["out"], out)
    config = ensembled["config"]
    expected = fusion_plan.settings_hash(fusion_plan.load_plan(config))
    seed1, seed2 = fusion_plan.model_path(out, 1, expected), fusion_plan.model_path(out, 2, expected)
    # the right settings but other weights (seed 1's, stored as seed 2's): the members' check stops it
    shutil.copyfile(seed1, seed2)
    (out / "ensemble.json").unlink()
    rc, _, err = call(["--config", config, "--output", out])
    assert rc == 2 and "model file of seed 2 does not reproduce its record" in err
    assert not (out / "ensemble.json").exists()  # nothing half-written
    assert fusion_ensemble.read(out, expected, fusion_plan.load_plan(config)) is None


def test_ensemble_options_are_checked(tmp_path):
    rc, _, err = call(["--config", write_config(tmp_path, ensemble="yes"), "--output", tmp_path / "o"])
    assert rc == 2 and "'ensemble' must be true or false" in err
    rc, _, err = call(["--config", write_config(tmp_path, ensemble=True, seeds=[1]), "--output", tmp_path / "o"])
    assert rc == 2 and "at least two seeds" in err


def ensemble_without(ensembled, tmp_path: Path, *lost: tuple[int, bool]) -> tuple[Path, Path, str]:
    """A copy of the ensembled results without its ensemble result and the ``lost`` (seed,
    refit) model files; returns (results folder, config, settings hash)."""
    out = tmp_path / "out"
    shutil.copytree(ensembled["out"], out)
    config = ensembled["config"]
    expected = fusion_plan.settings_hash(fusion_plan.load_plan(config))
    (out / "ensemble.json").unlink()
    for seed, refit in lost:
        fusion_plan.model_path(out, seed, expected, refit=refit).unlink()
    return out, config, expected


def test_ensemble_builds_only_the_models_of_the_seeds_it_runs(ensembled, tmp_path, monkeypatch):
    """--seeds 1 rebuilds seed 1's lost model and waits for seed 2's; --seeds 2 then finishes."""
    out, config, expected = ensemble_without(ensembled, tmp_path, (1, True), (2, False))
    trained = []
    real_train = fusion_seed.train_seed

    def counted_train(plan, seed, *args, **kwargs):
        trained.append((seed, "refit" if kwargs.get("refit") else "trained"))
        return real_train(plan, seed, *args, **kwargs)

    monkeypatch.setattr(fusion_seed, "train_seed", counted_train)
    rc, text, err = call(["--config", config, "--output", out, "--seeds", "1"])
    assert rc == 0, err
    assert trained == [(1, "refit")] and not (out / "ensemble.json").exists()
    assert "waits for the model files of seed(s) 2 (built by: --seeds 2)" in text
    rc, text, err = call(["--config", config, "--output", out, "--seeds", "2"])
    assert rc == 0, err
    assert trained == [(1, "refit"), (2, "trained")] and (out / "ensemble.json").is_file()


def test_two_processes_rebuild_one_seeds_two_models_side_by_side(ensembled, tmp_path, monkeypatch):
    """While another process rebuilds seed 2's trained model, this one rebuilds its refit."""
    from recbole_srgnn.files import claimed

    out, config, expected = ensemble_without(ensembled, tmp_path, (2, False), (2, True))
    with claimed(out / "partial" / f"seed2-{expected}-model") as mine:
        assert mine
        rc, text, err = call(["--config", config, "--output", out, "--seeds", "2"])
        assert rc == 0, err
        assert "seed 2's trained model: another process runs it" in text
        assert "seed 2's refit model was not kept; training it again" in text
        assert fusion_plan.model_path(out, 2, expected, refit=True).is_file()
        assert "waits for the model files of seed(s) 2" in text and not (out / "ensemble.json").exists()
    work = out / "partial" / f"ensemble-{expected}"
    with claimed(work) as mine:  # the other process, its model done, evaluates the ensemble
        assert mine
        rc, text, err = call(["--config", config, "--output", out, "--seeds", "2"])
        assert rc == 0, err
        assert "seed 2's trained model was not kept; training it again" in text
        assert "ensemble: evaluation: another process runs it" in text
        assert not (out / "ensemble.json").exists()
    rc, text, err = call(["--config", config, "--output", out, "--seeds", "2"])
    assert rc == 0, err
    assert "training it again" not in text and (out / "ensemble.json").is_file()
    assert not (out / "partial").exists()
