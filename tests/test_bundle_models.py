"""Bundles of every exportable model: RecBole's baselines, the non-neural scorers, SR-GNN + rules.

Each model is trained for an epoch or two on tiny data and exported; the bundle's
``recommend_batch`` must rank the test split as the trained RecBole model's
``full_sort_predict`` does (SR-GNN + rules: as the fusion runner's ``FusedRanker``).
"""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_model import FakeDataset, batch, make_config
from tiny_data import write_tiny_benchmark
from recbole_srgnn import cli, export_cli, nn_recbole
from recbole_srgnn.bundle import METADATA, SUPPORTED_MODELS, WEIGHTS, load_bundle
from recbole_srgnn.errors import InputError
from recbole_srgnn.experiments import fusion_rank
from recbole_srgnn.model.fused import FusedRanker
from recbole_srgnn.model.rules import RuleScorer
from recbole_srgnn.networks import NETWORKS
from recbole_srgnn.provenance import seal
from recbole_srgnn.training import export as training_export
from recbole_srgnn.training import models as model_names
from recbole_srgnn.training import runs as training_runs
from recbole_srgnn.training.checkpoints import load_trained

REPO = Path(__file__).resolve().parents[1]
K = 20
NUM_ITEMS = 30
EXTRA = {  # tiny networks; the non-neural models need a single (zero-loss) epoch
    "GRU4Rec": {"hidden_size": 8},
    "NARM": {"hidden_size": 8},
    "RecBoleSRGNN": {},
    "SequenceRules": {"epochs": 1},
    "SessionPop": {"epochs": 1},
}


@pytest.mark.parametrize("name, options, network", [
    ("GRU4Rec", {"hidden_size": 12, "num_layers": 2, "dropout_prob": 0.3},
     lambda: nn_recbole.GRU4Rec(NUM_ITEMS, 16, 12, 2, 0.3)),
    ("NARM", {"hidden_size": 12, "n_layers": 1, "dropout_probs": [0.25, 0.5]},
     lambda: nn_recbole.NARM(NUM_ITEMS, 16, 12, 1, [0.25, 0.5])),
    ("RecBoleSRGNN", {"step": 2}, lambda: nn_recbole.RecBoleSRGNN(NUM_ITEMS, 16, 2)),
])
def test_recbole_networks_score_as_recbole_models_with_their_weights(name, options, network):
    torch.manual_seed(0)
    model = model_names.resolve_model(name)(make_config(**options), FakeDataset(NUM_ITEMS)).eval()
    torch.manual_seed(1)  # other initial weights: only the loaded ones may matter
    plain = network().eval()
    assert list(plain.state_dict()) == list(model.state_dict())
    plain.load_state_dict(model.state_dict(), strict=True)
    seq = torch.tensor([[3, 5, 3, 7, 0, 0], [1, 0, 0, 0, 0, 0], [9, 9, 2, 4, 8, 29],
                        [4, 5, 4, 5, 4, 0]])
    lengths = torch.tensor([4, 1, 6, 5])
    longer = torch.cat([seq, torch.zeros(4, 5, dtype=torch.long)], dim=1)  # more padding
    with torch.no_grad():
        expected = model.full_sort_predict(batch(seq, lengths))
        assert torch.allclose(plain(seq, lengths), expected, atol=1e-6, rtol=0)
        assert torch.allclose(plain(longer, lengths), expected, atol=1e-6, rtol=0)
        assert torch.allclose(plain(seq[2:3], lengths[2:3]), expected[2:3], atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle-models")
    write_tiny_benchmark(root / "data", "tiny", seed=4, sessions=(60, 12, 12), length=(2, 7))
    return root


def settings(root: Path, **extra) -> dict:
    return {"data_path": str(root / "data"), "checkpoint_dir": str(root / "saved"),
            "show_progress": False, "embedding_size": 8, "epochs": 2, **extra}


@pytest.fixture(scope="module", params=list(EXTRA))
def trained(request, tiny):
    name = request.param
    out = tiny / f"bundle-{name}"
    results = training_runs.run(name, "tiny", config_dict=settings(tiny, **EXTRA[name]),
                                quiet=True, result_file=tiny / f"{name}.json", export=out)
    assert results["bundle"] == str(out)
    return {"name": name, "checkpoint": results["checkpoint"], "bundle": out}


@pytest.fixture(scope="module")
def fused(tiny):
    results = training_runs.run("SRGNN", "tiny", config_dict=settings(tiny), quiet=True,
                                result_file=tiny / "srgnn.json")
    out = tiny / "bundle-srgnn-rules"
    assert cli.main(["export", "--checkpoint", results["checkpoint"], "--output", str(out),
                     "--scorer", "SequenceRules", "--alpha", "0.3", "--rule_repeat_boost", "2",
                     "--quiet"]) == 0
    return {"checkpoint": results["checkpoint"], "bundle": out}


KNN_OPTIONS = {"k": 10, "sample_size": 40, "lambda_idf": 1.5, "lambda_snh": 2.0}


@pytest.fixture(scope="module")
def fused_knn(fused, tiny):
    out = tiny / "bundle-srgnn-vstan"
    options = [f"{key}={value}" for key, value in KNN_OPTIONS.items()]
    assert cli.main(["export", "--checkpoint", fused["checkpoint"], "--output", str(out),
                     "--scorer", "VSTAN", "--alpha", "0.05", "--scorer_option", *options[:2],
                     "--scorer_option", *options[2:], "--quiet"]) == 0
    return {"checkpoint": fused["checkpoint"], "bundle": out}


def reference_ranking(loaded, reference_model):
    """(sessions as tokens, top-K items, top-K scores) of the test split by ``reference_model``."""
    test_set = loaded.test_data._dataset
    inter = test_set.inter_feat
    with torch.no_grad():
        scores = reference_model.full_sort_predict(inter).clone()
    scores[:, 0] = float("-inf")
    values, ids = scores.topk(K, dim=1)
    tokens = list(test_set.field2id_token["item_id"])
    sessions = [[tokens[i] for i in row[:n].tolist()]
                for row, n in zip(inter["item_id_list"], inter["item_length"].tolist())]
    return sessions, [[tokens[i] for i in row] for row in ids.tolist()], values


def assert_same_ranking(folder: Path, sessions, items, values) -> None:
    from recbole_srgnn import Recommender

    assert len(sessions) > 7
    results = Recommender.load(folder).recommend_batch(sessions, k=K, batch_size=7)
    for result, row_items, row_values in zip(results, items, values):
        assert result.items == row_items
        assert torch.allclose(torch.tensor(result.scores), row_values, atol=1e-5, rtol=0)
        assert not result.fallback and result.unknown_items == []


def test_recommend_batch_equals_the_trained_models_full_sort_ranking(trained):
    loaded = load_trained(trained["checkpoint"], quiet=True)
    model = loaded.trainer.model.eval()
    assert_same_ranking(trained["bundle"], *reference_ranking(loaded, model))
    bundle = json.loads((trained["bundle"] / METADATA).read_text())
    assert bundle["model"] == trained["name"]
    weights = torch.load(trained["bundle"] / WEIGHTS, weights_only=True)
    if trained["name"] in nn_recbole.NETWORKS:  # RecBole's weights, as they are
        assert list(weights) == list(model.state_dict())
        assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    elif trained["name"] == "SequenceRules":  # the table the model counted (not in its state_dict)
        assert torch.equal(weights["rule_col"], model.rules.rule_col)
        assert bundle["config"]["repeat_boost"] == 1.0 and bundle["config"]["rule_steps"] == 10
    else:
        assert list(weights) == ["item_count"]
        assert torch.equal(weights["item_count"], model.item_count)


def test_srgnn_with_rules_equals_the_fusion_runners_ranking(fused):
    loaded = load_trained(fused["checkpoint"], quiet=True)
    model = loaded.trainer.model.eval()
    rules = RuleScorer.from_dataset(model, loaded.train_data._dataset, 10, 2.0)
    ranker = FusedRanker([model], rules, alpha=0.3)
    assert_same_ranking(fused["bundle"], *reference_ranking(loaded, ranker))
    bundle = json.loads((fused["bundle"] / METADATA).read_text())
    assert bundle["model"] == "Fused" and bundle["config"]["alpha"] == 0.3
    assert [m["model"] for m in bundle["config"]["members"]] == ["SRGNN"]
    assert bundle["config"]["scorer"]["model"] == "SequenceRules"
    assert bundle["config"]["scorer"]["config"]["repeat_boost"] == 2.0
    # the same defaults as the fusion runner
    assert (training_export.DEFAULT_RULE_STEPS, training_export.DEFAULT_REPEAT_BOOST) == (
        fusion_rank.DEFAULT_STEPS, fusion_rank.DEFAULT_BOOST)


def test_srgnn_with_a_knn_scorer_equals_the_fusion_runners_ranking(fused_knn):
    from recbole_srgnn.model.scorers import build_scorer

    loaded = load_trained(fused_knn["checkpoint"], quiet=True)
    model = loaded.trainer.model.eval()
    scorer = build_scorer("VSTAN", KNN_OPTIONS, model, loaded.train_data._dataset,
                          loaded.config["TIME_FIELD"])
    ranker = FusedRanker([model], scorer, alpha=0.05)
    sessions, items, values = reference_ranking(loaded, ranker)
    plain = reference_ranking(loaded, FusedRanker([model]))[1]
    assert items != plain  # the scorer changes the ranking: the comparison can fail
    assert_same_ranking(fused_knn["bundle"], sessions, items, values)
    bundle = json.loads((fused_knn["bundle"] / METADATA).read_text())
    assert bundle["model"] == "Fused" and bundle["config"]["alpha"] == 0.05
    spec = bundle["config"]["scorer"]
    assert spec["model"] == "VSTAN"
    assert {key: spec["config"][key] for key in KNN_OPTIONS} == KNN_OPTIONS
    assert spec["config"]["lambda_inh"] == 2.05  # VSTAN's default where no option is given
    weights = torch.load(fused_knn["bundle"] / WEIGHTS, weights_only=True)
    for name in scorer.fields:  # the session index, as plain tensors
        assert torch.equal(weights[f"scorer.{name}"], getattr(scorer, name))


def test_knn_bundles_load_without_recbole(fused_knn):
    code = ("import sys; sys.modules['recbole'] = None; from recbole_srgnn import Recommender; "
            f"rec = Recommender.load({str(fused_knn['bundle'])!r}); "
            "print(rec.recommend(['3', '4'], k=3).fallback)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_scorer_options_and_the_old_rule_spellings(fused, tmp_path, capsys):
    assert export_cli.SCORER_CHOICES == training_export.FUSION_SCORERS
    # --rule_steps/--rule_repeat_boost are the rules' scorer options under their old names
    assert training_export.check_scorer("SRGNN", "SequenceRules", 1.0, 3, 2.0) == \
        training_export.check_scorer("SRGNN", "SequenceRules", 1.0, 10, 0.0,
                                     {"rule_steps": 3, "repeat_boost": 2.0})
    assert training_export.check_scorer("SRGNN", "SKNN", 1.0, 10, 0.0, {"k": 7}) == {
        "k": 7, "sample_size": 500}
    for argv, message in [
        (["--scorer_option", "k=5"], "give --scorer too"),
        (["--scorer", "SKNN", "--alpha", "1", "--scorer_option", "k"], "expected KEY=VALUE"),
        (["--scorer", "SKNN", "--alpha", "1", "--scorer_option", "lambda_spw=2"],
         "SKNN has no option lambda_spw"),
        (["--scorer", "STAN", "--alpha", "1", "--scorer_option", "k=0"],
         "k must be an integer >= 1"),
        (["--scorer", "VSKNN", "--alpha", "1", "--rule_steps", "3"], "the rules' options"),
        (["--scorer", "SequenceRules", "--alpha", "1", "--scorer_option", "k=3"],
         "SequenceRules has no option k"),
    ]:
        assert cli.main(["export", "--checkpoint", fused["checkpoint"], *argv,
                         "--output", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and err.count("\n") == 0, err
    assert not (tmp_path / "o").exists()


def test_bundles_load_without_recbole(fused):
    code = ("import sys; sys.modules['recbole'] = None; from recbole_srgnn import Recommender; "
            "from recbole_srgnn.networks import NETWORKS; "
            "import recbole_srgnn.nn_recbole, recbole_srgnn.nn_scorers; "
            f"rec = Recommender.load({str(fused['bundle'])!r}); "
            "print(rec.recommend(['3', '4'], k=3).fallback, "
            "sorted(NETWORKS))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"False {sorted(NETWORKS)}"


def test_export_refusals_are_one_line_and_name_the_supported_models(fused, tmp_path, capsys):
    assert SUPPORTED_MODELS == ("SRGNN", "LastItem", "GRU4Rec", "NARM", "RecBoleSRGNN",
                                "SequenceRules", "SessionPop")
    state = torch.load(fused["checkpoint"], weights_only=True)
    state["model"] = "SASRec"
    forged = tmp_path / "sasrec.pth"
    torch.save(seal(state), forged)
    supported = "supported: " + ", ".join(SUPPORTED_MODELS) + ")"
    with pytest.raises(InputError, match="SASRec cannot be exported .*" + re.escape(supported)):
        training_export.export_bundle(forged, tmp_path / "out")
    state["model"] = "GRU4Rec"
    torch.save(seal(state), tmp_path / "gru.pth")
    for argv, message in [
        (["--checkpoint", str(forged)], supported),
        (["--checkpoint", str(tmp_path / "gru.pth"), "--scorer", "SequenceRules", "--alpha", "1"],
         "GRU4Rec cannot be fused with a scorer (fusable: SRGNN)"),
        (["--checkpoint", fused["checkpoint"], "--alpha", "0.5"], "give --scorer too"),
        (["--checkpoint", fused["checkpoint"], "--rule_steps", "3"], "give --scorer too"),
        (["--checkpoint", fused["checkpoint"], "--scorer", "SequenceRules"], "--alpha must be > 0"),
        (["--checkpoint", fused["checkpoint"], "--scorer", "SequenceRules", "--alpha", "1",
          "--rule_steps", "0"], "--rule_steps must be >= 1"),
        (["--checkpoint", fused["checkpoint"], "--scorer", "SessionPop"], "invalid choice"),
    ]:
        assert cli.main(["export", *argv, "--output", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and err.count("\n") == 0, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()
    defaults = export_cli.build_parser().parse_args(["--checkpoint", "c", "--output", "o"])
    assert (defaults.rule_steps, defaults.rule_repeat_boost, defaults.alpha) == (
        training_export.DEFAULT_RULE_STEPS, training_export.DEFAULT_REPEAT_BOOST, 0.0)
    help_text = " ".join(export_cli.build_parser().format_help().split())
    assert all(name in help_text for name in SUPPORTED_MODELS) and "--scorer" in help_text


def test_bundle_configs_that_do_not_fit_are_one_line_errors(fused, tmp_path):
    from recbole_srgnn.bundle import build_network

    config = json.loads((fused["bundle"] / METADATA).read_text())["config"]
    bad = [({**config, "alpha": -1}, "alpha must be >= 0"),
           ({**config, "scorer": {"model": "SRGNN", "config": {}}}, "scorer model 'SRGNN'"),
           ({**config, "members": [{"model": "Fused", "config": {}}]}, "member model 'Fused'"),
           ({**config, "n_items": 5}, "n_items must be the bundle's")]
    for broken, message in bad:
        with pytest.raises(InputError, match=message):
            build_network("Fused", broken)
    assert set(NETWORKS) == set(SUPPORTED_MODELS) | {"Fused"}
    assert load_bundle(fused["bundle"]).network.alpha == 0.3
