"""``python -m jaxflows ...``: the command line (see :mod:`jaxflows.cli`)."""

import sys

from .cli import main

sys.exit(main())
