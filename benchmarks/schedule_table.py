"""The learning-rate schedule table of ``benchmarks/RESULTS.md``, from committed run records.

Reads the run JSONs of the three schedule comparisons (``benchmarks/configs/schedule/*.yaml``:
embedded default, a 10 % sample of the cotrec training sessions, full cotrec) and, for full
cotrec, the paper-schedule rows of the main comparison (same shared settings), and prints one
Markdown table: validation and test MRR@10 / Hit@10 per model and dataset size. Runs that are
not recorded yet show as "not run".

    python -m benchmarks.schedule_table
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# (size label, [(row label, run JSON relative to benchmarks/results/)])
SIZES = [
    ("embedded default (78k train cases)", "schedule-synthetic", [
        ("SRGNN, new defaults (plateau, restore best, update cap 2500)", "SRGNN-cap/default-seed1.json"),
        ("SRGNN, plateau + restore, no update cap", "SRGNN/default-seed1.json"),
        ("SRGNN, plateau without restore", "SRGNN-norestore/default-seed1.json"),
        ("SRGNN, paper schedule (step)", "SRGNN-paper/default-seed1.json"),
        ("RecBoleSRGNN, RecBole's defaults", "RecBoleSRGNN/default-seed1.json"),
        ("LastItem, new defaults (plateau, restore best, update cap 2500)", "LastItem-cap/default-seed1.json"),
        ("LastItem, plateau + restore, no update cap", "LastItem/default-seed1.json"),
        ("LastItem, plateau without restore", "LastItem-norestore/default-seed1.json"),
        ("LastItem, paper schedule (step)", "LastItem-paper/default-seed1.json"),
    ]),
    ("10 % of cotrec train sessions (same test cases)", "schedule-cotrec-10pct", [
        ("SRGNN, new defaults (plateau, restore best, update cap 2500)", "SRGNN-cap/default-seed1.json"),
        ("SRGNN, plateau + restore, no update cap", "SRGNN/default-seed1.json"),
        ("SRGNN, plateau without restore", "SRGNN-norestore/default-seed1.json"),
        ("SRGNN, plateau, patience 1, without restore", "SRGNN-patience1/default-seed1.json"),
        ("SRGNN, constant rate", "SRGNN-constant/default-seed1.json"),
        ("SRGNN, paper schedule (step)", "SRGNN-paper/default-seed1.json"),
        ("RecBoleSRGNN, RecBole's defaults", "RecBoleSRGNN/default-seed1.json"),
        ("LastItem, new defaults (plateau, restore best, update cap 2500)", "LastItem-cap/default-seed1.json"),
        ("LastItem, plateau + restore, no update cap", "LastItem/default-seed1.json"),
        ("LastItem, plateau without restore", "LastItem-norestore/default-seed1.json"),
        ("LastItem, paper schedule (step)", "LastItem-paper/default-seed1.json"),
    ]),
    ("full cotrec (507k train cases)", "schedule-cotrec", [
        ("SRGNN, new defaults (plateau, restore best, update cap 2500)", "SRGNN-cap/default-seed1.json"),
        ("SRGNN, plateau + restore, no update cap", "SRGNN-restore/default-seed1.json"),
        ("SRGNN, plateau without restore", "SRGNN/default-seed1.json"),
        ("SRGNN, paper schedule (step) †", "../../retailrocket-cotrec/runs/SRGNN/"
                                           "learning_rate=0.001-seed1.json"),
        ("RecBoleSRGNN, paper optimisation (step, d = 100) †",
         "../../retailrocket-cotrec/runs/RecBoleSRGNN/learning_rate=0.001-seed1.json"),
        ("LastItem, paper schedule (step) †", "../../retailrocket-cotrec/runs/LastItem/"
                                              "learning_rate=0.001-seed1.json"),
    ]),
]


def _cells(path: Path) -> list[str]:
    if not path.is_file():
        return ["not run"] * 4 + [""]
    run = json.loads(path.read_text(encoding="utf-8"))
    valid, test = run.get("best_valid_result") or {}, run.get("test_result") or {}
    if not test:
        return ["not finished"] * 4 + [""]
    epoch = run.get("best_epoch")
    return [f"{valid['mrr@10']:.4f}", f"{valid['hit@10']:.4f}", f"{test['mrr@10']:.4f}",
            f"{test['hit@10']:.4f}", f"{epoch + 1} / {run.get('epochs_trained')}"]


def table() -> str:
    lines = ["| dataset size | model and schedule | valid MRR@10 | valid Hit@10 | test MRR@10 | "
             "test Hit@10 | best / trained epochs |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for label, folder, rows in SIZES:
        for name, relative in rows:
            path = (RESULTS / folder / "runs" / relative).resolve()
            lines.append(f"| {label} | {name} | " + " | ".join(_cells(path)) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    sys.stdout.write(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
