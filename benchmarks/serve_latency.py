"""Serving speed of a model bundle: load time, in-process latency, batch scoring and HTTP, in one run.

For each dataset (default: the embedded ``retailrocket-synthetic`` and ``retailrocket-cotrec``,
37k items), SR-GNN with its defaults is trained for ``--epochs`` (weights do not change the
amount of computation; the checkpoint and its bundle are kept under ``benchmarks/data/serve/``
and reused unless ``--retrain``), exported as a bundle, and measured on its test split:

- **load**: ``Recommender.load`` of the bundle (checksums, metadata, weights), best of 3, in
  this process, and a fresh ``python -c`` process importing the package and loading it;
- **in-process**: ``Recommender.recommend`` of one session at a time (``--single`` sessions of
  the test split, k = ``--k``): latency p50/p95/p99;
- **batch**: ``Recommender.recommend_batch`` over the whole test split (``--batch_size``) in
  sessions/s, beside the evaluation forward pass on the same sessions and batches (the trained
  RecBole model's ``full_sort_predict`` plus ``topk``, as RecBole's evaluator runs it); the two
  alternate for 5 rounds and each keeps its best;
- **HTTP**: ``recbole-srgnn serve`` started here on 127.0.0.1 on a free port; at concurrency 1,
  8 and 32, ``--requests`` ``POST /recommend`` requests (test sessions, k = ``--k``) from that
  many client threads with keep-alive connections; latency p50/p99 and requests/s. Loopback
  only; the server is stopped at the end. The client threads share the machine's cores with
  the server, as a co-located caller would.

    python -m benchmarks.serve_latency [--datasets ...] [--epochs 1] [--requests 2000]

Results: ``benchmarks/results/serve_latency.md`` and ``.json`` (written atomically), with the
machine and the targets of the serving issue.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from recbole_srgnn.errors import InputError, OneLineArgumentParser, cli_errors

from benchmarks.speed import machine
from benchmarks.team_data import use_team_data
from recbole_srgnn.files import atomic_outputs

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "benchmarks" / "data" / "serve"  # git-ignored
DATASETS = ["retailrocket-synthetic", "retailrocket-cotrec"]
CONCURRENCY = (1, 8, 32)
# (what, bound, unit): the targets on the 2-core machine, for the cotrec SR-GNN
TARGETS = {"single_p99_ms": 10.0, "http8_p99_ms": 30.0, "http8_rps": 200.0,
           "batch_ratio": 0.8, "load_s": 2.0}


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by linear interpolation."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(seconds: list[float]) -> dict:
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "p50_ms": percentile(ms, 0.5), "p95_ms": percentile(ms, 0.95),
            "p99_ms": percentile(ms, 0.99), "mean_ms": statistics.fmean(ms)}


# --------------------------------------------------------------------------------------------
# the model: train once (kept), export, read the test split
# --------------------------------------------------------------------------------------------
def trained_bundle(dataset: str, args) -> tuple[Path, Path, dict]:
    """(checkpoint, bundle folder, training record) of SR-GNN on ``dataset``; reused if kept."""
    from recbole_srgnn.training import runs as training_runs

    work = WORK / dataset
    record_file, bundle = work / "training.json", work / "bundle"
    if not args.retrain and record_file.is_file() and (bundle / "SHA256SUMS").is_file():
        record = json.loads(record_file.read_text())
        if record.get("epochs") == args.epochs and Path(record["checkpoint"]).is_file():
            return Path(record["checkpoint"]), bundle, record
    settings = {"epochs": args.epochs, "checkpoint_dir": str(work / "saved"),
                "show_progress": False}
    print(f"[{dataset}] training SR-GNN for {args.epochs} epoch(s) ...", flush=True)
    results = training_runs.run("SRGNN", dataset, config_dict=settings, quiet=True,
                                result_file=work / "results.json", export=bundle)
    record = {"epochs": args.epochs, "checkpoint": results["checkpoint"],
              "seconds_total": results["seconds_total"],
              "test_mrr@10": results["test_result"].get("mrr@10")}
    record_file.write_text(json.dumps(record, indent=1))
    return Path(results["checkpoint"]), bundle, record


def test_split(checkpoint: Path):
    """The trained RecBole model (eval mode), the test interactions and the sessions as tokens."""
    from recbole_srgnn.training.checkpoints import load_trained

    trained = load_trained(checkpoint, quiet=True)
    test_set = trained.test_data._dataset
    inter = test_set.inter_feat
    tokens = list(test_set.field2id_token[test_set.iid_field])
    seq, lengths = inter["item_id_list"], inter["item_length"]
    sessions = [[tokens[i] for i in row[:n].tolist()] for row, n in zip(seq, lengths.tolist())]
    return trained.trainer.model.eval(), inter, sessions


# --------------------------------------------------------------------------------------------
# the measurements
# --------------------------------------------------------------------------------------------
def measure_load(bundle: Path) -> dict:
    from recbole_srgnn import Recommender

    times = []
    for _ in range(3):
        started = time.perf_counter()
        Recommender.load(bundle)
        times.append(time.perf_counter() - started)
    code = ("import time; t = time.perf_counter(); from recbole_srgnn import Recommender; "
            f"Recommender.load({str(bundle)!r}); print(time.perf_counter() - t)")
    started = time.perf_counter()
    inner = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, cwd=REPO)
    process = time.perf_counter() - started
    return {"in_process_s": min(times), "fresh_process_import_and_load_s": float(inner.stdout),
            "fresh_process_wall_s": process}


def measure_single(rec, sessions: list[list[str]], k: int, n: int) -> dict:
    for session in sessions[:20]:  # warm-up
        rec.recommend(session, k=k)
    times = []
    for session in sessions[:n]:
        started = time.perf_counter()
        rec.recommend(session, k=k)
        times.append(time.perf_counter() - started)
    return latency_summary(times)


def measure_batch(rec, model, inter, sessions: list[list[str]], k: int, batch_size: int,
                  rounds: int = 5) -> dict:
    import torch

    def forward_pass() -> None:
        with torch.no_grad():
            for start in range(0, len(inter), batch_size):
                scores = model.full_sort_predict(inter[start:start + batch_size])
                scores.view(-1, scores.shape[-1]).topk(k, dim=1)

    def batch_scoring() -> None:
        rec.recommend_batch(sessions, k=k, batch_size=batch_size)

    jobs = {"eval_forward": forward_pass, "recommend_batch": batch_scoring}
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for job in jobs.values():
        job()  # warm-up
    for _ in range(rounds):  # alternated, so that both see the same machine; best kept
        for name, job in jobs.items():
            times[name].append(timed(job))
    timing: dict = {name: {"seconds": min(t), "sessions_per_s": len(sessions) / min(t)}
                    for name, t in times.items()}
    timing["ratio"] = timing["recommend_batch"]["sessions_per_s"] / \
        timing["eval_forward"]["sessions_per_s"]
    timing["sessions"], timing["batch_size"] = len(sessions), batch_size
    return timing


def timed(job) -> float:
    started = time.perf_counter()
    job()
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(bundle: Path, port: int, timeout: float = 120.0) -> subprocess.Popen:
    command = [sys.executable, "-m", "recbole_srgnn.cli", "serve", "--model", str(bundle),
               "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise InputError(f"serve exited with {server.returncode}: "
                             f"{(server.stderr.read() or '').strip()[-300:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.2)
    server.terminate()
    raise InputError(f"serve did not answer /health within {timeout:.0f} s")


def http_load(port: int, sessions: list[list[str]], k: int, concurrency: int,
              requests: int) -> dict:
    """``requests`` POST /recommend from ``concurrency`` keep-alive client threads."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                break
            body = json.dumps({"items": sessions[index % len(sessions)], "k": k})
            started = time.perf_counter()
            connection.request("POST", "/recommend", body,
                               {"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            mine.append(time.perf_counter() - started)
            if response.status != 200:
                with lock:
                    errors.append(f"{response.status} {payload[:100]!r}")
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise InputError(f"{len(errors)} HTTP requests failed, e.g. {errors[0]}")
    return {**latency_summary(latencies), "concurrency": concurrency,
            "requests_per_s": len(latencies) / wall, "seconds": wall}


def measure_http(bundle: Path, sessions: list[list[str]], k: int, requests: int) -> dict:
    port = free_port()
    server = start_server(bundle, port)
    try:
        http_load(port, sessions, k, 4, 100)  # warm-up
        return {str(c): http_load(port, sessions, k, c, requests) for c in CONCURRENCY}
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def measure(dataset: str, args) -> dict:
    import torch

    from recbole_srgnn import Recommender

    checkpoint, bundle, record = trained_bundle(dataset, args)
    model, inter, sessions = test_split(checkpoint)
    rec = Recommender.load(bundle)
    print(f"[{dataset}] {rec.n_items - 1} items, {len(sessions)} test sessions; measuring ...",
          flush=True)
    out = {"dataset": dataset, "items": rec.n_items - 1, "test_sessions": len(sessions),
           "training": record, "torch_threads": torch.get_num_threads(),
           "load": measure_load(bundle),
           "single": measure_single(rec, sessions, args.k, args.single),
           "batch": measure_batch(rec, model, inter, sessions, args.k, args.batch_size)}
    if not args.no_http:
        out["http"] = measure_http(bundle, sessions, args.k, args.requests)
    return out


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def verdict(value: float, bound: float, at_most: bool) -> str:
    met = value <= bound if at_most else value >= bound
    return f"{'met' if met else 'MISSED'} ({'≤' if at_most else '≥'} {bound:g})"


def report(results: dict) -> str:
    m = results["machine"]
    lines = ["# Serving speed of a model bundle", "",
             f"Machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB, "
             f"torch {m.get('torch')}; GPU: {m.get('gpu') or 'none'}. Command: `{results['command']}`.",
             "", "| dataset | items | bundle load (s) | fresh process: import + load (s) "
             "| one session p50 / p95 / p99 (ms) | recommend_batch (sessions/s) "
             "| eval forward (sessions/s) | ratio |", "|---|---|---|---|---|---|---|---|"]
    for r in results["datasets"]:
        s, b, load = r["single"], r["batch"], r["load"]
        lines.append(
            f"| {r['dataset']} | {r['items']:,} | {load['in_process_s']:.3f} "
            f"| {load['fresh_process_import_and_load_s']:.2f} "
            f"| {s['p50_ms']:.2f} / {s['p95_ms']:.2f} / {s['p99_ms']:.2f} "
            f"| {b['recommend_batch']['sessions_per_s']:,.0f} "
            f"| {b['eval_forward']['sessions_per_s']:,.0f} | {b['ratio']:.2f} |")
    lines += ["", "HTTP (`recbole-srgnn serve`, loopback, POST /recommend, k = "
              f"{results['k']}, {results['requests']} requests per level):", "",
              "| dataset | concurrency | p50 (ms) | p99 (ms) | requests/s |", "|---|---|---|---|---|"]
    for r in results["datasets"]:
        for c, h in (r.get("http") or {}).items():
            lines.append(f"| {r['dataset']} | {c} | {h['p50_ms']:.2f} | {h['p99_ms']:.2f} "
                         f"| {h['requests_per_s']:,.0f} |")
    cotrec = next((r for r in results["datasets"] if r["dataset"] == "retailrocket-cotrec"), None)
    if cotrec:
        lines += ["", "Targets (cotrec SR-GNN, this machine):", ""]
        lines.append(f"- one session in-process p99 {cotrec['single']['p99_ms']:.2f} ms: "
                     f"{verdict(cotrec['single']['p99_ms'], TARGETS['single_p99_ms'], True)}")
        if cotrec.get("http"):
            h8 = cotrec["http"]["8"]
            lines.append(f"- HTTP concurrency 8 p99 {h8['p99_ms']:.2f} ms: "
                         f"{verdict(h8['p99_ms'], TARGETS['http8_p99_ms'], True)}; "
                         f"{h8['requests_per_s']:.0f} requests/s: "
                         f"{verdict(h8['requests_per_s'], TARGETS['http8_rps'], False)}")
        lines.append(f"- batch scoring / eval forward {cotrec['batch']['ratio']:.2f}: "
                     f"{verdict(cotrec['batch']['ratio'], TARGETS['batch_ratio'], False)}")
        lines.append(f"- bundle load {cotrec['load']['in_process_s']:.3f} s: "
                     f"{verdict(cotrec['load']['in_process_s'], TARGETS['load_s'], True)}")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="python -m benchmarks.serve_latency",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--epochs", type=int, default=1, help="training epochs of the model")
    parser.add_argument("--retrain", action="store_true", help="train again even if kept")
    parser.add_argument("--k", type=int, default=20, help="recommendations per session")
    parser.add_argument("--single", type=int, default=1000, help="sessions timed one by one")
    parser.add_argument("--batch_size", type=int, default=512, help="sessions per forward pass")
    parser.add_argument("--requests", type=int, default=2000, help="HTTP requests per level")
    parser.add_argument("--no_http", action="store_true", help="skip the HTTP measurements")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of this process (default: torch's)")
    parser.add_argument("--out", default=str(RESULTS), help="folder of serve_latency.md/.json")
    return parser


@cli_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("epochs", "k", "single", "batch_size", "requests"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name} must be >= 1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    use_team_data()
    results = {"machine": machine(), "k": args.k, "requests": args.requests,
               "command": "python -m benchmarks.serve_latency " + " ".join(argv or sys.argv[1:]),
               "datasets": [measure(dataset, args) for dataset in args.datasets]}
    results["command"] = results["command"].strip()
    out = Path(args.out)
    with atomic_outputs([out / "serve_latency.json", out / "serve_latency.md"]) as (js, md):
        js.write_text(json.dumps(results, indent=1) + "\n")
        md.write_text(report(results))
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
