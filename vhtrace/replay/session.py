"""The I/O loop of one replayed session: sockets, fds and clocks around a Player.

One thread, one selector. The loop sends every message of ours the
:class:`~vhtrace.replay.player.Player` releases (re-creating its fds by kind), reads
whatever the peer sends on the main connection and the back-end channel, runs it
through a live :class:`~vhtrace.protocol.conversation.Conversation` (so the live
message decodes by the protocol's rules and its protocol errors are noted) and hands
it to the player. Channels come and go as the conversation opens them: the back-end
channel socket (ours from a socketpair when we play the front-end, the front-end's
when we play the back-end), the device-state pipe (recorded bytes written, live bytes
read and compared), the GPU socket (drained: another protocol, not replayed).

The loop ends when the player has nothing left (then the side whose turn it is, by the
recording, closes), when the peer closes, when nothing comes for ``timeout`` seconds,
or when told to stop.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from vhtrace import fdinfo
from vhtrace.protocol import spec
from vhtrace.protocol.connection import Connection
from vhtrace.protocol.connection import Received as LiveMessage
from vhtrace.protocol.conversation import Conversation, Pending, Role, WireMessage
from vhtrace.protocol.findings import Severity
from vhtrace.protocol.framing import Frame
from vhtrace.protocol.spec import Channel, Side
from vhtrace.replay.answers import Answer
from vhtrace.replay.compare import view
from vhtrace.replay.fds import FdFactory
from vhtrace.replay.links import Link
from vhtrace.replay.plan import SessionPlan, Step
from vhtrace.replay.player import Outcome, Player, Received
from vhtrace.replay.report import Divergence, Kind, SessionResult
from vhtrace.replay.streams import StreamEnd, write_and_close
from vhtrace.wire import close_fds

POLL = 0.25
"""Seconds between checks of the stop flag while nothing happens."""


@dataclass(frozen=True)
class LoopOptions:
    timeout: float | None = 5.0
    """Longest wait for an expected message (None: as long as it takes)."""
    close_timeout: float = 2.0
    """How long to wait for the peer to close when the recording says it will."""
    realtime: bool = False
    wait_owed: bool = False
    """Playing the front-end, where the recording hangs up with a reply still owed (a hang
    the recording shows): wait ``timeout`` for it before hanging up, so that a reply the
    live back-end does send is seen (a divergence), and its absence is said."""


@dataclass
class UnknownRequest:
    """A live request the trace does not have, for the --unknown policy to answer."""

    wire: WireMessage
    fds: tuple[int, ...]
    """The request's fds (still open while the policy runs)."""
    pending: Pending | None
    """The reply the live conversation says is owed, or None."""


UnknownPolicy = Callable[[UnknownRequest], Answer | None]
"""Returns the answer to send (or None to count the request as a divergence)."""
Tap = Callable[[Channel, WireMessage, tuple[int, ...]], None]
"""Sees every live message with its fds (still open) before it is judged."""


class SessionRunner:
    """Runs one session of a plan over a connected socket."""

    def __init__(
        self,
        plan: SessionPlan,
        player: Player,
        main: socket.socket,
        *,
        factory: FdFactory,
        options: LoopOptions,
        unknown: UnknownPolicy | None = None,
        stop: threading.Event | None = None,
        tap: Tap | None = None,
        after_send: Callable[[Step], None] | None = None,
    ) -> None:
        self.plan = plan
        self.after_send = after_send
        """Called once each of our messages is out (replay makes a trace's guest actions)."""
        self.player = player
        self.play = plan.play
        self.peer = plan.play.peer
        self.factory = factory
        self.options = options
        self.unknown = unknown
        self.tap = tap
        self.stop = stop or threading.Event()
        device = plan.steps[0].view.context.device if plan.steps else None
        self.connection = Connection(self.play, device)
        """The live conversation: what we send and what the peer sends, both channels."""
        self.selector = selectors.DefaultSelector()
        self.links: dict[Channel, Link] = {}
        self.extra: list[socket.socket | int] = []
        """Other ends we hold until the session ends."""
        self.result = SessionResult(plan.session, planned=len(plan.steps), notes=list(plan.notes))
        self.main_closed = False
        self.start = 0.0
        self._send_at: float | None = None
        self._add_link(Link(main, Channel.MAIN, self.connection))

    @property
    def conversation(self) -> Conversation:
        return self.connection.conversation

    # -- the loop ------------------------------------------------------------------

    def run(self) -> SessionResult:
        self.start = time.monotonic()
        try:
            self._loop()
            if not self.player.stopped:
                self._finish_streams()
        finally:
            self.result.elapsed = time.monotonic() - self.start
            self.result.unanswered = [p.row.name for p in self.conversation.pending[Channel.MAIN]]
            self._close_all()
        self.result.sent = self.player.sent_count
        self.result.received = self.player.received_count
        self.result.checks = self.player.all_checks()
        self.result.divergences = list(self.player.divergences)
        for note in self.factory.notes:
            if note not in self.result.notes:
                self.result.notes.append(note)
        return self.result

    def _loop(self) -> None:
        idle_since = time.monotonic()
        while True:
            if self._send_ready():
                idle_since = time.monotonic()
            player = self.player
            if player.stopped or self.main_closed:
                return
            streaming = bool(self._compared_streams())
            finished = player.finished and not streaming
            owed = finished and self._we_close() and self._waits_for_owed()
            if finished and self._we_close() and not owed:
                return
            limit = self.options.timeout
            if finished and self.play is Side.FRONTEND and not owed:
                limit = self.options.close_timeout
            wait = POLL
            if self._send_at is not None:
                # --realtime: our next message waits for its recorded time, not for the
                # peer, whose silence until then is expected
                wait = min(wait, max(0.0, self._send_at - time.monotonic()))
                limit, idle_since = None, time.monotonic()
            if limit is not None:
                wait = min(wait, max(0.0, idle_since + limit - time.monotonic()))
            events = self.selector.select(wait)
            if self.stop.is_set():
                if not finished:
                    self.result.interrupted = True
                    self.result.notes.append("interrupted before the end of the session")
                return
            if events:
                idle_since = time.monotonic()
                for key, _ in events:
                    self._readable(key.data)
                    if self.player.stopped or self.main_closed:
                        return
            elif limit is not None and time.monotonic() - idle_since >= limit:
                if owed:
                    names = ", ".join(p.row.name for p in self.conversation.pending[Channel.MAIN])
                    self.result.notes.append(
                        f"{names}: no reply within {limit:g} s, as in the recording "
                        f"(the {self.peer.value} owes it and stayed connected: a hang)"
                    )
                    return
                if player.finished and streaming:
                    self._stream_timeout(limit)
                    return
                if finished:
                    player.still_open(limit)
                else:
                    player.timed_out(limit)
                return

    def _waits_for_owed(self) -> bool:
        return (
            self.options.wait_owed
            and self.options.timeout is not None
            and self.play is Side.FRONTEND
            and bool(self.conversation.pending[Channel.MAIN])
        )

    def _we_close(self) -> bool:
        """Whether, with the plan done, we end the session now (else wait for the peer)."""
        if self.play is Side.FRONTEND:
            return not self.plan.peer_closes
        return self.plan.we_close

    # -- sending -------------------------------------------------------------------

    def _send_ready(self) -> bool:
        """Send what the player releases; True if anything went out."""
        sent = False
        while (step := self.player.next_send()) is not None:
            if self.options.realtime:
                due = self.start + step.time
                if time.monotonic() < due:
                    self._send_at = due
                    return sent
                self._send_at = None
            self._send(step)
            sent = True
        return sent

    def _send(self, step: Step) -> None:
        link = self.links.get(step.channel)
        if link is None or link.closed:
            self.player.send_failed(step, f"no {step.channel} channel (it was never opened)")
            return
        made = [
            self.factory.make(meta, seq=step.seq, index=i, fields=step.view.fields)
            for i, meta in enumerate(step.fds)
        ]
        try:
            link.send(step.raw, [m.fd for m in made])
        except OSError as exc:
            for m in made:
                if m.kept is not None:
                    _close(m.kept)
            self.player.send_failed(step, f"the {self.peer.value} is gone ({exc.strerror or exc})")
            return
        finally:
            for m in made:
                if m.close_after_send:
                    _close(m.fd)
        for index, m in enumerate(made):
            if m.kept is not None:
                self._keep(step, step.fds[index], m.kept, m.kept_kind)
        self.connection.sending(Frame.parse(step.raw, tuple(m.fd for m in made)), step.channel)
        self.player.sent(step)
        if self.after_send is not None:
            self.after_send(step)

    def _keep(self, step: Step, meta: dict, kept: socket.socket | int, kind: str | None) -> None:
        """Our end of a channel we passed the other end of."""
        opens = meta.get("interposed") or _opens(step.channel, step.view.request, step.view.role)
        if opens == "backend" and isinstance(kept, socket.socket):
            self._add_link(Link(kept, Channel.BACKEND, self.connection))
        elif opens == "gpu" and isinstance(kept, socket.socket):
            self._add_stream(kept.detach(), "gpu", None)
        elif kind in ("pipe-read", "pipe-write") and isinstance(kept, int):
            self._pipe(kept, writing=kind == "pipe-write")
        else:
            self.extra.append(kept)

    # -- receiving -----------------------------------------------------------------

    def _readable(self, target: Link | StreamEnd) -> None:
        if isinstance(target, StreamEnd):
            self._read_stream(target)
            return
        messages, eof = target.read()
        for received in messages:
            self._on_received(received)
        if eof:
            self._on_eof(target)

    def _on_received(self, message: LiveMessage) -> None:
        frame, wire, analysis = message.frame, message.wire, message.analysis
        channel = wire.channel
        metas = tuple(fdinfo.describe(fd) for fd in frame.fds)
        live = view(wire, analysis, metas)
        for finding in analysis.findings:
            if finding.severity is Severity.ERROR:
                self.result.findings.append(f"live {live.label}: {finding.text}")
        if self.player.stopped:
            close_fds(frame.fds)
            return
        if self.tap is not None:
            self.tap(channel, wire, frame.fds)
        received = self.player.receive(live)
        fds = list(frame.fds)
        self._take_channel_fds(channel, analysis.role, wire.request, fds, metas, received)
        try:
            if received.outcome is Outcome.UNKNOWN:
                self._not_in_trace(wire, tuple(fds), received)
        finally:
            close_fds(fds)

    def _take_channel_fds(
        self,
        channel: Channel,
        role: Role,
        request: int,
        fds: list[int],
        metas: tuple[dict, ...],
        received: Received,
    ) -> None:
        """Keep the fds of a live message that open a channel (the rest gets closed)."""
        if not fds:
            return
        opens = _opens(channel, request, role)
        if opens is None and received.step is not None:
            recorded = [m.get("interposed") for m in received.step.fds]
            opens = next((o for o in recorded if o), None)
        if opens is None:
            return
        fd, meta = fds.pop(0), metas[0]
        if opens == "backend" and meta.get("kind") == "socket":
            self._add_link(Link(socket.socket(fileno=fd), Channel.BACKEND, self.connection))
        elif opens == "gpu":
            self._add_stream(fd, "gpu", None)
        elif opens == "device-state" and meta.get("kind") == "pipe":
            self._pipe(fd, writing="wronly" in meta.get("flags", ()))
        else:
            fds.insert(0, fd)

    def _not_in_trace(self, wire: WireMessage, fds: tuple[int, ...], received: Received) -> None:
        pending = next(
            (p for p in self.conversation.pending[wire.channel] if p.seq == wire.seq), None
        )
        if self.unknown is None:
            self.player.not_in_trace(received, handled=None)
            return
        answer = self.unknown(UnknownRequest(wire, fds, pending))
        if answer is None:
            self.player.not_in_trace(received, handled=None)
            return
        if pending is None:
            self.player.not_in_trace(received, handled=answer.how)
            return
        link = self.links[wire.channel]
        made = [self.factory.make(meta, seq=0, index=i) for i, meta in enumerate(answer.fds)]
        send_fds = [m.fd for m in made] + list(answer.pass_fds)
        reply = Frame.build(wire.request, spec.REPLY_FLAGS, answer.payload, tuple(send_fds))
        try:
            link.send(reply.raw, reply.fds)
        except OSError as exc:
            self.result.notes.append(f"could not answer live request {wire.request}: {exc}")
            self.player.not_in_trace(received, handled=None)
            return
        finally:
            close_fds(answer.pass_fds)
            for m in made:
                if m.close_after_send:
                    _close(m.fd)
                if m.kept is not None:
                    self.extra.append(m.kept)
        self.connection.sending(reply, wire.channel)
        self.player.not_in_trace(received, handled=answer.how)

    def _on_eof(self, link: Link) -> None:
        self.selector.unregister(link)
        link.close()
        if link.channel is Channel.MAIN:
            self.main_closed = True
            if not self.player.stopped:
                self.player.peer_closed(Channel.MAIN)
        else:
            self.links.pop(link.channel, None)
            if not self.player.stopped:
                self.player.peer_closed(link.channel)

    # -- streams -------------------------------------------------------------------

    def _pipe(self, fd: int, *, writing: bool) -> None:
        """A device-state pipe end: write our recorded bytes, or read and compare theirs."""
        if writing:
            write_and_close(fd, self.plan.stream_bytes("device-state", self.play))
        else:
            self._add_stream(fd, "device-state", self.plan.stream_bytes("device-state", self.peer))

    def _add_stream(self, fd: int, channel: str, expected: bytes | None) -> None:
        os.set_blocking(fd, False)
        self.selector.register(fd, selectors.EVENT_READ, StreamEnd(fd, channel, expected))

    def _read_stream(self, stream: StreamEnd) -> None:
        if not stream.read():
            return
        self.selector.unregister(stream.fd)
        stream.close()
        difference = stream.difference()
        if difference is not None:
            self.player.divergences.append(
                Divergence(
                    Kind.MISMATCH, self.plan.session, None, f"{stream.channel} stream", difference
                )
            )

    def _compared_streams(self) -> list[StreamEnd]:
        """Streams still being read whose bytes are compared (their EOF not seen yet)."""
        return [
            key.data
            for key in self.selector.get_map().values()
            if isinstance(key.data, StreamEnd) and key.data.compared
        ]

    def _finish_streams(self) -> None:
        """Read the compared streams to their end (the peer may close the connection
        before it finishes writing the state)."""
        deadline = time.monotonic() + self.options.close_timeout
        while self._compared_streams():
            left = deadline - time.monotonic()
            if left <= 0:
                self._stream_timeout(self.options.close_timeout)
                return
            for key, _ in self.selector.select(min(left, POLL)):
                if isinstance(key.data, StreamEnd):
                    self._read_stream(key.data)

    def _stream_timeout(self, waited: float) -> None:
        for stream in self._compared_streams():
            self.player.divergences.append(
                Divergence(
                    Kind.TIMEOUT,
                    self.plan.session,
                    None,
                    f"{stream.channel} stream",
                    stream.unfinished(waited),
                )
            )
        self.player.stopped = True

    # -- plumbing ------------------------------------------------------------------

    def _add_link(self, link: Link) -> None:
        old = self.links.get(link.channel)
        if old is not None and not old.closed:
            self.selector.unregister(old)
            old.close()
        self.links[link.channel] = link
        self.selector.register(link, selectors.EVENT_READ, link)

    def _close_all(self) -> None:
        for key in list(self.selector.get_map().values()):
            target = key.data
            self.selector.unregister(key.fileobj)
            if isinstance(target, Link):
                target.close()
            else:
                target.close()
        for link in self.links.values():
            link.close()
        for kept in self.extra:
            _close(kept)
        self.extra.clear()
        self.selector.close()


def _opens(channel: Channel, request: int, role: Role | str) -> str | None:
    """The channel a request's fd opens, from the protocol table (requests only)."""
    if role != Role.REQUEST:
        return None
    row = spec.request_spec(channel, request)
    return row.opens if row is not None else None


def _close(thing: socket.socket | int) -> None:
    with contextlib.suppress(OSError):
        if isinstance(thing, socket.socket):
            thing.close()
        else:
            os.close(thing)
