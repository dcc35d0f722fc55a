"""``python -m vhtrace``: the same as the ``vhtrace`` command."""

from vhtrace.cli.main import main

raise SystemExit(main())
