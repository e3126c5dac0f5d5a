"""``python -m benchmarks.fusion``: the fusion runner under the name that committed reports and
configs cite, on the team's real data (``benchmarks.team_data``); the runner is
``python -m recbole_srgnn.fusion`` (``recbole_srgnn.experiments.fusion_cli``)."""

import sys

from benchmarks.team_data import use_team_data
from recbole_srgnn.experiments import fusion_cli

PROG = "python -m benchmarks.fusion"


def main(argv=None) -> int:
    """The fusion command line, named ``python -m benchmarks.fusion`` in its output; real sources
    are found in ``../shared/data`` unless ``$RECBOLE_SRGNN_SHARED_DATA`` says otherwise."""
    use_team_data()
    return fusion_cli.main(argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
