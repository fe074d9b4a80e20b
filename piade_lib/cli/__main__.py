"""``python -m piade_lib.cli``: the ``piade`` command."""

import sys

from piade_lib.cli import main

sys.exit(main())
