"""Where the benchmark commands find the team's real data: ``../shared/data`` next to the checkout.

The product looks for a dataset's source only where its docs tell users to put it
(``source_path``, ``<data_path>/raw/<name>/``, or ``$RECBOLE_SRGNN_SHARED_DATA/<name>``; see
``recbole_srgnn.data.registry``). The benchmark commands (``python -m benchmarks.compare``,
``benchmarks.fusion``, ``benchmarks.speed``) run on the team's copies of the real sources, so
they point that variable at ``../shared/data`` unless it is set already. The variable is not
part of any run's settings: committed run records stay valid wherever the data lies.
"""

from __future__ import annotations

import os
from pathlib import Path

from recbole_srgnn.data.registry import SOURCES_ENV

TEAM_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def use_team_data() -> Path:
    """Set ``$RECBOLE_SRGNN_SHARED_DATA`` to the team's folder unless it is set; the folder used."""
    if not os.environ.get(SOURCES_ENV, "").strip():
        os.environ[SOURCES_ENV] = str(TEAM_DATA)
    return Path(os.environ[SOURCES_ENV])
