"""The quick start (``python run.py``) idle and beside one other CPU-bound job, per thread setting.

On a 2-core machine torch's default of one intra-op thread per core makes a training process
fight any other busy process: OpenMP worker threads spin while they wait for each other, and a
core taken by another job turns every parallel region into a wait. This script measures, in one
run on one machine, the wall time of the whole quick start (``run.py`` with its defaults on the
embedded dataset, already generated: a warm-up run builds it first) for each thread setting:

- idle: nothing else running (the caller makes sure of that; the load average is recorded);
- loaded: beside one single-threaded CPU-bound process (``while True: pass``) started here.

A run that exceeds ``--timeout`` seconds is stopped and reported as ``> timeout``. Results:
``benchmarks/results/contention.md`` and ``.json``.

    python -m benchmarks.contention [--timeout 300] [--settings default 1 passive]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recbole_srgnn.errors import OneLineArgumentParser, cli_errors

from benchmarks.speed import machine
from recbole_srgnn.files import atomic_outputs

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# name -> (run.py arguments, environment overrides, description)
SETTINGS = {
    "default": ([], {}, "run.py's default (threads: auto)"),
    "2": (["--threads", "2"], {"OMP_WAIT_POLICY": ""}, "2 threads, OpenMP's own wait policy"),
    "1": (["--threads", "1"], {}, "1 thread"),
    "passive": (["--threads", "2"], {"OMP_WAIT_POLICY": "PASSIVE"},
                "2 threads, OMP_WAIT_POLICY=PASSIVE"),
}
BUSY = "while True: pass"


def quick_start(extra: list[str], env: dict[str, str], timeout: float) -> dict:
    """One ``run.py`` process: wall seconds, or None when it ran past ``timeout``."""
    environment = dict(os.environ)
    for key, value in env.items():
        if value:
            environment[key] = value
        else:
            environment.pop(key, None)
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        command = [sys.executable, str(REPO / "run.py"), "--quiet", *extra,
                   f"--result_file={result}", f"--checkpoint_dir={tmp}"]
        started = time.perf_counter()
        try:
            proc = subprocess.run(command, cwd=REPO, env=environment, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"seconds": None, "timed_out": True}
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"error: run.py {' '.join(extra)} failed: "
                             f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}")
        data = json.loads(result.read_text(encoding="utf-8"))
    return {"seconds": round(seconds, 1), "timed_out": False,
            "seconds_per_epoch": round(data["seconds_per_epoch"], 2),
            "epochs": data["epochs_trained"], "test_mrr@10": data["test_result"]["mrr@10"],
            "test_hit@10": data["test_result"]["hit@10"],
            "threads_setting": data["config"].get("threads"),
            "torch_threads": data.get("torch_threads")}  # the count the setting gave


def measure(names: list[str], timeout: float) -> list[dict]:
    rows = []
    for name in names:
        extra, env, text = SETTINGS[name]
        print(f"[contention] {name}: idle ...", flush=True)
        idle = quick_start(extra, env, timeout)
        print(f"[contention] {name}: idle {idle['seconds']} s; beside a busy process ...",
              flush=True)
        busy = subprocess.Popen([sys.executable, "-c", BUSY])
        try:
            loaded = quick_start(extra, env, timeout)
        finally:
            busy.kill()
            busy.wait()
        ratio = (round(loaded["seconds"] / idle["seconds"], 2)
                 if loaded["seconds"] and idle["seconds"] else None)
        print(f"[contention] {name}: loaded {loaded['seconds']} s (ratio {ratio})", flush=True)
        rows.append({"setting": name, "description": text, "idle": idle, "loaded": loaded,
                     "ratio": ratio})
    return rows


def render(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Quick start under contention", "",
        f"Command: `{report['command']}`. Machine: {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gb']} GB, torch {m['torch']}; load average before {report['load_before']}, "
        f"after {report['load_after']}. Each cell is one `python run.py --quiet` (embedded "
        "dataset already generated); *loaded* = beside one single-threaded CPU-bound process. "
        f"Runs past {report['timeout']} s were stopped.", "",
        "| setting | idle s | idle s/epoch | loaded s | loaded s/epoch | loaded / idle |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def cell(value, timed_out=False):
        return f"> {report['timeout']:.0f}" if timed_out else ("-" if value is None else f"{value}")

    for row in report["rows"]:
        idle, loaded = row["idle"], row["loaded"]
        lines.append(
            f"| {row['description']} | {cell(idle['seconds'], idle['timed_out'])} | "
            f"{cell(idle.get('seconds_per_epoch'))} | "
            f"{cell(loaded['seconds'], loaded['timed_out'])} | "
            f"{cell(loaded.get('seconds_per_epoch'))} | "
            f"{cell(row['ratio']) if not loaded['timed_out'] else '> ' + format(report['timeout'] / idle['seconds'], '.1f')} |")
    return "\n".join(lines) + "\n"


@cli_errors
def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(flag_aliases={"--out": "--output", "--results": "--output"}, description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds after which one quick start is stopped (default 300)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS),
                        help="thread settings to measure (default: all)")
    parser.add_argument("--output", default=str(RESULTS / "contention"),
                        help="results path without suffix (default benchmarks/results/contention)")
    args = parser.parse_args(argv)
    print("[contention] warm-up run (builds the embedded dataset if needed) ...", flush=True)
    quick_start(["--epochs=1"], {}, 3600)
    load_before = [round(x, 2) for x in os.getloadavg()]
    rows = measure(args.settings, args.timeout)
    report = {"command": "python -m benchmarks.contention " + " ".join(argv or sys.argv[1:]),
              "machine": machine(), "timeout": args.timeout, "load_before": load_before,
              "load_after": [round(x, 2) for x in os.getloadavg()], "rows": rows}
    out = Path(args.output)
    with atomic_outputs([out.with_suffix(".json"), out.with_suffix(".md")]) as (js, md):
        js.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        md.write_text(render(report), encoding="utf-8")
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
