"""``python -m recbole_srgnn.compare --config FILE``: the comparison runner
(``recbole_srgnn.experiments.compare_cli``)."""

import sys

from recbole_srgnn.errors import sigterm_as_interrupt
from recbole_srgnn.experiments.compare_cli import main

if __name__ == "__main__":
    sigterm_as_interrupt()  # `kill` on the parent also stops the run's child
    sys.exit(main())
