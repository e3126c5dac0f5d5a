"""``python -m recbole_srgnn.data``: see ``recbole_srgnn.data.cli``."""

import sys

from recbole_srgnn.data.cli import main

if __name__ == "__main__":
    sys.exit(main())
