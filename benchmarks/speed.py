"""Training speed and peak memory of SR-GNN against RecBole's models, measured in one run.

For each dataset, every model trains on the same batches (same seed, batch size and embedding
size) through RecBole's data loader: ``--warmup`` batches are discarded, then ``--batches`` are
timed (forward, backward, optimiser step, data loading included). Each measurement runs in its
own subprocess so peak memory is the model's own; models are measured round-robin ``--rounds``
times and the best round is kept, which damps the noise of a shared machine. The graph builder
is also timed against RecBole's built-in graph construction on identical batches.

    python -m benchmarks.speed                       # both datasets, all models
    python -m benchmarks.speed --datasets retailrocket-synthetic --batches 10 --rounds 1

Writes ``<out>/speed.md`` and ``<out>/speed.json`` (default ``benchmarks/results``). The real
dataset's source is found in ``../shared/data`` (``benchmarks.team_data``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from recbole_srgnn.errors import OneLineArgumentParser, cli_errors

from benchmarks.team_data import use_team_data
from recbole_srgnn.experiments.machine import machine as experiment_machine

REPO = Path(__file__).resolve().parents[1]
MODELS = ["SRGNN", "RecBoleSRGNN", "GRU4Rec", "NARM", "LastItem"]
DATASETS = ["retailrocket-synthetic", "retailrocket-cotrec"]


def machine() -> dict:
    """What the numbers were measured on: the shared machine description, plus torch."""
    import torch

    info = {
        **experiment_machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),  # default; --threads overrides per run
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def shared_settings(args, dataset: str) -> dict:
    """Settings every model gets, so the comparison is like for like."""
    size = ({"synthetic_n_events": args.synthetic_events}
            if args.synthetic_events and dataset == "retailrocket-synthetic" else {})
    return {
        **size,
        "train_batch_size": args.batch_size,
        "embedding_size": args.embedding_size,
        "hidden_size": args.embedding_size,  # GRU4Rec / NARM
        "num_layers": 1,
        "seed": args.seed,
        "reproducibility": False,
        "show_progress": False,
        "log_wandb": False,
        "state": "ERROR",
        **({"data_path": args.data_path} if args.data_path else {}),
    }


# --------------------------------------------------------------------------------------------
# worker: one model on one dataset, in its own process
# --------------------------------------------------------------------------------------------
def timed_training(args, settings: dict):
    """Build ``args.model`` on ``args.dataset`` with ``settings`` and time ``args.batches``
    training batches after ``args.warmup`` (data loading, forward, backward, Adam step).

    Returns ``(config, train_data, model, result)``; ``result`` holds the throughput, peak
    memory and device. Shared by this benchmark and ``benchmarks.ssm``."""
    import torch
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_srgnn.training.datasets import ready_config
    from recbole_srgnn.training.models import resolve_model

    if args.threads:
        torch.set_num_threads(args.threads)
    config = ready_config(args.model, args.dataset, config_dict=settings)
    init_seed(config["seed"], False)
    if config["device"].type == "cpu":
        torch.set_flush_denormal(True)
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    init_seed(config["seed"], False)
    model = resolve_model(args.model)(config, train_data.dataset).to(config["device"])
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
    model.train()
    synchronize = torch.cuda.synchronize if config["device"].type == "cuda" else (lambda: None)

    def batches():
        while True:
            yield from train_data

    stream = batches()
    cases = 0
    start = 0.0
    for index in range(args.warmup + args.batches):
        if index == args.warmup:
            synchronize()
            start = time.perf_counter()
        interaction = next(stream).to(config["device"])
        optimizer.zero_grad()
        loss = model.calculate_loss(interaction)
        loss.backward()
        optimizer.step()
        if index >= args.warmup:
            cases += len(interaction)
    synchronize()
    seconds = time.perf_counter() - start
    result = {
        "model": args.model,
        "dataset": args.dataset,
        "num_items": int(train_data.dataset.item_num),
        "cases": cases,
        "seconds": seconds,
        "sequences_per_second": cases / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": str(config["device"]),
    }
    if config["device"].type == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 1024**2
    return config, train_data, model, result


def worker(args) -> dict:
    config, train_data, _, result = timed_training(args, shared_settings(args, args.dataset))
    if args.model == "SRGNN":
        result["graph_builder"] = time_graph_builders(config, train_data, args)
    return result


def time_graph_builders(config, train_data, args) -> dict:
    """Our tensor graph builder vs RecBole SRGNN's ``_get_slice`` on the same batches."""
    import torch
    from recbole.model.sequential_recommender.srgnn import SRGNN as RecBoleSRGNN

    from recbole_srgnn.graph import build_session_graphs

    reference = RecBoleSRGNN(config, train_data.dataset).to(config["device"])
    item_field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
    length_field = config["ITEM_LIST_LENGTH_FIELD"]
    batches = []
    for interaction in train_data:
        batches.append((interaction[item_field].to(config["device"]), interaction[length_field].to(config["device"])))
        if len(batches) == args.graph_batches:
            break
    synchronize = torch.cuda.synchronize if config["device"].type == "cuda" else (lambda: None)
    num_items = int(train_data.dataset.item_num)
    timings = {}
    for name, build in (
        ("ours", lambda seq, length: build_session_graphs(seq, length, num_items=num_items)),
        ("recbole", lambda seq, length: reference._get_slice(seq)),
    ):
        build(*batches[0])
        synchronize()
        start = time.perf_counter()
        for seq, length in batches:
            build(seq, length)
        synchronize()
        timings[name] = (time.perf_counter() - start) / len(batches)
    return {
        "batches": len(batches),
        "batch_shape": list(batches[0][0].shape),
        "ours_ms_per_batch": timings["ours"] * 1000,
        "recbole_ms_per_batch": timings["recbole"] * 1000,
        "speedup": timings["recbole"] / timings["ours"],
    }


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------
def run_worker(module: str, model: str, dataset: str, extra: list[str], what: str, args) -> dict:
    """One ``python -m <module> --worker`` measurement in a fresh process; its JSON result line.

    The options every worker shares come from ``args``; ``extra`` adds the module's own. Shared
    by this benchmark and ``benchmarks.ssm``; a failed worker is one ``error:`` line naming
    ``what``."""
    command = [
        sys.executable, "-m", module, "--worker", *extra,
        "--model", model, "--dataset", dataset,
        "--batches", str(args.batches), "--warmup", str(args.warmup),
        "--batch_size", str(args.batch_size), "--embedding_size", str(args.embedding_size),
        "--seed", str(args.seed), "--threads", str(args.threads),
    ] + (["--data_path", args.data_path] if args.data_path else []) + (
        ["--synthetic_events", str(args.synthetic_events)] if args.synthetic_events else [])
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise SystemExit(f"error: {what} on {dataset} failed: " + " | ".join(tail))
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(model: str, dataset: str, args) -> dict:
    return run_worker("benchmarks.speed", model, dataset,
                      ["--graph_batches", str(args.graph_batches)], model, args)


def prepare(dataset: str, args) -> None:
    """Build the dataset once, before any timing."""
    from recbole_srgnn.training.datasets import ready_settings

    ready_settings("LastItem", dataset, config_dict=shared_settings(args, dataset))


def report(results: list[dict], args, info: dict, load: tuple) -> str:
    lines = [
        "# Training speed: SR-GNN vs RecBole models",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GB RAM, "
        f"GPU: {info['gpu'] or 'none'}; Python {info['python']}, torch {info['torch']} "
        f"({args.threads or info['torch_threads']} threads per run). Load average before/after: "
        f"{load[0]:.2f} / {load[1]:.2f}.",
        "",
        f"Same run, same batches: batch size {args.batch_size}, embedding (and GRU hidden) size "
        f"{args.embedding_size}, {args.warmup} warm-up + {args.batches} timed training batches "
        f"(data loading, forward, backward, Adam step), best of {args.rounds} round-robin "
        f"rounds, each measurement in a fresh process (peak RSS is that process's). "
        f"Denormals flushed on CPU.",
        "",
        "Command: `python -m benchmarks.speed " + " ".join(sys.argv[1:]) + "`",
        "",
    ]
    for dataset in args.datasets:
        rows = [r for r in results if r["dataset"] == dataset]
        if not rows:
            continue
        by_model = {r["model"]: r for r in rows}
        base = by_model.get("RecBoleSRGNN")
        floor = by_model.get("LastItem")
        gru = by_model.get("GRU4Rec")
        lines += [
            f"## {dataset} ({rows[0]['num_items']} items)",
            "",
            "| model | sequences/s | × RecBoleSRGNN | × GRU4Rec | ÷ LastItem (floor) time | peak RSS (MB) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for model in args.models:
            r = by_model.get(model)
            if r is None:
                continue
            speed = r["sequences_per_second"]
            ratio = lambda other: f"{speed / other['sequences_per_second']:.2f}" if other else "–"
            floor_ratio = f"{floor['sequences_per_second'] / speed:.2f}" if floor else "–"
            lines.append(
                f"| {model} | {speed:,.0f} | {ratio(base)} | {ratio(gru)} | {floor_ratio} | {r['peak_rss_mb']:,.0f} |"
            )
        graph = by_model.get("SRGNN", {}).get("graph_builder")
        if graph:
            lines += [
                "",
                f"Graph construction on {graph['batches']} identical batches of shape "
                f"{graph['batch_shape']}: ours {graph['ours_ms_per_batch']:.2f} ms/batch, RecBole's "
                f"`_get_slice` {graph['recbole_ms_per_batch']:.1f} ms/batch: "
                f"**{graph['speedup']:.0f}×** faster.",
            ]
        lines.append("")
    lines += [
        "`÷ LastItem` is the time SR-GNN (or another model) takes relative to the floor model: "
        "the same loop with the session encoder replaced by the last item's embedding "
        "(1.00 = as fast as the floor).",
        "",
    ]
    return "\n".join(lines)


@cli_errors
def main(argv=None) -> int:
    parser = OneLineArgumentParser(flag_aliases={"--out": "--output", "--results": "--output"}, description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--batches", type=int, default=40, help="timed training batches (40)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first (3)")
    parser.add_argument("--rounds", type=int, default=2, help="round-robin repetitions, best kept (2)")
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--embedding_size", type=int, default=100)
    parser.add_argument("--graph_batches", type=int, default=10, help="batches for the graph-builder timing")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per measurement (0 = torch's default; 1 is steadier "
                             "on a shared machine)")
    parser.add_argument("--synthetic_events", dest="synthetic_events", type=int, default=None,
                        help="events in the generated retailrocket-synthetic log (default: its "
                             "YAML's synthetic_n_events, 120,000); smaller for a quick check")
    parser.add_argument("--data_path", dest="data_path", default=None,
                        help="RecBole data_path for the datasets (default: the configs' dataset/)")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    use_team_data()  # retailrocket-cotrec's source: ../shared/data unless the variable is set
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    info = machine()
    load_before = os.getloadavg()[0]
    results = []
    for dataset in args.datasets:
        print(f"[speed] preparing {dataset}", flush=True)
        prepare(dataset, args)
        best: dict[str, dict] = {}
        for round_index in range(args.rounds):
            for model in args.models:
                result = measure(model, dataset, args)
                print(
                    f"[speed] {dataset} round {round_index + 1}/{args.rounds} {model:13s} "
                    f"{result['sequences_per_second']:9,.0f} seq/s  peak {result['peak_rss_mb']:,.0f} MB",
                    flush=True,
                )
                if model not in best or result["sequences_per_second"] > best[model]["sequences_per_second"]:
                    best[model] = result
        results.extend(best[m] for m in args.models)
    load = (load_before, os.getloadavg()[0])
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(
        json.dumps({"machine": info, "load_average": load, "settings": vars(args), "results": results}, indent=2)
    )
    text = report(results, args, info, load)
    (out / "speed.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
