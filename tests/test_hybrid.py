"""SR-GNN + any non-neural scorer: the fusion runner's ``scorers`` key (scorer and alpha chosen on
validation), its report, and configs without the key recording and reporting exactly as before."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from test_fusion import call, records, write_config
from tiny_data import write_tiny_benchmark

from recbole_srgnn.experiments import fusion_plan, fusion_report
from recbole_srgnn.experiments.fusion_rank import Ranking, scorer_grid, scorer_of
from recbole_srgnn.model import scorers

REPO = Path(__file__).resolve().parents[1]
# the rules at a negligible weight, the kNN scorers at weights that dominate the model
SCORERS = [{"SequenceRules": {"alphas": [1e-6]}}, {"SKNN": {"k": 20, "alphas": [10.0]}},
           {"STAN": {"alphas": [0.001]}}]


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory):
    root = tmp_path_factory.mktemp("hybrid")
    write_tiny_benchmark(root / "data", "tiny", seed=5, sessions=(80, 16, 16), length=(2, 7))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        config = write_config(root, scorers=SCORERS, ensemble=True, refit=True, references={},
                              settings={"data_path": str(root / "data"), "epochs": 1,
                                        "embedding_size": 8, "train_batch_size": 64,
                                        "show_progress": False})
        rc, out, err = call(["--config", config, "--output", root / "out"])
    assert rc == 0, err
    return {"config": config, "out": root / "out", "stdout": out}


def test_scorer_and_alpha_are_chosen_on_validation(hybrid):
    found = records(hybrid["out"])
    assert sorted(found) == [1, 2]
    for record in found.values():
        metric = record["valid_metric"]
        assert [(s["scorer"], s["alpha"], s["repeat_boost"]) for s in record["sweep"]] == [
            (None, 0.0, None), ("SequenceRules", 1e-6, 0.0), ("SequenceRules", 1e-6, 1.0),
            ("SKNN", 10.0, None), ("STAN", 0.001, None)]
        best = max(record["sweep"], key=lambda s: s["valid"][metric])
        assert (record["chosen_scorer"], record["chosen_alpha"]) == (best["scorer"], best["alpha"])
        # SKNN alone ranks the tiny walk well, the barely trained model and the weightless rules
        # do not: the kNN scorer must be chosen
        assert record["chosen_scorer"] == "SKNN" and record["chosen_alpha"] == 10.0
        summary = {entry["name"]: entry for entry in record["scorers"]}
        assert list(summary) == ["SequenceRules", "SKNN", "STAN"]
        for name, entry in summary.items():
            assert entry["best_valid"] == max(s["valid"][metric] for s in record["sweep"]
                                              if s["scorer"] == name)
        assert summary["SKNN"]["options"] == {"k": 20, "sample_size": 500}
        assert record["test_fused"] != record["test_plain"]
        # the refit is tested with the scorer chosen before (counted on train + valid)
        assert record["refit"]["test_fused"] != record["refit"]["test_plain"]
    assert "SKNN, alpha 10: valid mrr@10" in hybrid["stdout"]
    assert "chose SKNN, alpha 10 on validation" in hybrid["stdout"]


def test_report_names_the_chosen_scorer_and_each_scorers_best(hybrid):
    found = records(hybrid["out"])
    report = (hybrid["out"] / "report.md").read_text()
    assert report.startswith("# SR-GNN + a non-neural scorer: `fusion-test`")
    assert "| SR-GNN + scorer (scorer and alpha chosen on validation) | 2 |" in report
    assert ("Chosen scorer and alpha per seed: seed 1: SKNN, alpha 10, seed 2: SKNN, alpha 10."
            in report)
    assert "| seed | SequenceRules | SKNN | STAN | chosen |" in report
    sknn = found[1]["scorers"][1]["best_valid"]
    assert f"| 1 | {found[1]['scorers'][0]['best_valid']:.4f} (alpha 1e-06, repeat boost " in report
    assert f"| {sknn:.4f} (alpha 10) |" in report
    ensemble = json.loads((hybrid["out"] / "ensemble.json").read_text())
    metric = ensemble["valid_metric"]
    best = max(ensemble["sweep"], key=lambda s: s["valid"][metric])
    assert ensemble["chosen_scorer"] == best["scorer"] and ensemble["chosen_alpha"] == best["alpha"]
    with open(hybrid["out"] / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    chosen = [r for r in rows if r["split"] == "valid" and r["chosen"] == "True"]
    assert [(r["seed"], r["scorer"]) for r in chosen] == [
        ("1", "SKNN"), ("2", "SKNN"), ("ensemble", ensemble["chosen_scorer"])]
    assert "Ensemble of the seeds' models" in report and "| scorer | alpha |" in report


def counted(monkeypatch, owner, name: str) -> list:
    """Count the calls of ``owner.name`` (a method, patched on the instance)."""
    calls, method = [], getattr(owner, name)

    def wrapper(*args, **kwargs):
        calls.append(1)
        return method(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


# the rules at 2 boosts (one alpha at both, two alphas at one), one kNN scorer at a weight that
# barely moves the model's ranking and one that dominates it
POINTS = [(None, (0.0, None)), ("SequenceRules", (0.5, 0.0)), ("SequenceRules", (0.5, 1.0)),
          ("SequenceRules", (4.0, 1.0)), ("SKNN", (0.01, None)), ("SKNN", (10.0, None))]


@pytest.mark.parametrize("seeds", [[1], [1, 2]], ids=["one model", "2-member ensemble"])
def test_the_one_pass_sweep_gives_the_per_point_metrics(hybrid, tmp_path, monkeypatch, seeds):
    from recbole_srgnn.training import checkpoints

    plan = fusion_plan.load_plan(hybrid["config"])
    expected = fusion_plan.settings_hash(plan)
    load = checkpoints.load_trained  # small evaluation batches: results gathered over several
    monkeypatch.setattr(checkpoints, "load_trained", lambda path, overrides, **options: load(
        path, {**overrides, "eval_batch_size": 8}, **options))
    ranking = Ranking(plan, [fusion_plan.model_path(hybrid["out"], s, expected) for s in seeds],
                      checkpoint_dir=str(tmp_path))
    batches = len(ranking.loaded.valid_data)
    assert batches > 2
    forwards = [counted(monkeypatch, member, "full_scores") for member in ranking.members]
    rules = counted(monkeypatch, ranking.scorers["SequenceRules"], "rule_scores")
    sknn = counted(monkeypatch, ranking.scorers["SKNN"], "forward")
    rows = ranking.sweep(POINTS, say=lambda *a, **k: None)
    # one pass: each member and each scorer once per batch, whatever the number of points
    assert [len(c) for c in forwards] == [batches] * len(seeds)
    assert (len(rules), len(sknn)) == (batches, batches)
    each = ranking.sweep_each(POINTS, say=lambda *a, **k: None)
    assert [len(c) for c in forwards] == [batches * (1 + len(POINTS))] * len(seeds)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in rows] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in each]
    assert set(rows[0]["valid"]) == set(each[0]["valid"]) >= set(fusion_plan.METRICS)
    assert all(r["seconds"] == rows[0]["seconds"] > 0 for r in rows)  # the pass's, split evenly
    # every point ranks differently, so a weight or boost applied to the wrong point shows
    valid = [tuple(sorted(r["valid"].items())) for r in rows]
    assert len(set(valid)) == len(valid), valid
    # the test split: alpha 0 and the chosen point in one pass, the same as two evaluations
    assert ranking.tested((4.0, 1.0), "SequenceRules") == (
        ranking.at((0.0, None), ranking.loaded.test_data),
        ranking.at((4.0, 1.0), ranking.loaded.test_data, "SequenceRules"))
    assert ranking.tested((0.0, None)) == (ranking.at((0.0, None), ranking.loaded.test_data),) * 2


def test_a_new_scorer_list_makes_new_records(hybrid, tmp_path):
    plan = fusion_plan.load_plan(hybrid["config"])
    data = yaml.safe_load(hybrid["config"].read_text())
    data["scorers"] = SCORERS[:2]
    changed = tmp_path / "fusion.yaml"
    changed.write_text(yaml.safe_dump(data))
    assert (fusion_plan.settings_hash(fusion_plan.load_plan(changed))
            != fusion_plan.settings_hash(plan))
    del data["scorers"]
    changed.write_text(yaml.safe_dump(data))
    assert fusion_plan.load_plan(changed).scorers is None  # no key: the rules only, as before


def test_the_grid_is_alpha_0_then_each_scorer_in_order():
    plan = fusion_plan.parse_plan({"name": "g", "dataset": "d", "alphas": [1, 2],
                                   "scorers": ["VSKNN", {"SequenceRules": None},
                                               {"VSTAN": {"alphas": [3]}}]})
    assert scorer_grid(plan, [0.0, 5.0]) == [
        (None, (0.0, None)), ("VSKNN", (1.0, None)), ("VSKNN", (2.0, None)),
        ("SequenceRules", (1.0, 0.0)), ("SequenceRules", (2.0, 0.0)),
        ("SequenceRules", (1.0, 5.0)), ("SequenceRules", (2.0, 5.0)), ("VSTAN", (3.0, None))]
    assert scorer_of({"alpha": 0.0, "scorer": None}) is None
    assert scorer_of({"alpha": 0.5, "repeat_boost": 1.0}) == "SequenceRules"  # records before
    assert scorer_of({"chosen_alpha": 0.5, "chosen_scorer": "STAN"}) == "STAN"
    assert set(scorers.NAMES) == {"SequenceRules", "SKNN", "VSKNN", "STAN", "VSTAN"}


@pytest.mark.parametrize("value, message", [
    ("SKNN", "'scorers' must be a non-empty list"),
    (["KNN"], "unknown scorer 'KNN'"),
    ([{"SKNN": {"k": 0}}], "k must be an integer >= 1"),
    ([{"STAN": {"lambda_ipw": 1.0}}], "STAN has no option lambda_ipw"),
    ([{"SequenceRules": {"rule_steps": 3}}], "SequenceRules takes only 'alphas'"),
    ([{"SKNN": {"alphas": [0]}}], "the alphas of SKNN must be"),
    (["SKNN", "SKNN"], "each scorer may be listed once"),
    ([{"SKNN": None, "STAN": None}], "neither a scorer name"),
])
def test_bad_scorers_are_one_line_exit_2(tmp_path, value, message):
    config = write_config(tmp_path, scorers=value)
    rc, _, err = call(["--config", config, "--output", tmp_path / "o"])
    assert rc == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_committed_fusion_records_stay_valid_and_report_the_same(tmp_path):
    """The shipped config (no ``scorers``) hashes as its committed records were written, and
    the report and runs.csv rebuilt from them are the committed ones (but for the machine)."""
    config = REPO / "benchmarks" / "configs" / "fusion" / "cotrec.yaml"
    committed = REPO / "benchmarks" / "results" / "fusion-cotrec"
    plan = fusion_plan.load_plan(config)
    assert plan.scorers is None
    expected = fusion_plan.settings_hash(plan)
    for seed in plan.seeds:
        record = json.loads(fusion_plan.seed_path(committed, seed).read_text())
        assert record["settings_hash"] == expected
    out = tmp_path / "out"
    shutil.copytree(committed / "runs", out / "runs")
    shutil.copy(committed / "ensemble.json", out / "ensemble.json")
    fusion_report.write_report(plan, out, "python -m benchmarks.fusion --config "
                               "benchmarks/configs/fusion/cotrec.yaml")

    def steady(text: str) -> list[str]:  # the machine line says where it was rendered
        return [line for line in text.splitlines() if " cores, " not in line]

    assert steady((out / "report.md").read_text()) == steady((committed / "report.md").read_text())
    assert (out / "runs.csv").read_text() == (committed / "runs.csv").read_text()


@pytest.mark.parametrize("name", ["cotrec-hybrid.yaml", "cotrec-hybrid-ssm.yaml"])
def test_shipped_hybrid_config_is_valid_and_commented(name):
    path = REPO / "benchmarks" / "configs" / "fusion" / name
    plan = fusion_plan.load_plan(path)
    assert [spec.name for spec in plan.scorer_specs()] == list(scorers.NAMES)
    keys = [line for line in path.read_text().splitlines()
            if re.match(r"^\s*-?\s*[A-Za-z_][\w ]*:", line)]
    assert len(keys) > 10
    for line in keys:
        assert "#" in line, f"uncommented key: {line}"


@pytest.mark.parametrize("name, negatives", [("cotrec-ssm.yaml", None),
                                             ("cotrec-ssm-8192.yaml", 8192)])
def test_shipped_ssm_configs_are_valid_commented_and_name_their_estimator(name, negatives):
    path = REPO / "benchmarks" / "configs" / "fusion" / name
    plan = fusion_plan.load_plan(path)
    assert plan.settings["loss_type"] == "SSM"
    assert plan.settings["ssm_correction"] == "importance"
    assert plan.settings.get("num_negatives") == negatives
    for line in path.read_text().splitlines():
        if re.match(r"^\s*-?\s*[A-Za-z_][\w ]*:", line):
            assert "#" in line, f"uncommented key: {line}"


def test_the_first_estimators_config_keeps_its_recorded_identity():
    """cotrec-hybrid-ssm.yaml names ssm_correction: logq, the estimator its seeds ran with
    before the key existed; written out, it leaves the records' identity as it was."""
    path = REPO / "benchmarks" / "configs" / "fusion" / "cotrec-hybrid-ssm.yaml"
    plan = fusion_plan.load_plan(path)
    assert plan.settings["ssm_correction"] == "logq"
    records = REPO / "benchmarks" / "results" / "fusion-cotrec-hybrid-ssm" / "runs"
    for seed in plan.seeds:
        record = json.loads((records / f"seed{seed}.json").read_text())
        assert record["settings_hash"] == fusion_plan.settings_hash(plan)
