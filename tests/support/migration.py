"""Drive a postcopy live migration between two QEMUs over QMP.

Postcopy is the one flow that makes vhost-user back-ends handle page faults (POSTCOPY_*
messages, userfaultfd), so it is worth a helper. The source's bandwidth is capped so that
precopy is still running when postcopy is requested; otherwise precopy would simply win.
Repo-side (the scenarios' helper), not in the installed package.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vhtrace.lab.qmp import QmpClient, QmpError

FAILED_STATES = frozenset({"failed", "cancelled", "cancelling"})


class MigrationError(RuntimeError):
    """The migration failed, or did not complete in time; carries the last query-migrate."""

    def __init__(self, message: str, info: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.info = info or {}


@dataclass
class MigrationResult:
    """The last ``query-migrate`` answer of the source and every status seen on the way."""

    info: dict[str, Any]
    statuses: list[str] = field(default_factory=list)
    postcopy_started: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """Final status, 'completed' on success."""
        return str(self.info.get("status"))

    @property
    def entered_postcopy(self) -> bool:
        """True if the source reported the postcopy-active state at some point."""
        return "postcopy-active" in self.statuses


def postcopy_migrate(
    src: QmpClient,
    dst: QmpClient,
    uri: str,
    *,
    max_bandwidth: int = 20 * 1024 * 1024,
    postcopy_after: float = 1.0,
    timeout: float = 180.0,
    poll_interval: float = 0.2,
    on_poll: Callable[[dict[str, Any]], None] | None = None,
) -> MigrationResult:
    """Migrate from ``src`` to ``dst`` (started with ``-incoming defer``) via ``uri``.

    Enables postcopy-ram on both sides, caps the source at ``max_bandwidth`` bytes/s,
    starts the migration, switches to postcopy ``postcopy_after`` seconds later (if
    precopy is still active) and polls until the source reports completed. Raises
    MigrationError if it fails or takes longer than ``timeout``.
    """
    caps = [{"capability": "postcopy-ram", "state": True}]
    src.execute("migrate-set-capabilities", capabilities=caps)
    dst.execute("migrate-set-capabilities", capabilities=caps)
    src.execute("migrate-set-parameters", max_bandwidth=max_bandwidth)
    dst.execute("migrate-incoming", uri=uri)
    src.execute("migrate", uri=uri)

    started = time.monotonic()
    deadline = started + timeout
    result = MigrationResult(info={})
    while True:
        info = src.execute("query-migrate")
        result.info = info
        status = str(info.get("status"))
        if not result.statuses or result.statuses[-1] != status:
            result.statuses.append(status)
        if on_poll is not None:
            on_poll(info)
        if status == "completed":
            return result
        if status in FAILED_STATES:
            raise MigrationError(
                f"migration {status}: {info.get('error-desc', 'no error-desc')}", info
            )
        now = time.monotonic()
        if not result.postcopy_started and status == "active" and now - started >= postcopy_after:
            try:
                src.execute("migrate-start-postcopy")
                result.postcopy_started = True
            except QmpError as exc:
                # Precopy may have finished in between; the next poll tells.
                result.notes.append(f"migrate-start-postcopy refused: {exc}")
        if now > deadline:
            raise MigrationError(
                f"migration not completed after {timeout:g} s (status {status})", info
            )
        time.sleep(poll_interval)
