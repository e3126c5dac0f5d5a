#!/usr/bin/env python
"""Train and test a session-based recommender (SR-GNN by default) with RecBole.

    python run.py [--model=SRGNN] [--dataset=retailrocket-synthetic] [--any_recbole_key=value ...]
    python run.py --checkpoint=saved/SRGNN-....pth                 # test a saved model

The same command is installed as ``recbole-srgnn train``; its code and options are in
``recbole_srgnn/train_cli.py`` (``python run.py --help``).
"""

import sys

from recbole_srgnn.experiments.options import split_options  # noqa: F401 (re-exported)
from recbole_srgnn.train_cli import build_parser, main, threads_value  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
