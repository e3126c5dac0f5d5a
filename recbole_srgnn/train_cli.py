"""``python run.py`` / ``recbole-srgnn train``: train and test a model, or test a checkpoint.

    python run.py [--model=SRGNN] [--dataset=retailrocket-synthetic] [--config_files="a.yaml b.yaml"]
                  [--result_file=PATH] [--resume_file=PATH] [--export=DIR] [--any_recbole_key=value ...]
    python run.py --checkpoint=saved/SRGNN-....pth [--result_file=PATH]   # test a saved model

Every other ``--key=value`` is a RecBole/plugin option, parsed like RecBole parses command-line
values (numbers, lists, dicts, true/false; anything else stays text), and overrides the config
layers (``properties/overall.yaml`` < ``properties/model/<Model>.yaml`` <
``properties/dataset/<dataset>.yaml`` < ``--config_files`` < command line). The options are
checked before any work (``training.option_checks``); heavy imports wait until they are.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recbole_srgnn.errors import InputError, OneLineArgumentParser, cli_errors
from recbole_srgnn.files import check_output_file
from recbole_srgnn.experiments.options import split_options

DEFAULT_MODEL = "SRGNN"
DEFAULT_DATASET = "retailrocket-synthetic"


def build_parser(prog: str = "run.py") -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog=prog,
        description=(
            "Train a session-based next-item recommender on pre-augmented RecBole benchmark "
            "files, validate every epoch (early stopping on valid_metric), test the best model, "
            "print a results table and write a results JSON. Model names resolve to the plugin's "
            "models first (SRGNN; the baselines LastItem, SessionPop, SequenceRules and the "
            "nearest-neighbour SKNN, VSKNN, STAN, VSTAN), then "
            "RecBole's built-ins (GRU4Rec, NARM, STAMP, ...); RecBoleSRGNN is RecBole's own "
            "SR-GNN."
        ),
        epilog=(
            "Any other --key=value is a RecBole or plugin option, e.g. --epochs=5 "
            "--learning_rate=0.01 --topk=[10,20] --gpu_id=0 --data_path=dataset/. Errors in "
            "names, files or options print one line and exit with status 2."
        ),
        allow_abbrev=False,  # --data_path must never be taken for --dataset
    )
    parser.add_argument("--model", "-m", default=DEFAULT_MODEL,
                        help=f"model name (default {DEFAULT_MODEL})")
    parser.add_argument("--dataset", "-d", default=DEFAULT_DATASET,
                        help=f"dataset name: a registered dataset or a folder under data_path "
                             f"(default {DEFAULT_DATASET}, the embedded synthetic log)")
    parser.add_argument("--config_files", default=None,
                        help='extra YAML config files, space-separated ("a.yaml b.yaml")')
    parser.add_argument("--checkpoint", default=None,
                        help="evaluate this saved checkpoint on its dataset's test split "
                             "instead of training (--model/--dataset come from the checkpoint)")
    parser.add_argument("--result_file", default=None,
                        help="where to write the results JSON "
                             "(default <checkpoint_dir>/<model>-<dataset>-<time>.json)")
    parser.add_argument("--resume_file", default=None,
                        help="keep the training state in this file after every epoch; if it "
                             "exists, continue the interrupted run from it (same settings "
                             "required); deleted when the run completes")
    parser.add_argument("--export", default=None, metavar="DIR",
                        help="after training, write the best model as a bundle folder here "
                             "(recbole_srgnn.Recommender.load; SRGNN, LastItem, GRU4Rec, NARM, "
                             "RecBoleSRGNN, SequenceRules, SessionPop)")
    parser.add_argument("--threads", type=threads_value, default=None, metavar="N|auto",
                        help="torch CPU threads per process (config key threads); default auto: "
                             "the cores other processes leave free, at least 1")
    parser.add_argument("--quiet", action="store_true",
                        help="no RecBole INFO logging, progress bars or results table")
    ddp = parser.add_argument_group("multi-GPU (RecBole DDP over NCCL; needs CUDA)")
    ddp.add_argument("--nproc", type=int, default=1, help="processes (GPUs) on this node")
    ddp.add_argument("--world_size", type=int, default=-1,
                     help="processes over all nodes (default: --nproc)")
    ddp.add_argument("--ip", default="localhost", help="address of the rank-0 node")
    ddp.add_argument("--port", default="5678", help="port of the rank-0 node")
    ddp.add_argument("--group_offset", type=int, default=0,
                     help="rank of this node's first process")
    return parser


def check_export(folder: str, model: str) -> None:
    """--export: InputError (one line) for a bad folder or a model a bundle cannot hold."""
    from recbole_srgnn.bundle import SUPPORTED_MODELS, check_output_folder  # torch: only if asked

    check_output_folder(folder, "--export")
    supported = {name.lower() for name in SUPPORTED_MODELS}  # names resolve ignoring case
    if str(model).strip().lower() not in supported:
        raise InputError(f"--export: model {model} cannot be exported as a bundle "
                         f"(supported: {', '.join(SUPPORTED_MODELS)})")


def threads_value(text: str) -> str:
    """``--threads``: 'auto' or a whole number >= 1 (argparse turns ValueError into one line)."""
    if text.strip().lower() == "auto":
        return "auto"
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a whole number >= 1, got {text!r}")
    return str(int(text))


@cli_errors
def main(argv: list[str] | None = None, prog: str = "run.py") -> int:
    args, extra = build_parser(prog).parse_known_args(argv)
    options = split_options(extra)
    if args.threads is not None:
        options["threads"] = args.threads
    config_files = args.config_files.split() if args.config_files else None
    for flag, path in (("--result_file", args.result_file), ("--resume_file", args.resume_file)):
        if path is not None:  # before any work, not after training
            check_output_file(path, flag)
    if args.export is not None:
        if args.checkpoint:
            raise InputError("--export applies to a training run; a checkpoint is exported by "
                             "recbole-srgnn export --checkpoint PATH --output DIR")
        check_export(args.export, args.model)
    if args.checkpoint and Path(args.checkpoint).is_dir():
        raise InputError(f"--checkpoint {args.checkpoint} is a folder; give a .pth file "
                         "(checkpoints are written to checkpoint_dir, saved/ by default)")

    # Import after parsing: --help and option errors stay instant.
    from recbole_srgnn.training.checkpoints import evaluate_checkpoint
    from recbole_srgnn.training.distributed import run_distributed
    from recbole_srgnn.training.runs import run

    if args.resume_file and (args.checkpoint or args.nproc != 1 or args.world_size > 0):
        raise InputError("--resume_file applies to a single-process training run "
                         "(not to --checkpoint or multi-GPU runs)")
    if args.checkpoint:
        if config_files:
            raise InputError("--config_files does not apply to --checkpoint "
                             "(its settings are stored in the checkpoint); use --key=value")
        evaluate_checkpoint(args.checkpoint, options or None,
                            result_file=args.result_file, quiet=args.quiet)
        return 0
    if args.nproc != 1 or args.world_size > 0:
        if args.export is not None:
            raise InputError("--export applies to a single-process training run; export the "
                             "checkpoint afterwards with recbole-srgnn export")
        run_distributed(
            args.model, args.dataset, config_files, options or None,
            nproc=args.nproc, world_size=args.world_size, ip=args.ip, port=args.port,
            group_offset=args.group_offset, result_file=args.result_file, quiet=args.quiet,
        )
        return 0
    run(args.model, args.dataset, config_files, options or None,
        result_file=args.result_file, quiet=args.quiet, resume_file=args.resume_file,
        export=args.export)
    return 0
