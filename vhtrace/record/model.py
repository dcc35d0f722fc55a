"""What the relay keeps per connection: endpoints, sessions, held messages, its options."""

from __future__ import annotations

import socket
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from vhtrace.memory import triggers
from vhtrace.memory.hold import DEFAULT_HOLD_SECONDS, Hold
from vhtrace.protocol.connection import Connection, RelayReader
from vhtrace.protocol.spec import Channel, Side


@dataclass
class Outgoing:
    data: memoryview
    fds: list[int]
    """Sent with the first piece of data."""
    close_after: list[int]
    """Our copies, closed once the kernel has taken the data."""
    held_fds: int = 0
    """fds this entry keeps open until it is sent (counted against the pause limit)."""


class Endpoint:
    """One fd the proxy reads from, writes to, or both."""

    def __init__(
        self,
        session: Session,
        fd: int,
        channel: str,
        sender: Side,
        *,
        is_socket: bool,
        framed: bool,
        readable: bool = True,
        sock: socket.socket | None = None,
    ) -> None:
        self.session = session
        self.fd = fd
        self.sock = sock
        self.channel = Channel(channel)
        self.sender = sender
        """Who speaks through this endpoint: what we read here was sent by this side."""
        self.is_socket = is_socket
        self.readable = readable
        self.reader: RelayReader | None = None
        """Frames what is read here (from the session's connection); None: a byte stream."""
        if framed:
            self.reader = session.connection.relay_reader(self.channel, sender)
        self.peer: Endpoint | None = None
        self.outbox: deque[Outgoing] = deque()
        self.outbox_bytes = 0
        self.outbox_fds = 0
        """fds the outbox keeps open: bounded like its bytes."""
        self.closed = False
        self.events = 0
        """What the selector watches it for now (0: not registered)."""
        self.close_when_flushed = False
        self.paused = False
        self.held = False
        self.starved = False
        """Not read for now: the relay is too close to its fd limit (fdbudget)."""
        """A message read here waits for a before:NAME snapshot: read nothing more."""
        self.oversized_seq = 0
        self.oversized_dups: list[int] = []
        """dups of an oversized message's fds, for its record when it ends."""
        self.messages = True
        """vhost-user messages (recorded as messages) rather than a byte stream."""

    @property
    def label(self) -> str:
        return f"{self.channel}/{self.sender}"


@dataclass
class Held:
    """A message kept back until its before:NAME snapshot is written (or the deadline)."""

    hold: Hold
    endpoint: Endpoint
    data: bytes
    fds: list[int]
    close_after: list[int]
    number: int = 0
    """The hold's number, by which the recorder releases it."""


@dataclass
class Session:
    number: int
    info: dict[str, Any] = field(default_factory=dict)
    endpoints: list[Endpoint] = field(default_factory=list)
    frontend: Endpoint | None = None
    backend: Endpoint | None = None
    connection: Connection = field(default_factory=lambda: Connection(None))
    """Both sides of the session, framed (and with --strict checked) as the relay reads."""
    started: bool = False
    ended: bool = False
    end_reason: str = ""


DEFAULT_BUSY_POLL = 0.0002
"""200 us: longer than a back-end takes to answer most requests (benchmarks/bench_relay.py:
p50 80 us through the relay, where sleeping cost 140 us), short enough to cost little CPU
between the bursts a vhost-user conversation comes in."""


@dataclass
class ProxyConfig:
    frontend_path: str
    backend_path: str
    listen_side: Side
    """Which side connects to us: FRONTEND (--listen) or BACKEND (--listen-backend)."""
    socket_mode: int = 0o600
    connect_timeout: float = 30.0
    once: bool = False
    strict: bool = False
    hold: triggers.Triggers | None = None
    """Snapshot triggers whose before:NAME messages wait for the snapshot."""
    hold_seconds: float = DEFAULT_HOLD_SECONDS
    """The longest a message waits for its before:NAME snapshot."""
    device: str | None = None
    """The user's --device: named in every session-start, over any inference."""
    busy_poll: float = DEFAULT_BUSY_POLL
    """After a message, how long the relay polls without sleeping before it sleeps (0:
    never): the reply it waits for is then read without a wake-up of the relay."""
