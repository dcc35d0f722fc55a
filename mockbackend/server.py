"""Listen (or connect) and serve vhost-user connections with a script.

As a server the socket file is created with mode 0600 (umask), as a client it connects
to a front-end that listens (QEMU's ``server=on`` chardev), retrying for a while. Each
connection gets a fresh :class:`~mockbackend.loop.ConnectionLoop` (and so a fresh
:class:`~mockbackend.context.Context`); the script (and its
device) lives across connections, which is what reconnection needs.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from pathlib import Path

from mockbackend.connection_report import Report
from mockbackend.context import Context
from mockbackend.loop import ConnectionLoop
from mockbackend.script import Script
from vhtrace.wire import connect_unix, listen_unix

log = logging.getLogger("mockbackend")

CONNECT_TIMEOUT = 30.0
"""As a client, how long to wait for a front-end to listen."""


class MockBackend:
    """Runs a :class:`Script` against connections; collects one report per connection."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.reports: list[Report] = []
        self.loop: ConnectionLoop | None = None
        """The connection being served (the last one once it ended)."""
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = False
        self.sessions_done = 0
        """Connections served to their end."""

    @property
    def ctx(self) -> Context | None:
        """The context of the connection being served (the last one once it ended)."""
        return self.loop.ctx if self.loop is not None else None

    @property
    def stopped(self) -> bool:
        """:meth:`stop` was called (by a signal handler, say)."""
        return self._stop

    def serve_connection(self, sock: socket.socket) -> Report:
        """Serve one connected socket until it closes."""
        self.loop = ConnectionLoop(sock, self.script)
        report = self.loop.run()
        self.sessions_done += 1
        self.reports.append(report)
        log.debug("%s", report.render())
        return report

    def serve(
        self, path: Path | str, *, client: bool = False, sessions: int | None = 1
    ) -> list[Report]:
        """Serve ``sessions`` connections (None: until stopped) on ``path``."""
        if client:
            for _ in range(sessions or 1):
                if self._stop:
                    break
                try:
                    sock = connect_unix(
                        path, CONNECT_TIMEOUT, stop=lambda: self._stop, interval=0.05
                    )
                except OSError:
                    if self._stop:
                        break
                    raise
                self.serve_connection(sock)
            return self.reports
        self._listener = listen_unix(path)
        try:
            count = 0
            while not self._stop and (sessions is None or count < sessions):
                try:
                    conn, _ = self._listener.accept()
                except OSError:
                    break
                count += 1
                self.serve_connection(conn)
        finally:
            self._listener.close()
            with contextlib.suppress(FileNotFoundError):
                Path(path).unlink()
        return self.reports

    def start(
        self, path: Path | str, *, client: bool = False, sessions: int | None = 1
    ) -> MockBackend:
        """Serve in a background thread (tests); a listening socket exists on return."""
        if not client:
            self._listener = listen_unix(path)
            listener = self._listener

            def run() -> None:
                count = 0
                try:
                    while not self._stop and (sessions is None or count < sessions):
                        try:
                            conn, _ = listener.accept()
                        except OSError:
                            return
                        count += 1
                        self.serve_connection(conn)
                finally:
                    listener.close()

            self._thread = threading.Thread(target=run, name="mockbackend", daemon=True)
        else:
            self._thread = threading.Thread(
                target=self.serve,
                args=(path,),
                kwargs={"client": True, "sessions": sessions},
                name="mockbackend",
                daemon=True,
            )
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0, reason: str = "stopped") -> list[Report]:
        """Stop accepting, end the current connection (its report says ``reason``),
        wait for the thread. Safe to call from a signal handler (``timeout=0``)."""
        self._stop = True
        loop = self.loop
        if loop is not None and not loop.report.closed_by:
            loop.report.closed_by = reason
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        if loop is not None:
            with contextlib.suppress(OSError):
                loop.sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout)
        return self.reports

    def wait(self, timeout: float | None = None) -> list[Report]:
        """Wait for the serving thread to end by itself (its sessions are done)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.reports
