"""A minimal, synchronous QMP client over a unix socket (QEMU's and QSD's monitor).

QMP is JSON, one object per line: a greeting, then ``qmp_capabilities``, then commands
answered by ``{"return": ...}`` or ``{"error": ...}``; asynchronous ``{"event": ...}``
objects may arrive at any time and are kept aside in :attr:`QmpClient.events`. That is
all the lab needs to drive migrations and resize disks, without a dependency on qemu.qmp.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from vhtrace.lab.proc import check_socket_path


class QmpError(RuntimeError):
    """QEMU answered a command with an error (or the connection broke)."""

    def __init__(self, message: str, error: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.error = dict(error or {})

    @property
    def error_class(self) -> str | None:
        """QMP error class, e.g. 'GenericError' or 'CommandNotFound'."""
        return self.error.get("class")


class QmpTimeout(QmpError):
    """Nothing arrived from QEMU in time."""


class QmpClient:
    """A connected QMP session; a context manager that closes it."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = check_socket_path(path)
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self.greeting: dict[str, Any] = {}
        self._sock: socket.socket | None = None
        self._buf = b""
        self._next_id = 0

    def connect(self, wait: float = 10.0) -> Self:
        """Connect (retrying up to ``wait`` s while the socket is not there yet) and negotiate."""
        deadline = time.monotonic() + wait
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() > deadline:
                    raise QmpError(f"cannot connect to QMP socket {self.path}") from None
                time.sleep(0.05)
        self._sock = sock
        self.greeting = self._read_message()
        if "QMP" not in self.greeting:
            raise QmpError(f"no QMP greeting on {self.path}: {self.greeting!r}")
        self.execute("qmp_capabilities")
        return self

    def _read_message(self, timeout: float | None = None) -> dict[str, Any]:
        if self._sock is None:
            raise QmpError("QMP client is not connected")
        timeout = self.timeout if timeout is None else timeout
        while b"\n" not in self._buf:
            self._sock.settimeout(timeout)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise QmpTimeout(f"nothing from {self.path} within {timeout:g} s") from None
            if not chunk:
                raise QmpError(f"QMP connection {self.path} closed by QEMU")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def execute(self, name: str, arguments: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        """Run command ``name``; its "return" value, or QmpError with QEMU's "error" text.

        Arguments come from the ``arguments`` mapping (verbatim names) and/or keywords,
        whose underscores become dashes (``max_bandwidth=`` -> ``max-bandwidth``).
        """
        if self._sock is None:
            raise QmpError("QMP client is not connected")
        args = dict(arguments or {})
        args.update({k.replace("_", "-"): v for k, v in kwargs.items()})
        self._next_id += 1
        request_id = f"vht-{self._next_id}"
        request: dict[str, Any] = {"execute": name, "id": request_id}
        if args:
            request["arguments"] = args
        self._sock.sendall(json.dumps(request).encode() + b"\n")
        while True:
            message = self._read_message()
            if "event" in message:
                self.events.append(message)
                continue
            if message.get("id") not in (request_id, None):
                continue  # an answer to something else: not ours to keep
            if "error" in message:
                err = message["error"]
                raise QmpError(f"{name}: {err.get('class')}: {err.get('desc')}", err)
            if "return" in message:
                return message["return"]

    def wait_event(self, name: str, timeout: float = 30.0) -> dict[str, Any]:
        """The first event called ``name`` (already received or arriving within ``timeout``)."""
        for i, event in enumerate(self.events):
            if event.get("event") == name:
                return self.events.pop(i)
        if self._sock is None:
            raise QmpError("QMP client is not connected")
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QmpTimeout(f"no {name} event within {timeout:g} s")
            try:
                message = self._read_message(remaining)
            except QmpTimeout:
                raise QmpTimeout(f"no {name} event within {timeout:g} s") from None
            if message.get("event") == name:
                return message
            if "event" in message:
                self.events.append(message)

    def close(self) -> None:
        """Close the connection (QEMU keeps running)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Self:
        if self._sock is None:
            self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
