"""Index building and test scoring time of the nearest-neighbour models, one at a time on one core.

Each of SKNN, VSKNN, STAN and VSTAN (at the point the comparison chose on validation, see
``benchmarks/configs/retailrocket-cotrec.yaml``) runs the ``run.py`` pipeline in its own fresh
process with one torch thread, nothing else started by this script beside it: data loading, the
index built from the training split (``model_build_s``), one zero-loss epoch, validation, and
the test split scored with full ranking (``test_eval_s``), as the pipeline's results JSON
records them. The target of the comparison: build + test scoring under 20 s on one core.

Results: ``benchmarks/results/knn_speed.md`` and ``.json`` (with the machine and its load
average before and after: the machine may be shared).

    python -m benchmarks.knn_speed [--dataset retailrocket-cotrec] [--models SKNN STAN]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.team_data import use_team_data
from recbole_srgnn.errors import InputError, OneLineArgumentParser, cli_errors
from recbole_srgnn.experiments.machine import machine
from recbole_srgnn.files import atomic_outputs

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TARGET_S = 20.0
# the point each model's grid chose on validation in the cotrec comparison
CHOSEN = {
    "SKNN": ["--sample_size=2500"],
    "VSKNN": ["--lambda_idf=5.0"],
    "STAN": ["--lambda_snh=5.0"],
    "VSTAN": ["--lambda_idf=1.0"],
}


def run_one(model: str, dataset: str, workdir: Path, data_path: str | None = None) -> dict:
    """One pipeline run of ``model`` in a fresh process; its results JSON."""
    result_file = workdir / f"{model}.json"
    command = [sys.executable, str(REPO / "run.py"), f"--model={model}", f"--dataset={dataset}",
               "--epochs=1", "--threads=1", "--show_progress=False", "--quiet",
               f"--checkpoint_dir={workdir / 'ck'}", f"--result_file={result_file}",
               *CHOSEN[model], *([f"--data_path={data_path}"] if data_path else [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise InputError(f"{model} failed: {last}")
    return json.loads(result_file.read_text())


def report(rows: list[dict], info: dict) -> str:
    m = info["machine"]
    lines = [
        "# Nearest-neighbour models: index building and test scoring, one core",
        "",
        f"Command: `python -m benchmarks.knn_speed --dataset {info['dataset']}`. Each model in a "
        "fresh `run.py` process, 1 torch thread, one after the other.",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, Python "
        f"{m['python']}; no GPU used. Load average (1 min) before / after: "
        f"{info['load_before']} / {info['load_after']}.",
        "",
        "| model | chosen point | build (s) | test scoring (s) | build + test (s) | "
        f"< {TARGET_S:.0f} s | test Hit@10 | test MRR@10 |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        total = row["model_build_s"] + row["test_eval_s"]
        lines.append(f"| {row['model']} | {' '.join(CHOSEN[row['model']])} | "
                     f"{row['model_build_s']:.2f} | {row['test_eval_s']:.2f} | {total:.2f} | "
                     f"{'met' if total < TARGET_S else 'MISSED'} | {row['hit@10']:.4f} | "
                     f"{row['mrr@10']:.4f} |")
    return "\n".join(lines) + "\n"


@cli_errors
def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="retailrocket-cotrec", help="dataset (default: cotrec)")
    parser.add_argument("--models", nargs="+", default=list(CHOSEN), choices=list(CHOSEN),
                        help="which models (default: all four)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--data_path", help="RecBole's data folder (default: run.py's)")
    args = parser.parse_args(argv)
    use_team_data()
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="knn-speed-") as tmp:
        for model in args.models:
            print(f"[knn-speed] {model} ...", flush=True)
            result = run_one(model, args.dataset, Path(tmp), args.data_path)
            test = {k.lower(): v for k, v in (result.get("test_result") or {}).items()}
            rows.append({"model": model, "model_build_s": result["model_build_s"],
                         "test_eval_s": result["test_eval_s"], "hit@10": test["hit@10"],
                         "mrr@10": test["mrr@10"]})
            print(f"[knn-speed] {model}: build {result['model_build_s']:.2f} s, test scoring "
                  f"{result['test_eval_s']:.2f} s", flush=True)
    info = {"dataset": args.dataset, "machine": machine(), "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2), "target_s": TARGET_S, "runs": rows}
    with atomic_outputs([args.output / "knn_speed.json", args.output / "knn_speed.md"]) as (js, md):
        js.write_text(json.dumps(info, indent=2) + "\n")
        md.write_text(report(rows, info))
    print(f"[knn-speed] wrote {args.output / 'knn_speed.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
