"""``python -m recbole_srgnn.fusion --config FILE``: SR-GNN + sequence rules, alpha chosen on
validation (``recbole_srgnn.experiments.fusion_cli``)."""

import sys

from recbole_srgnn.experiments.fusion_cli import main

if __name__ == "__main__":
    sys.exit(main())
