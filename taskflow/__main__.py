"""python -m taskflow: the taskflow command (see taskflow.cli)."""

import sys

from .cli import main

sys.exit(main())
