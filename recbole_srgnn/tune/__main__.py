"""``python -m recbole_srgnn.tune``: the Ray Tune search (``recbole_srgnn.tune.cli``)."""

import sys

from recbole_srgnn.tune.cli import main

if __name__ == "__main__":
    sys.exit(main())
