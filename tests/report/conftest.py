"""The report's tests read the same traces the CLI tests write."""

from tests.cli.conftest import mixed_trace, run_cli  # noqa: F401
