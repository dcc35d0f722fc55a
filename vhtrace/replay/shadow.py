"""``--unknown forward``: a real back-end shadows the conversation and answers the unknown.

Forwarding only the requests the trace lacks would not work: a vhost-user back-end is
stateful (features, memory, rings), and one that never saw the beginning of the
conversation cannot answer its middle. So the shadow back-end sees every request the
live front-end sends (same bytes, the same fds passed along), while the front-end keeps
getting the recorded replies; the shadow's replies are read and dropped (the latest few
kept), except for a request the trace does not have, whose reply (and fds) goes to the
front-end.

The shadow's own back-end channel ends at us: its requests there are acknowledged
(u64 0) and otherwise ignored; the front-end's back-end channel stays the replay's.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections import deque

from vhtrace.protocol import spec
from vhtrace.protocol.connection import Connection
from vhtrace.protocol.conversation import WireMessage
from vhtrace.protocol.framing import Frame, pack_header
from vhtrace.protocol.spec import Channel, Side
from vhtrace.replay.answers import Answer
from vhtrace.replay.links import Link
from vhtrace.replay.session import UnknownRequest
from vhtrace.wire import close_fds, connect_unix

REPLY_TIMEOUT = 5.0
KEEP_REPLIES = 64
"""The shadow's latest replies kept (a policy asks for one just after its request)."""


class Shadow:
    """A connection to a real back-end that follows the live front-end's requests."""

    def __init__(self, sock: socket.socket, path: str) -> None:
        self.connection = Connection(Side.FRONTEND)
        """The shadow's own conversation (its numbering is not the live front-end's)."""
        self.link = Link(sock, Channel.MAIN, self.connection)
        self.path = path
        self.owed: deque[int] = deque()
        """Our numbers of the forwarded requests whose replies the shadow owes, in order."""
        self.replies: dict[int, Frame] = {}
        """The shadow's replies by our number of the request they answer."""
        self._by_live: dict[int, int] = {}
        self._threads: list[threading.Thread] = []
        self._channel_ends: list[socket.socket] = []

    @classmethod
    def connect(cls, path: str, timeout: float) -> Shadow:
        return cls(connect_unix(path, timeout), path)

    def forward(self, channel: Channel, wire: WireMessage, fds: tuple[int, ...]) -> None:
        """Pass one live front-end message on (the runner's tap)."""
        if channel is not Channel.MAIN or self.link.closed:
            return
        send_fds = list(fds)
        row = spec.request_spec(Channel.MAIN, wire.request)
        if row is not None and row.opens == "backend" and send_fds:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            send_fds[0] = theirs.fileno()
            self._serve_channel(ours)
            passed = theirs
        else:
            passed = None
        frame = Frame(wire.request, wire.flags, wire.size, wire.payload, tuple(send_fds))
        try:
            self.link.send(frame.raw, frame.fds)
        except OSError:
            self.link.close()
            return
        finally:
            if passed is not None:
                passed.close()
        own = self.connection.sending(frame).seq
        self._by_live[wire.seq] = own
        if any(p.seq == own for p in self.connection.conversation.pending[Channel.MAIN]):
            self.owed.append(own)
        self._drain(0.0)

    def policy(self, request: UnknownRequest) -> Answer | None:
        """Answer a request the trace does not have with the shadow's reply."""
        own = self._by_live.get(request.wire.seq)
        if own is None:
            return None
        if request.pending is None:
            return Answer(b"", (), f"forwarded to {self.path}; no reply owed")
        deadline = time.monotonic() + REPLY_TIMEOUT
        while own not in self.replies and not self.link.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._drain(left)
        frame = self.replies.pop(own, None)
        if frame is None:
            return None
        return Answer(
            frame.payload, (), f"answered by the real back-end at {self.path}", pass_fds=frame.fds
        )

    def _drain(self, timeout: float) -> None:
        """Read what the shadow sent; keep the replies someone waits for, drop the rest."""
        if self.link.closed:
            return
        readable, _, _ = select.select([self.link.sock], [], [], timeout)
        if not readable:
            return
        messages, eof = self.link.read()
        for received in messages:
            frame = received.frame
            answered = received.analysis.answers
            if answered is not None and answered in self.owed:
                self.owed.remove(answered)
                self.replies[answered] = frame
                while len(self.replies) > KEEP_REPLIES:
                    oldest = min(self.replies)
                    close_fds(self.replies.pop(oldest).fds)
                continue
            close_fds(frame.fds)
        if eof:
            self.link.close()

    def _serve_channel(self, sock: socket.socket) -> None:
        """Acknowledge the shadow's back-end-channel requests; nothing else reaches them."""
        self._channel_ends.append(sock)

        def run() -> None:
            link = Link(sock, Channel.BACKEND, Connection(Side.FRONTEND))
            while not link.closed:
                try:
                    readable, _, _ = select.select([sock], [], [], 0.5)
                except (OSError, ValueError):
                    return
                if not readable:
                    continue
                messages, eof = link.read()
                for received in messages:
                    frame = received.frame
                    close_fds(frame.fds)
                    if frame.flags & spec.FLAG_NEED_REPLY:
                        with contextlib.suppress(OSError):
                            link.send(pack_header(frame.request, spec.REPLY_FLAGS, 8) + bytes(8))
                if eof:
                    return

        thread = threading.Thread(target=run, name="vhtrace-shadow-channel", daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        self.link.close()
        for sock in self._channel_ends:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(2)
        for sock in self._channel_ends:
            sock.close()
        for frame in self.replies.values():
            close_fds(frame.fds)
        self.replies.clear()
