"""The per-case analysis (``python -m benchmarks.per_case``): ranks against a naive count,
features, group metrics against RecBole's evaluator, bounds, and the command end to end."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import random
from pathlib import Path

import pytest
import torch
from test_fusion import write_config
from tiny_data import HEADER

from benchmarks import per_case as command
from recbole_srgnn.experiments import fusion_plan, per_case
from recbole_srgnn.experiments.fusion_rank import Ranking
from recbole_srgnn.training import runs as training_runs

SCORERS = ["SequenceRules", {"SKNN": {"k": 20, "alphas": [0.5]}}, {"STAN": {"alphas": [0.1]}}]


def write_repeating_benchmark(root: Path, name: str = "tiny", n_items: int = 40, seed: int = 3,
                              sessions: tuple[int, int, int] = (90, 20, 20)) -> None:
    """Sessions that mostly walk ``k -> k+1`` but often return to an earlier click (repeats),
    and a few items (the top ids) that only the test split clicks."""
    rng = random.Random(seed)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    sid = 0
    for split, count in zip(("train", "valid", "test"), sessions):
        rows = [HEADER]
        top = n_items if split == "test" else n_items - 4
        for _ in range(count):
            sid += 1
            items = [rng.randrange(1, top + 1)]
            for _ in range(rng.randint(1, 7)):
                draw = rng.random()
                if draw < 0.55:
                    items.append(items[-1] % top + 1)
                elif draw < 0.85:
                    items.append(rng.choice(items))
                else:
                    items.append(rng.randrange(1, top + 1))
            for j in range(1, len(items)):
                prefix = " ".join(map(str, items[:j]))
                rows.append(f"s{sid}\t{prefix}\t{items[j]}\t{sid * 100 + j}.0")
        (folder / f"{name}.{split}.inter").write_text("\n".join(rows) + "\n")


def call(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = command.main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------------------------ the ranks
def test_ranks_are_the_topk_position_or_a_count_behind_every_item_as_high():
    torch.manual_seed(0)
    scores = torch.rand(50, 30)
    scores[:, 0] = 5.0  # padding: never ranked, whatever it scores
    target = torch.randint(1, 30, (50,))
    ranks = per_case.target_ranks(scores.clone(), target, 5)
    for b in range(50):  # no ties: 1 + the items (padding excluded) scoring higher
        row = scores[b, 1:]
        assert ranks[b] == 1 + int((row > scores[b, target[b]]).sum())
    tied = torch.randint(0, 3, (200, 12)).float()  # many ties
    target = torch.randint(1, 12, (200,))
    ranks = per_case.target_ranks(tied.clone(), target, 4)
    for b in range(200):
        row = tied[b].clone()
        row[0] = float("-inf")
        top = torch.topk(row, 4).indices.tolist()  # RecBole's call, row by row
        if int(target[b]) in top:
            assert ranks[b] == top.index(int(target[b])) + 1
        else:
            assert ranks[b] == int((row >= row[target[b]]).sum()) and ranks[b] > 4
    # the short count (no pass beyond the top k): every target beyond it at k + 1
    capped = per_case.target_ranks(tied.clone(), target, 4, full=False)
    assert torch.equal(capped, ranks.clamp(max=5))


def test_case_features():
    seq = torch.tensor([[3, 4, 5, 0], [3, 4, 0, 0], [7, 0, 0, 0], [2, 9, 2, 1]])
    length = torch.tensor([3, 2, 1, 4])
    target = torch.tensor([5, 3, 8, 9])
    assert per_case.target_kind(seq, length, target) == [
        per_case.REPEAT_LAST, per_case.REPEAT_EARLIER, per_case.NEW, per_case.REPEAT_EARLIER]
    # a padding 0 after the prefix is no click: target 0 is never "seen" (not that targets are 0)
    assert per_case.target_kind(seq[:1], length[:1], torch.tensor([0])) == [per_case.NEW]
    # training cases of the sessions 3 4 5 and 7 8: targets, plus each session's first click
    train_seq = torch.tensor([[3, 0], [3, 4], [7, 0]])
    clicks = per_case.training_clicks(train_seq, torch.tensor([1, 2, 1]),
                                      torch.tensor([4, 5, 8]), 10)
    assert clicks.tolist() == [0, 0, 0, 1, 1, 1, 0, 1, 1, 0]


def _cases(ranks: dict, kind: list[str], clicks: list[int], lengths: list[int]) -> per_case.Cases:
    n = len(kind)
    return per_case.Cases(ranks={k: torch.tensor(v) for k, v in ranks.items()},
                          target=torch.arange(1, n + 1), length=torch.tensor(lengths), kind=kind,
                          clicks=torch.tensor(clicks), order=list(ranks))


def test_groups_wins_and_bounds_by_hand():
    new, last = per_case.NEW, per_case.REPEAT_LAST
    cases = _cases({"m": [1, 20, 3, 11], "s": [2, 1, 30, 12]}, [new, last, new, last],
                   [0, 5, 120, 0], [1, 2, 3, 12])
    rows = {(r["grouping"], r["bucket"], r["ranker"]): r
            for r in per_case.group_rows(cases, ["m", "s"], "m")}
    everything = rows[("all", "all", "s")]
    assert everything["hit@10"] == 0.5 and everything["mrr@10"] == pytest.approx((0.5 + 1) / 4)
    assert everything["ref_better"] == 0.75 and everything["better"] == 0.25
    assert everything["ref_only_top"] == 0.25 and everything["only_top"] == 0.25
    assert rows[("repeat", "repeat", "m")]["cases"] == 2
    assert rows[("repeat", "repeat", "m")]["hit@10"] == 0.0
    assert rows[("training clicks of the target", "0", "m")]["share"] == 0.5
    assert rows[("prefix length", "10+", "m")]["cases"] == 1
    assert rows[("prefix length", "5-9", "m")]["cases"] == 0  # empty buckets are kept
    assert per_case.oracle(cases.ranks["m"], cases.ranks["s"]).tolist() == [1, 1, 3, 11]
    buckets = per_case.groupings(cases)["repeat"]
    choice = per_case.best_per_bucket(cases, ["m", "s"], buckets, "mrr")
    assert choice == {"new": "m", "repeat": "s"}
    assert per_case.gated(cases, buckets, choice).tolist() == [1, 1, 3, 12]
    lost = per_case.unreachable(cases)
    assert lost == {"never_in_training": 0.5, "never_in_training_and_new": 0.25,
                    "hit@10_ceiling": 0.75}
    assert per_case.metrics(torch.tensor([1, 2, 11]), [10]) == {
        "hit@10": round(2 / 3, 4), "mrr@10": 0.5, "ndcg@10": round((1 + 1 / 1.5849625007) / 3, 4)}


# ---------------------------------------------------------------------------- on a tiny config
@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    root = tmp_path_factory.mktemp("per-case")
    write_repeating_benchmark(root / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        config = write_config(root, seeds=[1], scorers=SCORERS, alphas=[0.2, 1.0],
                              repeat_boosts=[1.0, 2.0], references={},
                              settings={"data_path": str(root / "data"), "epochs": 2,
                                        "embedding_size": 8, "train_batch_size": 64,
                                        "show_progress": False})
        # no fusion results yet: the command runs the fusion runner for seed 1 first
        rc, out, err = call(["--config", config, "--fusion_output", root / "fusion",
                             "--output", root / "out"])
        rules = training_runs.run("SequenceRules", "tiny", config_dict={
            "data_path": str(root / "data"), "checkpoint_dir": str(root / "saved"),
            "repeat_boost": 2.0, "show_progress": False}, quiet=True,
            result_file=root / "rules.json")
        yield {"rc": rc, "stdout": out, "stderr": err, "config": config, "root": root,
               "out": root / "out", "fusion": root / "fusion", "rules": rules}


def test_the_command_trains_what_is_missing_and_reproduces_the_record(analysed):
    assert analysed["rc"] == 0, analysed["stderr"]
    assert "running the fusion runner for it" in analysed["stdout"]
    record = json.loads((analysed["fusion"] / "runs" / "seed1.json").read_text())
    summary = json.loads((analysed["out"] / "summary.json").read_text())
    check = summary["reproduction"]
    assert check["exact"] and check["max_diff"] == 0.0
    test_rows = {r["ranker"]: r for r in check["rows"] if r["split"] == "test"}
    # Hit@10 / MRR@10 (and every other recorded metric) from the ranks = RecBole's evaluation
    for name, key in (("SR-GNN", "test_plain"), ("fused", "test_fused")):
        for metric, value in record[key].items():
            assert test_rows[name]["recomputed"][metric] == value
    overall = summary["overall"]
    assert overall["SR-GNN"]["hit@10"] == pytest.approx(record["test_plain"]["hit@10"], abs=5e-5)
    assert overall["fused"]["mrr@10"] == pytest.approx(record["test_fused"]["mrr@10"], abs=5e-5)
    # the swept validation points the analysis ranks again are checked too: alpha 0, the chosen
    assert [r["ranker"] for r in check["rows"] if r["split"] == "valid"] == ["SR-GNN", "fused"]
    # the rules alone (many tied scores) rank as RecBole's evaluator ranks the SequenceRules model
    rules = analysed["rules"]["test_result"]
    assert round(summary["overall"]["rules b2"]["hit@10"], 4) == rules["hit@10"]
    assert round(summary["overall"]["rules b2"]["mrr@10"], 4) == rules["mrr@10"]


def test_ranks_equal_a_naive_per_case_count(analysed):
    plan = fusion_plan.load_plan(analysed["config"])
    model = next((analysed["fusion"] / "models").glob("seed1-*.pth"))
    ranking = Ranking(plan, [model], checkpoint_dir=str(analysed["root"] / "scratch"))
    net, data = ranking.members[0], ranking.loaded.test_data
    blends = [per_case.Blend("m"), per_case.Blend("f", scorer="SKNN", weight=0.5),
              per_case.Blend("n", scorer="SKNN", weight=0.5, normalised=True)]
    cases = per_case.collect(net, ranking.scorers, data, blends, torch.zeros(net.n_items,
                             dtype=torch.long), 20, reach="SKNN")
    naive_m, naive_f, naive_n, reached, row = [], [], [], [], 0
    net.eval()
    with torch.no_grad():
        for interaction, _, _, target in data:
            seq, length = interaction[net.ITEM_SEQ], interaction[net.ITEM_SEQ_LEN]
            probs = torch.softmax(net.full_scores(seq, length), -1)
            knn = ranking.scorers["SKNN"](seq, length)
            for b in range(len(target)):  # one case at a time
                t = int(target[b])
                top = float(knn[b].max()) or 1.0
                for scores, out in ((probs[b], naive_m), (probs[b] + 0.5 * knn[b], naive_f),
                                    (probs[b] + 0.5 * (knn[b] / top), naive_n)):
                    others = torch.cat([scores[1:t], scores[t + 1:]])
                    assert not bool((others == scores[t]).any())  # no ties: the count is the rank
                    out.append(1 + int((others > scores[t]).sum()))
                reached.append(bool(knn[b, t] > 0))
                row += 1
    assert cases.ranks["m"].tolist() == naive_m and cases.ranks["f"].tolist() == naive_f
    assert cases.ranks["n"].tolist() == naive_n and naive_n != naive_f
    assert cases.reached.tolist() == reached and cases.size == row
    assert cases.order == ["m", "f", "n"]


def test_the_report_groups_and_bounds(analysed):
    summary = json.loads((analysed["out"] / "summary.json").read_text())
    rankers = summary["rankers"]
    assert rankers == ["SR-GNN", "fused", "rules b1", "rules b2", "SKNN", "STAN"]
    with open(analysed["out"] / "per_case.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == command.per_case_report.CSV_FIELDS
    for grouping in {r["grouping"] for r in rows}:
        mine = [r for r in rows if r["grouping"] == grouping and r["ranker"] == "SR-GNN"]
        assert sum(int(r["cases"]) for r in mine) == summary["cases"]
        assert sum(float(r["share"]) for r in mine) == pytest.approx(1.0, abs=1e-5)
    groups = {r["grouping"] for r in rows}
    assert {"target", "repeat", "prefix length", "training clicks of the target",
            "target in the kNN neighbours"} <= groups
    for r in (r for r in rows if r["grouping"] == "all"):
        expected = summary["overall"][r["ranker"]]["hit@10"]
        assert float(r["hit@10"]) == pytest.approx(expected, abs=1e-6)
    # the tiny data has repeats and test-only items: both groups are filled
    repeat = next(r for r in rows if r["bucket"] == "repeat" and r["ranker"] == "SR-GNN")
    assert 0 < int(repeat["cases"]) < summary["cases"]
    assert summary["unreachable"]["never_in_training"] > 0
    for name in rankers[1:]:
        oracle, gate = summary["oracles"][name], summary["gates"][name]
        for metric, key in (("hit", "hit@10"), ("mrr", "mrr@10")):
            alone = max(summary["overall"]["SR-GNN"][key], summary["overall"][name][key])
            assert oracle[key] >= gate[metric]["ceiling"][key] - 1e-12
            assert gate[metric]["ceiling"][key] >= max(gate[metric]["test"][key], alone) - 1e-12
    kind = summary["gate_kind_all"]  # three buckets instead of two: a ceiling at least as high
    for metric, key in (("hit", "hit@10"), ("mrr", "mrr@10")):
        assert kind[metric]["ceiling"][key] >= summary["gate_all"][metric]["ceiling"][key] - 1e-12
        assert summary["oracle_all"][key] >= kind[metric]["ceiling"][key] - 1e-12
    # what the goals need, from the fused ranker's two groups
    assert summary["needed"]["ranker"] == "fused"
    goals = summary["needed"]["goals"]
    assert {m: g["goal"] for m, g in goals.items()} == {"hit@10": 0.52, "mrr@10": 0.32}
    for metric, g in goals.items():
        new, repeat = g["new_share"], 1 - g["new_share"]
        assert g["now"] == pytest.approx(summary["overall"]["fused"][metric])
        assert new * g["new_now"] + repeat * g["repeat_now"] == pytest.approx(g["now"])
        assert new * g["new_needed"] + repeat * g["repeat_now"] == pytest.approx(g["goal"])
        assert new * g["new_now"] + repeat * g["repeat_needed"] == pytest.approx(g["goal"])
        assert new * g["new_needed_repeats_perfect"] + repeat == pytest.approx(g["goal"])
    report = (analysed["out"] / "report.md").read_text()
    assert report.startswith("# Per-case analysis: `fusion-test`, seed 1")
    assert "### (e) A gate that knows the target's kind" in report
    assert "| Hit@10 | 0.52 | " in report
    assert "## Reproduction of the record" in report and "all equal." in report
    assert "### By target" in report and "### (a) Per-case oracle" in report
    knn = summary["normalised_knn"]
    assert [row["scorer"] for row in knn["table"]] == ["SKNN", "STAN"]
    points = [(v, -i, f"SR-GNN + {row['scorer']}/max {a}") for i, (row, a, v) in enumerate(
        (row, a, v) for row in knn["table"] for a, v in row["valid_by_alpha"].items())]
    assert len(points) == 2 * len(command.NORMALISED_ALPHAS)
    assert knn["chosen"] == max(points)[2] and f"`{knn['chosen']}`" in report
    assert set(knn["chosen_test"]) >= {"hit@10", "mrr@10"}
    record = json.loads((analysed["fusion"] / "runs" / "seed1.json").read_text())
    assert knn["table"][0]["raw_valid"] == record["scorers"][1]["best_valid"]  # SKNN's, swept
    assert knn["record_valid"] == max(r["valid"]["mrr@10"] for r in record["sweep"])
    # no per-case rows are written: only aggregates
    assert sorted(p.name for p in analysed["out"].iterdir()) == [
        "per_case.csv", "report.md", "summary.json"]


def test_a_missing_model_is_trained_again_and_still_reproduces(analysed, tmp_path):
    fusion = tmp_path / "fusion"
    (fusion / "runs").mkdir(parents=True)
    (fusion / "runs" / "seed1.json").write_text(
        (analysed["fusion"] / "runs" / "seed1.json").read_text())
    rc, out, err = call(["--config", analysed["config"], "--fusion_output", fusion,
                         "--output", tmp_path / "out", "--quiet"])
    assert rc == 0, err
    assert len(list((fusion / "models").glob("seed1-*.pth"))) == 1
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["reproduction"]["exact"]


@pytest.mark.parametrize("extra, message", [
    (["--seed", "7"], "--seed 7 is not in the config's seeds [1]"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--goal_mrr", "1.5"], "--goal_mrr must be in (0, 1], got 1.5"),
])
def test_bad_options_are_one_line_exit_2(analysed, tmp_path, extra, message):
    rc, _, err = call(["--config", analysed["config"], "--fusion_output", analysed["fusion"],
                       "--output", tmp_path / "o", *extra])
    assert rc == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_a_model_that_does_not_reproduce_its_record_is_refused(analysed, tmp_path):
    fusion = tmp_path / "fusion"
    (fusion / "runs").mkdir(parents=True)
    record = json.loads((analysed["fusion"] / "runs" / "seed1.json").read_text())
    record["test_plain"] = {**record["test_plain"], "hit@10": record["test_plain"]["hit@10"] + 0.01}
    (fusion / "runs" / "seed1.json").write_text(json.dumps(record))
    (fusion / "models").mkdir()
    for model in (analysed["fusion"] / "models").iterdir():
        (fusion / "models" / model.name).symlink_to(model)
    rc, _, err = call(["--config", analysed["config"], "--fusion_output", fusion,
                       "--output", tmp_path / "o", "--quiet"])
    assert rc == 2 and "does not reproduce its record" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_the_committed_analysis_is_of_the_committed_record():
    repo = Path(__file__).resolve().parents[1]
    out = repo / "benchmarks" / "results" / "per-case-cotrec"
    if not (out / "summary.json").is_file():
        pytest.skip("no committed per-case analysis")
    summary = json.loads((out / "summary.json").read_text())
    record = json.loads((repo / "benchmarks" / "results" / "fusion-cotrec-hybrid-ssm" / "runs"
                         / f"seed{summary['seed']}.json").read_text())
    plan = fusion_plan.load_plan(repo / "benchmarks" / "configs" / "fusion"
                                 / "cotrec-hybrid-ssm.yaml")
    assert summary["model"] == f"seed{summary['seed']}-{fusion_plan.settings_hash(plan)}.pth"
    assert summary["reproduction"]["exact"]
    tested = {r["ranker"]: r["recomputed"] for r in summary["reproduction"]["rows"]
              if r["split"] == "test"}
    assert tested["SR-GNN"]["hit@10"] == record["test_plain"]["hit@10"]
    assert tested["fused"]["mrr@10"] == record["test_fused"]["mrr@10"]
