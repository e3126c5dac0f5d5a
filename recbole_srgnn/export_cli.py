"""``recbole-srgnn export``: a checkpoint written by run.py as a model bundle folder.

    recbole-srgnn export --checkpoint saved/SRGNN-....pth --output bundles/srgnn [--data_path=...]
    recbole-srgnn export --checkpoint saved/SRGNN-....pth --output bundles/srgnn-rules \
        --scorer SequenceRules --alpha 0.5 [--rule_steps 10] [--rule_repeat_boost 0]
    recbole-srgnn export --checkpoint saved/SRGNN-....pth --output bundles/srgnn-sknn \
        --scorer SKNN --alpha 0.01 [--scorer_option k=50 sample_size=500 ...]

Models: SRGNN, LastItem, RecBole's GRU4Rec, NARM and RecBoleSRGNN, SequenceRules and SessionPop
(:data:`recbole_srgnn.bundle.SUPPORTED_MODELS`); with ``--scorer`` an SRGNN checkpoint ranks as
the fusion runner's "SR-GNN + scorer" (softmax of its scores + alpha * the sequence rules, or a
kNN model's scorer, of the training split; the option names are the fusion config's and the kNN
models' own: ``--scorer_option k=50``).

The bundle (``recbole_srgnn.bundle``) loads without RecBole or the dataset:
``Recommender.load(folder)``. The dataset is read once here, for the item vocabulary and the
training popularity; other ``--key=value`` options go on top of the checkpoint's settings.
"""

from __future__ import annotations

import argparse

from recbole_srgnn.errors import InputError, OneLineArgumentParser, cli_errors
from recbole_srgnn.experiments.options import split_options

SCORER_CHOICES = ("SequenceRules", "SKNN", "VSKNN", "STAN", "VSTAN")  # training.export's scorers


def option_value(text: str) -> int | float | bool | str | None:
    """``"50"`` -> 50, ``"1.5"`` -> 1.5, ``"null"``/``"none"`` -> None, ``"true"`` -> True,
    anything else the text itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    lowered = text.strip().lower()
    return {"null": None, "none": None, "true": True, "false": False}.get(lowered, text)


def scorer_options(items: list[str]) -> dict:
    """``["k=50", ...]`` -> ``{"k": 50, ...}``; InputError (one line) for a malformed item."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InputError(f"--scorer_option {item}: expected KEY=VALUE")
        options[key.strip()] = option_value(value.strip())
    return options


def build_parser(prog: str = "recbole-srgnn export") -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog=prog,
        description="Write a trained model (a run.py checkpoint) as a bundle folder: weights.pt, "
                    "bundle.json (model config, item vocabulary, popularity, data fingerprint) "
                    "and SHA256SUMS. Supported models: SRGNN, LastItem, GRU4Rec, NARM, "
                    "RecBoleSRGNN, SequenceRules, SessionPop; with --scorer, SRGNN + a scorer "
                    "(the fusion runner's 'SR-GNN + scorer': SequenceRules, SKNN, VSKNN, STAN "
                    "or VSTAN).",
        epilog="Any other --key=value overrides a setting stored in the checkpoint (e.g. "
               "--data_path=dataset/). Errors print one line and exit with status 2.",
        allow_abbrev=False,
    )
    parser.add_argument("--checkpoint", required=True, help="a .pth checkpoint written by run.py")
    parser.add_argument("--output", required=True, help="the bundle folder to write (new, empty "
                        "or an earlier bundle, which is replaced)")
    fusion = parser.add_argument_group(
        "SR-GNN + scorer (the fusion runner's ranking: softmax(SR-GNN) + alpha * scorer)")
    fusion.add_argument("--scorer", default=None, choices=list(SCORER_CHOICES),
                        help="fuse the SRGNN checkpoint with this non-neural scorer, built on "
                             "the training split")
    fusion.add_argument("--alpha", type=float, default=0.0,
                        help="the scorer's weight (> 0; the fusion runner's chosen alpha)")
    fusion.add_argument("--rule_steps", type=int, default=10,
                        help="rule pairs at most this many clicks apart (default 10)")
    fusion.add_argument("--rule_repeat_boost", type=float, default=0.0,
                        help="the rules' repeat boost (default 0)")
    fusion.add_argument("--scorer_option", nargs="+", action="extend", default=[],
                        metavar="KEY=VALUE",
                        help="a scorer option over its defaults, e.g. k=50 for a kNN scorer (its "
                             "model's keys), rule_steps=5 or repeat_boost=2 for the rules")
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")
    return parser


@cli_errors
def main(argv: list[str] | None = None, prog: str = "recbole-srgnn export") -> int:
    args, extra = build_parser(prog).parse_known_args(argv)
    options = split_options(extra)
    given = scorer_options(args.scorer_option)
    from recbole_srgnn.bundle import check_output_folder  # torch: after parsing

    check_output_folder(args.output, "--output")
    from recbole_srgnn.training.export import export_bundle  # RecBole: after the checks

    folder = export_bundle(args.checkpoint, args.output, options or None, scorer=args.scorer,
                           alpha=args.alpha, rule_steps=args.rule_steps,
                           rule_repeat_boost=args.rule_repeat_boost, scorer_options=given)
    if not args.quiet:
        print(f"bundle: {folder}  (load it: recbole_srgnn.Recommender.load({str(folder)!r}))")
    return 0
