"""``python -m benchmarks.compare``: the comparison runner under the name that committed reports
and configs cite; the runner is ``python -m recbole_srgnn.compare``
(``recbole_srgnn.experiments.compare_cli``)."""

import sys

from recbole_srgnn.errors import sigterm_as_interrupt
from recbole_srgnn.experiments import compare_cli

PROG = "python -m benchmarks.compare"


def main(argv=None) -> int:
    """The comparison command line, named ``python -m benchmarks.compare`` in its output."""
    return compare_cli.main(argv, prog=PROG)


if __name__ == "__main__":
    sigterm_as_interrupt()  # `kill` on the parent also stops the run's child
    sys.exit(main())
