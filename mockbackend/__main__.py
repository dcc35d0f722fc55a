"""``python -m mockbackend``: the same as the ``mockbackend`` command."""

import sys

from mockbackend.cli import main

sys.exit(main())
