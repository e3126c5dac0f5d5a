"""The per-case analysis' numbers and report: group tables, wins, upper bounds, the kNN check.

:func:`summarise` turns the ranked cases of the validation and test splits
(:mod:`recbole_srgnn.experiments.per_case`) into plain numbers: every ranker's test metrics per
group of cases, the oracle of the model and each other ranker, a repeat/new gate chosen on
validation (and its ceiling, chosen on test), the targets no model of the training split can
reach. :func:`markdown` and :func:`csv_rows` write them; nothing here ranks or reads data.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from recbole_srgnn.experiments.per_case import (
    K,
    REPEAT_EARLIER,
    REPEAT_LAST,
    NEW,
    Cases,
    best_per_bucket,
    gated,
    group_rows,
    groupings,
    hit_mrr,
    oracle,
    unreachable,
)
from recbole_srgnn.experiments.fusion_plan import label
from recbole_srgnn.experiments.tables import csv_text, md_table

HIT, MRR = f"hit@{K}", f"mrr@{K}"
CSV_FIELDS = ["grouping", "bucket", "cases", "share", "ranker", HIT, MRR,
              "ref_better", "better", "ref_only_top", "only_top"]


def _pair(ranks) -> dict[str, float]:
    hit, mrr = hit_mrr(ranks)
    return {HIT: hit, MRR: mrr}


def gates(valid: Cases, test: Cases, rankers: Sequence[str],
          grouping: str = "repeat") -> dict[str, dict]:
    """A gate that knows only the bucket of ``grouping`` a case is in (default: whether the
    target is a repeat), between ``rankers`` (each bucket's best): chosen on validation and
    tested, and its ceiling (chosen on test), per metric."""
    out = {}
    valid_buckets, test_buckets = groupings(valid)[grouping], groupings(test)[grouping]
    for metric in ("hit", "mrr"):
        chosen = best_per_bucket(valid, rankers, valid_buckets, metric)
        ceiling = best_per_bucket(test, rankers, test_buckets, metric)
        out[metric] = {"chosen_on_valid": chosen, "test": _pair(gated(test, test_buckets, chosen)),
                       "ceiling_choice": ceiling,
                       "ceiling": _pair(gated(test, test_buckets, ceiling))}
    return out


def needed(test: Cases, ranker: str, goals: Mapping[str, float]) -> dict[str, dict]:
    """What ``ranker`` would need to reach ``goals`` (``hit@10``/``mrr@10`` -> value): its value
    on the new targets with its repeats as they are (or perfect, 1), and on the repeats with its
    new targets as they are (a value above 1 is out of reach)."""
    buckets = dict(groupings(test)["repeat"])
    repeat = float(buckets["repeat"].double().mean())
    new = 1.0 - repeat
    out = {}
    for metric, goal in goals.items():
        index = [HIT, MRR].index(metric)
        now_new = hit_mrr(test.ranks[ranker][buckets["new"]])[index]
        now_repeat = hit_mrr(test.ranks[ranker][buckets["repeat"]])[index]
        out[metric] = {"goal": goal, "now": hit_mrr(test.ranks[ranker])[index],
                       "new_share": new, "new_now": now_new, "repeat_now": now_repeat,
                       "new_needed": (goal - repeat * now_repeat) / new if new else float("nan"),
                       "new_needed_repeats_perfect": (goal - repeat) / new if new else float("nan"),
                       "repeat_needed": (goal - new * now_new) / repeat if repeat else float("nan")}
    return out


def summarise(valid: Cases, test: Cases, reference: str, others: Sequence[str],
              goals: Mapping[str, float] | None = None, fused: str | None = None) -> dict:
    """The analysis' numbers: ``reference`` (the model alone) against each of ``others``; with
    ``goals``, what ranker ``fused`` (default the reference) needs to reach them."""
    rankers = [reference, *others]
    missed = {}  # cases no ranker has in its top K, per target kind
    best_of_all = oracle(*(test.ranks[r] for r in rankers))
    for bucket, mask in groupings(test)["target"]:
        missed[bucket] = {"share_of_all": float(((best_of_all > K) & mask).double().mean()),
                          "share_of_bucket": (float((best_of_all[mask] > K).double().mean())
                                              if bool(mask.any()) else float("nan"))}
    return {
        "cases": test.size,
        "overall": {r: _pair(test.ranks[r]) for r in rankers},
        "groups": group_rows(test, rankers, reference),
        "oracles": {r: _pair(oracle(test.ranks[reference], test.ranks[r])) for r in others},
        "oracle_all": _pair(best_of_all),
        "gates": {r: gates(valid, test, [reference, r]) for r in others},
        "gate_all": gates(valid, test, rankers),
        "gate_kind_all": gates(valid, test, rankers, "target"),
        "unreachable": unreachable(test),
        "missed_by_all": missed,
        "needed": {"ranker": fused or reference,
                   "goals": needed(test, fused or reference, goals or {})},
    }


# ----------------------------------------------------------------------------------- rendering
def _num(value: Any) -> str:
    if value is None or value != value:
        return "–"
    return f"{value:.4f}"


def _pct(value: Any) -> str:
    if value is None or value != value:
        return "–"
    return f"{100 * value:.1f}%"


def _rows_of(summary: Mapping, grouping: str) -> dict[str, dict[str, dict]]:
    """bucket -> ranker -> row, in the rows' order."""
    table: dict[str, dict[str, dict]] = {}
    for row in summary["groups"]:
        if row["grouping"] == grouping:
            table.setdefault(row["bucket"], {})[row["ranker"]] = row
    return table


def group_tables(summary: Mapping, rankers: Sequence[str], reference: str) -> list[str]:
    """Per grouping: Hit@10, then MRR@10, of each ranker per bucket; then the wins."""
    lines: list[str] = []
    others = [r for r in rankers if r != reference]
    names = dict.fromkeys(row["grouping"] for row in summary["groups"])
    for grouping in names:
        if grouping == "all":
            continue
        table = _rows_of(summary, grouping)
        lines += ["", f"### By {grouping}", ""]
        for key, name in ((HIT, "Hit@10"), (MRR, "MRR@10")):
            rows = [[bucket, by_ranker[reference]["cases"], _pct(by_ranker[reference]["share"]),
                     *(_num(by_ranker[r][key]) for r in rankers)]
                    for bucket, by_ranker in table.items()]
            lines += md_table([f"{name}: bucket", "cases", "share", *rankers], rows) + [""]
        lines += [f"Wins, as shares of the bucket's cases: {reference} ranks the target strictly "
                  f"better / the other ranker does; then only {reference} / only the other has "
                  "it in its top 10.", ""]
        for first, second, name in (("ref_better", "better", "better rank"),
                                    ("ref_only_top", "only_top", "top 10 alone")):
            rows = [[bucket, *("–" if "better" not in by_ranker[r] else
                               f"{_pct(by_ranker[r][first])} / {_pct(by_ranker[r][second])}"
                               for r in others)]
                    for bucket, by_ranker in table.items()]
            lines += md_table([f"{name}: bucket", *(f"vs {r}" for r in others)], rows) + [""]
        lines.pop()
    return lines


def bound_tables(summary: Mapping, reference: str) -> list[str]:
    """The upper bounds (a)-(d) of the module docstring."""
    lines = ["", "### (a) Per-case oracle and (b) repeat/new gate", "",
             f"Oracle: per case the better rank of {reference} and the other ranker (the most "
             "any gate between the two could give). Gate: one ranker for the cases whose target "
             "is a repeat, one for the others, each bucket's better one; chosen on validation "
             "and tested, or (ceiling) chosen on test. A gate needs to know whether the target "
             "is a repeat, which no model knows before the click: it is an upper bound of a "
             "repeat/explore switch.", ""]
    header = ["with", "oracle Hit@10", "oracle MRR@10", "gate (valid) Hit@10",
              "gate (valid) MRR@10", "gate ceiling Hit@10", "gate ceiling MRR@10",
              "gate choice (MRR@10): new / repeat"]
    rows = []
    items = [*summary["gates"].items(), ("all rankers", summary["gate_all"])]
    for name, gate in items:
        best = summary["oracle_all"] if name == "all rankers" else summary["oracles"][name]
        choice = gate["mrr"]["chosen_on_valid"]
        rows.append([name, _num(best[HIT]), _num(best[MRR]), _num(gate["hit"]["test"][HIT]),
                     _num(gate["mrr"]["test"][MRR]), _num(gate["hit"]["ceiling"][HIT]),
                     _num(gate["mrr"]["ceiling"][MRR]),
                     f"{choice.get('new', '–')} / {choice.get('repeat', '–')}"])
    lines += md_table(header, rows)
    lost = summary["unreachable"]
    lines += ["", "### (c) Targets never clicked in training", "",
              f"- {_pct(lost['never_in_training'])} of the test targets never occur in the "
              f"training split; {_pct(lost['never_in_training_and_new'])} are not a repeat "
              "either: no model of the training split can rank those but by chance, which "
              f"leaves a Hit@10 ceiling of {_num(lost['hit@10_ceiling'])}.",
              "", "### (d) Cases no ranker has in its top 10", "",
              "| target | share of all cases | share of its cases |", "|---|---|---|"]
    for bucket in (NEW, REPEAT_LAST, REPEAT_EARLIER):
        missed = summary["missed_by_all"][bucket]
        lines.append(f"| {bucket} | {_pct(missed['share_of_all'])} | "
                     f"{_pct(missed['share_of_bucket'])} |")
    kind = summary["gate_kind_all"]
    lines += ["", "### (e) A gate that knows the target's kind", "",
              "As (b) over all rankers, but with three buckets: a new target, the prefix's last "
              f"click, an earlier click. Ceiling (chosen on test): Hit@10 "
              f"{_num(kind['hit']['ceiling'][HIT])}, MRR@10 {_num(kind['mrr']['ceiling'][MRR])} "
              "(choice for MRR@10: " + ", ".join(
                  f"{b}: {r}" for b, r in kind["mrr"]["ceiling_choice"].items()) + "); chosen on "
              f"validation: Hit@10 {_num(kind['hit']['test'][HIT])}, MRR@10 "
              f"{_num(kind['mrr']['test'][MRR])}."]
    goals = summary["needed"]["goals"]
    if goals:
        ranker = summary["needed"]["ranker"]
        share = next(iter(goals.values()))["new_share"]
        lines += ["", "### (f) What the goals need", "",
                  f"`{ranker}`'s test value, on the new targets ({_pct(share)} "
                  "of the cases) and on the repeats, and what reaching each goal would take: on "
                  "the new targets with the repeats as they are (or all at rank 1), or on the "
                  "repeats with the new targets as they are (above 1: out of reach).", ""]
        rows = [[label(metric), f"{g['goal']:g}", _num(g["now"]), _num(g["new_now"]),
                 _num(g["repeat_now"]), _num(g["new_needed"]),
                 _num(g["new_needed_repeats_perfect"]), _num(g["repeat_needed"])]
                for metric, g in goals.items()]
        lines += md_table(["metric", "goal", "now", "new targets now", "repeats now",
                           "new targets needed", "new targets needed, repeats perfect",
                           "repeats needed"], rows)
    return lines



def markdown(head: Sequence[str], summary: Mapping, rankers: Sequence[str], reference: str,
             tail: Sequence[str] = ()) -> str:
    """The report: ``head`` lines, the test tables, the bounds, ``tail`` lines."""
    lines = list(head)
    lines += ["", f"## Test, all {summary['cases']} cases", ""]
    lines += md_table(["ranker", "Hit@10", "MRR@10"],
                      [[r, _num(summary["overall"][r][HIT]), _num(summary["overall"][r][MRR])]
                       for r in rankers])
    lines += ["", "## Test, by group of cases"]
    lines += group_tables(summary, rankers, reference)
    lines += ["", "## Upper bounds (test)"]
    lines += bound_tables(summary, reference)
    lines += list(tail)
    return "\n".join(lines) + "\n"


def csv_rows(summary: Mapping) -> str:
    """The group tables as CSV (one row per grouping, bucket and ranker; shares as fractions)."""
    rows = [{key: (f"{value:.6f}" if isinstance(value, float) else value)
             for key, value in row.items()} for row in summary["groups"]]
    return csv_text(rows, CSV_FIELDS)
