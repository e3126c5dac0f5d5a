"""Training speed of full cross-entropy against the sampled softmax (``loss_type: SSM``).

One model (default SR-GNN) on one dataset (``--dataset``, default the embedded
``retailrocket-synthetic``) trains with each loss in turn: CE, then SSM with each of
``--negatives`` (default 2048 and 8192 negatives per batch). Every variant gets the same seed,
batch size and embedding size and RecBole's data loader; ``--warmup`` batches are discarded,
then ``--batches`` are timed (data loading, forward, backward, Adam step). Each measurement runs
in its own subprocess; the variants are measured round-robin ``--rounds`` times and the best
round is kept. A ``num_negatives`` above the catalogue is clamped by the model (as in training);
the report gives the count used.

    python -m benchmarks.ssm --threads 1
    python -m benchmarks.ssm --dataset retailrocket-synthetic --batches 20 --rounds 1

Writes ``<out>/ssm_speed.md`` and ``<out>/ssm_speed.json`` (default ``benchmarks/results``),
both renamed into place only when the run completed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from benchmarks.speed import machine, run_worker, shared_settings, timed_training
from benchmarks.team_data import use_team_data
from recbole_srgnn.errors import OneLineArgumentParser, cli_errors
from recbole_srgnn.files import atomic_outputs

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = "retailrocket-synthetic"
DEFAULT_NEGATIVES = [2048, 8192]


def variant_settings(negatives: int) -> dict:
    """The loss settings of one variant: 0 = full cross-entropy, else SSM with that many."""
    if negatives == 0:
        return {"loss_type": "CE"}
    return {"loss_type": "SSM", "num_negatives": negatives}


def label(negatives: int) -> str:
    return "CE" if negatives == 0 else f"SSM {negatives}"


# --------------------------------------------------------------------------------------------
# worker: one variant in its own process
# --------------------------------------------------------------------------------------------
def worker(args) -> dict:
    settings = {**shared_settings(args, args.dataset), **variant_settings(args.negatives)}
    config, _, model, timing = timed_training(args, settings)
    return {
        "variant": label(args.negatives),
        "loss_type": config["loss_type"],
        "num_negatives_asked": args.negatives or None,
        "num_negatives_used": getattr(model, "num_negatives", None) if args.negatives else None,
        "ssm_correction": getattr(model, "ssm_correction", None) if args.negatives else None,
        **timing,
    }


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------
def measure(negatives: int, args) -> dict:
    return run_worker("benchmarks.ssm", args.model, args.dataset,
                      ["--negatives_one", str(negatives)], label(negatives), args)


def prepare(args) -> None:
    """Build the dataset once, before any timing."""
    from recbole_srgnn.training.datasets import ready_settings

    ready_settings(args.model, args.dataset, config_dict=shared_settings(args, args.dataset))


def report(results: list[dict], args, info: dict, load: tuple, command: str) -> str:
    first = results[0]
    corrections = sorted({r["ssm_correction"] for r in results if r.get("ssm_correction")})
    estimator = f"; estimator `ssm_correction: {', '.join(corrections)}`" if corrections else ""
    lines = [
        "# Training speed: full cross-entropy vs sampled softmax (SSM)",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GB RAM, "
        f"GPU: {info['gpu'] or 'none'}; Python {info['python']}, torch {info['torch']} "
        f"({args.threads or info['torch_threads']} threads per run). Load average before/after: "
        f"{load[0]:.2f} / {load[1]:.2f}.",
        "",
        f"{args.model} on {args.dataset} ({first['num_items']} items, device {first['device']}): "
        f"batch size {args.batch_size}, embedding size {args.embedding_size}, {args.warmup} "
        f"warm-up + {args.batches} timed training batches (data loading, forward, backward, Adam "
        f"step), best of {args.rounds} round-robin rounds, each in a fresh process. SSM "
        f"candidates per batch: the batch's targets + the negatives used{estimator}.",
        "",
        f"Command: `{command}`",
        "",
        "| loss | negatives asked | negatives used | sequences/s | × CE | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    ce = next((r for r in results if r["loss_type"] == "CE"), None)
    for r in results:
        speed = r["sequences_per_second"]
        ratio = f"{speed / ce['sequences_per_second']:.2f}" if ce else "–"
        asked = r["num_negatives_asked"] or "–"
        used = r["num_negatives_used"] or "–"
        lines.append(f"| {r['variant']} | {asked} | {used} | {speed:,.0f} | {ratio} | "
                     f"{r['peak_rss_mb']:,.0f} |")
    lines.append("")
    return "\n".join(lines)


def write_outputs(out: Path, summary: dict, text: str) -> None:
    """``ssm_speed.json`` and ``ssm_speed.md``, each written to a temporary name and renamed."""
    with atomic_outputs([out / "ssm_speed.json", out / "ssm_speed.md"]) as (json_tmp, md_tmp):
        json_tmp.write_text(json.dumps(summary, indent=2) + "\n")
        md_tmp.write_text(text)


@cli_errors
def main(argv=None) -> int:
    parser = OneLineArgumentParser(flag_aliases={"--out": "--output", "--results": "--output"},
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default=DEFAULT_DATASET,
                        help=f"dataset name ({DEFAULT_DATASET}, the embedded default)")
    parser.add_argument("--model", default="SRGNN", help="a SessionScorer model (SRGNN)")
    parser.add_argument("--negatives", type=int, nargs="+", default=DEFAULT_NEGATIVES,
                        help="SSM variants: negatives per batch (2048 8192); CE always runs")
    parser.add_argument("--batches", type=int, default=300, help="timed training batches (300)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first (5)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="round-robin repetitions, best kept (2)")
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--embedding_size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per measurement (0 = torch's default; 1 is steadier "
                             "on a shared machine)")
    parser.add_argument("--synthetic_events", type=int, default=None,
                        help="events in the generated retailrocket-synthetic log (default: its "
                             "YAML's); smaller for a quick check")
    parser.add_argument("--data_path", default=None,
                        help="RecBole data_path (default: the configs' dataset/)")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--negatives_one", dest="negatives_one", type=int, default=0,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("batches", "batch_size", "embedding_size", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.warmup < 0 or args.threads < 0 or any(n < 1 for n in args.negatives):
        parser.error("--warmup and --threads must be >= 0, --negatives each >= 1")
    use_team_data()
    if args.worker:
        args.negatives = args.negatives_one
        print(json.dumps(worker(args)))
        return 0

    info = machine()
    load_before = os.getloadavg()[0]
    print(f"[ssm] preparing {args.dataset}", flush=True)
    prepare(args)
    variants = [0, *args.negatives]
    best: dict[int, dict] = {}
    for round_index in range(args.rounds):
        for negatives in variants:
            result = measure(negatives, args)
            print(f"[ssm] round {round_index + 1}/{args.rounds} {label(negatives):9s} "
                  f"{result['sequences_per_second']:9,.0f} seq/s", flush=True)
            if (negatives not in best or result["sequences_per_second"]
                    > best[negatives]["sequences_per_second"]):
                best[negatives] = result
    results = [best[n] for n in variants]
    load = (load_before, os.getloadavg()[0])
    command = "python -m benchmarks.ssm " + " ".join(sys.argv[1:] if argv is None else argv)
    text = report(results, args, info, load, command.strip())
    summary = {"machine": info, "load_average": load, "settings": vars(args),
               "command": command.strip(), "results": results}
    write_outputs(Path(args.output), summary, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
