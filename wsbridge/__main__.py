"""``python -m wsbridge``: the same as the ``wsbridge`` command."""

import sys

from .cli import main

sys.exit(main())
