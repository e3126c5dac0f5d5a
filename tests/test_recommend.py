"""Model bundles and live recommendations: export, verified loading, and the Recommender API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tiny_data import write_tiny_benchmark
from recbole_srgnn import cli, train_cli
from recbole_srgnn.bundle import CHECKSUMS, METADATA, WEIGHTS, load_bundle
from recbole_srgnn.errors import InputError
from recbole_srgnn.files import sha256_of
from recbole_srgnn.provenance import seal
from recbole_srgnn.training import runs as training_runs
from recbole_srgnn.training.checkpoints import load_trained
from recbole_srgnn.training.export import export_bundle

REPO = Path(__file__).resolve().parents[1]
K = 10


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("recommend")
    write_tiny_benchmark(root / "data", "tiny", seed=3, sessions=(60, 12, 12), length=(2, 7))
    return root


def settings(root: Path, **extra) -> dict:
    return {"data_path": str(root / "data"), "checkpoint_dir": str(root / "saved"),
            "show_progress": False, "embedding_size": 8, "epochs": 2, **extra}


@pytest.fixture(scope="module", params=["SRGNN", "LastItem"])
def trained(request, tiny):
    name = request.param
    out = tiny / f"bundle-{name}"
    results = training_runs.run(name, "tiny", config_dict=settings(tiny), quiet=True,
                                result_file=tiny / f"{name}.json", export=out)
    assert results["bundle"] == str(out)
    assert json.loads((tiny / f"{name}.json").read_text())["bundle"] == str(out)  # on record
    return {"name": name, "checkpoint": results["checkpoint"], "bundle": out, "root": tiny}


@pytest.fixture(scope="module")
def srgnn(tiny):
    out = tiny / "bundle-srgnn-cli"
    results = training_runs.run("SRGNN", "tiny", config_dict=settings(tiny, seed=5), quiet=True,
                                result_file=tiny / "srgnn-cli.json")
    assert cli.main(["export", "--checkpoint", results["checkpoint"], "--output", str(out),
                     "--quiet"]) == 0
    return {"checkpoint": results["checkpoint"], "bundle": out}


def recommender(folder):
    from recbole_srgnn import Recommender

    return Recommender.load(folder)


def test_recommend_batch_equals_the_trained_models_full_sort_ranking(trained):
    loaded = load_trained(trained["checkpoint"], quiet=True)
    model = loaded.trainer.model.eval()
    test_set = loaded.test_data._dataset
    inter = test_set.inter_feat
    seq, lengths = inter["item_id_list"], inter["item_length"]
    with torch.no_grad():
        scores = model.full_sort_predict(inter).clone()
    scores[:, 0] = float("-inf")
    values, ids = scores.topk(K, dim=1)
    tokens = list(test_set.field2id_token["item_id"])
    sessions = [[tokens[i] for i in row[:n].tolist()] for row, n in zip(seq, lengths.tolist())]
    assert len(sessions) > 7
    results = recommender(trained["bundle"]).recommend_batch(sessions, k=K, batch_size=7)
    for result, row_ids, row_values in zip(results, ids.tolist(), values):
        assert result.items == [tokens[i] for i in row_ids]
        assert torch.allclose(torch.tensor(result.scores), row_values, atol=1e-5, rtol=0)
        assert not result.fallback and result.unknown_items == []
    bundle = json.loads((trained["bundle"] / METADATA).read_text())
    assert bundle["model"] == trained["name"] and bundle["items"] == [str(t) for t in tokens]
    assert bundle["data_fingerprint"] == loaded.trainer.data_fingerprint
    assert bundle["max_prefix_length"] == loaded.config["MAX_ITEM_LIST_LENGTH"]


def test_popularity_counts_targets_of_the_training_split(trained):
    bundle = json.loads((trained["bundle"] / METADATA).read_text())
    lines = (trained["root"] / "data" / "tiny" / "tiny.train.inter").read_text().splitlines()[1:]
    targets = [line.split("\t")[2] for line in lines]
    assert bundle["popularity"] == [targets.count(token) if i else 0
                                    for i, token in enumerate(bundle["items"])]


def test_unknown_items_fallback_truncation_and_exclusions(srgnn):
    rec = recommender(srgnn["bundle"])
    base = rec.recommend(["3", "4", "5"], k=K)
    with_unknown = rec.recommend(["3", "nope", "4", "[PAD]", 5], k=K)  # ints read as tokens
    assert with_unknown.unknown_items == ["nope", "[PAD]"] and not with_unknown.fallback
    assert with_unknown.pairs() == base.pairs() and list(with_unknown) == base.pairs()

    popularity = json.loads((srgnn["bundle"] / METADATA).read_text())["popularity"]
    for session in (["nope"], []):
        fallback = rec.recommend(session, k=K)
        assert fallback.fallback and fallback.unknown_items == session
        assert fallback.scores == sorted((float(c) for c in popularity[1:]), reverse=True)[:K]
        assert all(popularity[rec.items.index(item)] == score
                   for item, score in fallback.pairs())

    long = [str(i % 30 + 1) for i in range(rec.max_prefix_length + 25)]
    assert rec.recommend(long, k=K).pairs() == rec.recommend(long[-rec.max_prefix_length:], k=K).pairs()
    assert rec.recommend(long, k=K).pairs() != rec.recommend(long[:rec.max_prefix_length], k=K).pairs()

    everything = rec.recommend(["3", "4"], k=rec.n_items - 1)
    assert len(everything) == rec.n_items - 1 and "[PAD]" not in everything.items
    seen = rec.recommend(["3", "4"], k=rec.n_items - 1, exclude_seen=True, exclude=["7", "x"])
    assert set(everything.items) - set(seen.items) == {"3", "4", "7"}
    assert seen.items == [item for item in everything.items if item not in {"3", "4", "7"}]

    batch = rec.recommend_batch([["3", "4", "5"], ["nope"], long], k=K, batch_size=1)
    assert [r.pairs() for r in batch] == [base.pairs(), rec.recommend(["nope"], k=K).pairs(),
                                          rec.recommend(long, k=K).pairs()]


@pytest.mark.parametrize("call, message", [
    (lambda rec: rec.recommend(["3"], k=0), "k must be"),
    (lambda rec: rec.recommend(["3"], k=rec.n_items), "k must be"),
    (lambda rec: rec.recommend(["3"], k="5"), "k must be"),
    (lambda rec: rec.recommend("355", k=5), "not one string"),
    (lambda rec: rec.recommend([3.5], k=5), "strings"),
    (lambda rec: rec.recommend_batch([["3"]], k=5, batch_size=0), "batch_size"),
])
def test_bad_arguments_are_one_line_input_errors(srgnn, call, message):
    with pytest.raises(InputError, match=message) as caught:
        call(recommender(srgnn["bundle"]))
    assert "\n" not in str(caught.value)


def copy_of(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


def rewrite_sums(folder: Path) -> None:
    (folder / CHECKSUMS).write_text("".join(
        f"{sha256_of(folder / name)}  {name}\n" for name in (WEIGHTS, METADATA)))


def test_tampered_missing_and_unknown_format_bundles_are_refused(srgnn, tmp_path):
    folder = copy_of(srgnn["bundle"], tmp_path)
    load_bundle(folder)
    weights = torch.load(folder / WEIGHTS, weights_only=True)
    weights["item_embedding.weight"][3, 0] += 1.0
    torch.save(weights, folder / WEIGHTS)
    with pytest.raises(InputError, match="weights.pt does not match its SHA-256"):
        load_bundle(folder)

    weights["gnn.bias_in"] = torch.zeros(3)  # consistent checksums, weights of another shape
    torch.save(weights, folder / WEIGHTS)
    rewrite_sums(folder)
    with pytest.raises(InputError, match="does not fit SRGNN"):
        load_bundle(folder)

    folder = copy_of(srgnn["bundle"], tmp_path / "b")
    document = json.loads((folder / METADATA).read_text())
    (folder / METADATA).write_text(json.dumps({**document, "format_version": 2}))
    with pytest.raises(InputError, match="bundle.json does not match its SHA-256"):
        load_bundle(folder)
    rewrite_sums(folder)
    with pytest.raises(InputError, match="unknown format version 2"):
        load_bundle(folder)
    (folder / METADATA).write_text(json.dumps({**document, "items": document["items"][::-1]}))
    rewrite_sums(folder)
    with pytest.raises(InputError, match="vocabulary does not match"):
        load_bundle(folder)
    os.remove(folder / WEIGHTS)
    with pytest.raises(InputError, match="weights.pt is missing"):
        load_bundle(folder)
    with pytest.raises(InputError, match="lacks SHA256SUMS"):
        load_bundle(tmp_path)


def test_export_refuses_unsupported_models_with_one_line(srgnn, tmp_path, capsys):
    state = torch.load(srgnn["checkpoint"], weights_only=True)
    state["model"] = "SASRec"
    forged = tmp_path / "sasrec.pth"
    torch.save(seal(state), forged)
    with pytest.raises(InputError, match=r"SASRec cannot be exported .*supported: SRGNN, LastItem"):
        export_bundle(forged, tmp_path / "out")
    assert cli.main(["export", "--checkpoint", str(forged), "--output", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert train_cli.main(["--model=SASRec", f"--export={tmp_path / 'p'}"]) == 2
    assert "supported: SRGNN, LastItem" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("x")
    assert train_cli.main(["--model=SRGNN", f"--export={tmp_path / 'full'}"]) == 2
    assert "other files than a bundle" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


def test_export_again_replaces_the_bundle_with_the_same_files(srgnn, tmp_path):
    first = export_bundle(srgnn["checkpoint"], tmp_path / "b")
    again = export_bundle(srgnn["checkpoint"], tmp_path / "b")
    assert sorted(p.name for p in again.iterdir()) == sorted([WEIGHTS, METADATA, CHECKSUMS])
    assert sha256_of(first / WEIGHTS) == sha256_of(srgnn["bundle"] / WEIGHTS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temporary left


def test_loading_needs_no_recbole_and_the_package_import_stays_light(srgnn):
    code = ("import sys; sys.modules['recbole'] = None; import recbole_srgnn; "
            "assert 'torch' not in sys.modules and 'recbole_srgnn.recommend' not in sys.modules; "
            "from recbole_srgnn import Recommender; "
            f"r = Recommender.load({str(srgnn['bundle'])!r}).recommend(['3', '4'], k=3); "
            "print(r.items, r.fallback)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("False")
