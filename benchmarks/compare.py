"""``python -m benchmarks.compare``: the comparison runner under the name that committed reports
and configs cite, on the team's real data (``benchmarks.team_data``); the runner is
``python -m recbole_srgnn.compare`` (``recbole_srgnn.experiments.compare_cli``)."""

import sys

from benchmarks.team_data import use_team_data
from recbole_srgnn.errors import sigterm_as_interrupt
from recbole_srgnn.experiments import compare_cli

PROG = "python -m benchmarks.compare"


def main(argv=None) -> int:
    """The comparison command line, named ``python -m benchmarks.compare`` in its output; real
    sources are found in ``../shared/data`` unless ``$RECBOLE_SRGNN_SHARED_DATA`` says otherwise."""
    use_team_data()
    return compare_cli.main(argv, prog=PROG)


if __name__ == "__main__":
    sigterm_as_interrupt()  # `kill` on the parent also stops the run's child
    sys.exit(main())
