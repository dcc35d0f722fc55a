"""The relay: a transparent vhost-user proxy, one event loop, no waiting on the disk.

Theory of operation
-------------------
Each socket (or pipe end) the proxy touches is an :class:`Endpoint`. Endpoints
come in pairs: what one reads, its ``peer`` sends on. A :class:`Session` is one
front-end connection and the back-end connection made for it, plus the extra
pairs that appear during the conversation:

* the back-end channel: on SET_BACKEND_REQ_FD the front-end's socket is kept
  and the back-end gets one end of a socketpair of ours instead; the bytes
  between them are messages on channel ``backend``;
* the vhost-user-gpu socket (GPU_SET_SOCKET), relayed the same way and
  recorded as a byte stream on channel ``gpu``;
* the device-state pipe (SET_DEVICE_STATE_FD, and the back-end's own fd in
  its reply), relayed through a pipe of ours and recorded as channel
  ``device-state``.

Which request opens which channel is a fact of the protocol table
(``RequestSpec.opens``); this module only acts on it.

Each session's :class:`~vhtrace.protocol.connection.Connection` (a proxy's: both sides)
frames what is read. Reads never go past the end of the current message
(``RelayReader.bytes_wanted``), unless a peek shows that what is waiting carries no
fds at all: then it is read at once, or, when the policy has nothing to decide for
messages without fds (no --strict, no before:NAME), its whole messages are passed on
as the one piece they came in straight from the peek, and taken off the socket after
(taking them wakes their sender's side of it: that stays off the round trip). So the
fds of a read belong to one message, and a message is forwarded in one
``sendmsg`` with the same bytes and the same fds in the same order: only the
fds of the channels above are substituted by equivalent ones of ours, which
the trace notes. An oversized message is passed through in pieces as it
comes. What to do with a message (interpose, drop with --strict, hold for a
before:NAME snapshot) is :mod:`vhtrace.record.policy`'s decision.

The recorder runs in a process of its own (:mod:`vhtrace.record.link`): once a
message is forwarded, it is handed over as a typed record with dups of its fds,
sent in batches when the loop has nothing else to do; nothing here waits for it.

Hostile input never ends the process (issue 17):

* a channel-opening fd of the wrong kind (an eventfd for SET_BACKEND_REQ_FD, a
  memfd for SET_DEVICE_STATE_FD, an unconnected socket) is not interposed: it
  is relayed as it came, with a ``channel-fd`` finding naming what was due and
  what came (``channels.wrong_fd``); --strict drops the session on it;
* an unexpected I/O error ends that channel, or on the main socket the session,
  with an ``io-error`` finding and the reason;
* one sendmsg never carries more than ``spec.SCM_MAX_FD`` fds: more are split
  over the message's first bytes, in order (``framing.split_fds``);
* a destination's outbox is bounded in fds (``PAUSE_FDS``) as in bytes;
* out of fds (EMFILE) the recorder's copies of a message's fds are shed, with an
  ``fd-metadata-shed`` finding and a count; a dead recorder is handed none.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import gc
import itertools
import os
import select
import selectors
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from vhtrace import fdinfo
from vhtrace.memory.hold import Hold
from vhtrace.protocol import spec
from vhtrace.protocol.findings import Finding, Severity
from vhtrace.protocol.framing import (
    Frame,
    Incomplete,
    OversizedData,
    OversizedStart,
    split_fds,
    unpack_header,
)
from vhtrace.protocol.spec import Channel, Side
from vhtrace.record import device_hint, endpoints
from vhtrace.record.fdbudget import FdBudget
from vhtrace.record.handoff import Answer, Relayed, Release
from vhtrace.record.link import RecorderLink
from vhtrace.record.model import Endpoint, Held, Outgoing, ProxyConfig, Session
from vhtrace.record.policy import Policy
from vhtrace.record.recorder import now_ns
from vhtrace.trace import format as fmt
from vhtrace.trace.records import EventRecord, FindingRecord, MessageRecord, StreamRecord
from vhtrace.wire import READ_LIMIT, close_fds, peek_fd_free, recv_chunk, take_peeked

PAUSE_BYTES = 1 << 20
"""Stop reading a source while its destination has this much unsent."""
PAUSE_FDS = 1024
"""... or keeps this many fds open for unsent messages (fds are bounded like bytes)."""
READ_BURST = 64
"""Reads at most from one endpoint before the others get their turn."""
BURST_BYTES = 16 << 10
"""The most read at once of messages without fds (a peek has shown there are none)."""
FLUSH_EVERY = 32
"""Messages of one read forwarded before the first of them are sent."""
MAX_IOV = 256
"""Messages coalesced into one sendmsg at most."""
RETRY_INTERVAL = 0.1
GPU_MAX_MESSAGE = 1 << 20
"""vhost-user-gpu messages (cursor images, scanouts) are bigger than vhost-user's."""


class Proxy:
    """The event loop of ``vhtrace record``."""

    def __init__(
        self, config: ProxyConfig, recorder: RecorderLink, fd_budget: FdBudget | None = None
    ) -> None:
        self.config = config
        self.fd_budget = fd_budget if fd_budget is not None else FdBudget.of_this_process()
        self._in_flight_fds = 0
        """fds of messages in outboxes, not yet sent (all endpoints together)."""
        self._open_endpoints = 0
        self._starved: dict[Endpoint, None] = {}
        """Endpoints not read for now: the fds they could bring would not fit (fdbudget)."""
        self.recorder = recorder
        self.policy = Policy(config.strict, config.hold)
        self._plain = self.policy.forwards_plain_messages
        self._scratch = bytearray(BURST_BYTES)
        """Where the bytes a peek forwarded are taken off their socket."""
        self.selector = selectors.DefaultSelector()
        self.sessions: dict[int, Session] = {}
        self._next_session = 1
        self._seq = 0
        self._timers: list[tuple[float, Callable[[], None]]] = []
        self._stop = False
        self._send_at_once = False
        """The message being handled was read alone: it is sent before it is recorded."""
        self._poll_until = 0.0
        """Until when the loop polls instead of sleeping (ProxyConfig.busy_poll)."""
        self._closing: set[Endpoint] = set()
        """Endpoints that close once their outbox is sent."""
        self._held: list[Held] = []
        self._dirty: dict[Endpoint, None] = {}
        """Endpoints with something forwarded to them not yet sent (in order)."""
        self._holds: dict[int, Held] = {}
        """Held messages by hold number (the recorder releases them by number)."""
        self._next_hold = 1
        self.finished_sessions = 0
        self.shed_fd_metadata = 0
        """fds whose metadata was not recorded (the proxy was out of fds)."""
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        listen_path = (
            config.frontend_path if config.listen_side is Side.FRONTEND else config.backend_path
        )
        self.listener = endpoints.listen_unix(listen_path, config.socket_mode)
        self.listen_path = listen_path
        self.selector.register(self.listener, selectors.EVENT_READ, ("accept", None))
        self._link_events = selectors.EVENT_READ
        self.selector.register(recorder.sock, self._link_events, ("link", None))
        recorder.wake = self.wake

    # -- control -----------------------------------------------------------------

    def wake(self) -> None:
        """Safe from a signal handler: makes the loop look at _stop."""
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def request_stop(self) -> None:
        self._stop = True
        self.wake()

    def run(self) -> None:
        # What exists now lives as long as the relay: out of the collector's way, so that
        # a full collection (milliseconds over the imported modules) never stalls a hop.
        gc.collect()
        gc.freeze()
        try:
            while not self._stop:
                timeout = self._run_timers()
                if self._held:
                    timeout = min(timeout, self._release_held())
                link_wait = self.recorder.timeout(time.monotonic())
                if link_wait is not None:
                    timeout = min(timeout, link_wait)
                # What a read burst forwarded and has not sent yet goes now. (A message read
                # alone, or a burst forwarded whole, is sent before it is recorded: the
                # woken peer works on another CPU while the relay does its bookkeeping.)
                self._flush_dirty()
                # --busy-poll: right after a message the next one (a reply) is likely a few
                # tens of microseconds away; polling for it saves the relay a wake-up
                # (timers and the recorder's batches can wait that long)
                select, until = self.selector.select, self._poll_until
                events = select(0) if time.monotonic() < until else select(timeout)
                while not events and time.monotonic() < until:
                    _yield()  # a peer woken on this CPU runs now, not when polling ends
                    events = select(0)
                for key, mask in events:
                    self._dispatch(key, mask)
                if events and self.config.busy_poll:
                    self._poll_until = time.monotonic() + self.config.busy_poll
                self._hand_over()
        finally:
            self._shutdown()

    def _dispatch(self, key: selectors.SelectorKey, mask: int) -> None:
        what, endpoint = key.data
        if what == "wake":
            with contextlib.suppress(OSError):
                os.read(self._wake_r, 4096)
        elif what == "accept":
            self._accept()
        elif what == "link":
            if mask & selectors.EVENT_READ:
                self._from_recorder()
            if mask & selectors.EVENT_WRITE:
                self.recorder.flush()
                if self._starved:
                    self._feed_starved()
        elif what == "endpoint":
            if mask & selectors.EVENT_WRITE and not endpoint.closed:
                self._flush(endpoint)
            if mask & selectors.EVENT_READ and not endpoint.closed:
                # Read on while a message is half read (its rest is most likely there).
                for _ in range(READ_BURST):
                    if not self._read(endpoint):
                        break
                    reader = endpoint.reader
                    if not _can_read(endpoint) or reader is None or not reader.in_message:
                        break

    def _run_timers(self) -> float:
        if not self._timers:
            return 1.0
        now = time.monotonic()
        due = [t for t in self._timers if t[0] <= now]
        self._timers = [t for t in self._timers if t[0] > now]
        for _, callback in due:
            callback()
        self._flush_dirty()
        if not self._timers:
            return 1.0
        return max(0.0, min(t[0] for t in self._timers) - time.monotonic())

    def _later(self, delay: float, callback: Callable[[], None]) -> None:
        self._timers.append((time.monotonic() + delay, callback))

    # -- connections ---------------------------------------------------------------

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                raise
            # Out of fds: leave the connection in the backlog and look again later.
            self.selector.unregister(self.listener)
            self._later(RETRY_INTERVAL, self._accept_again)
            return
        sock.setblocking(False)
        session = Session(self._next_session)
        self._next_session += 1
        self.sessions[session.number] = session
        side = self.config.listen_side
        info = endpoints.peer_process(sock)
        session.info[side.value] = info
        endpoint = self._add_endpoint(session, sock, Channel.MAIN.value, side, register=False)
        if side is Side.FRONTEND:
            session.frontend = endpoint
        else:
            session.backend = endpoint
        deadline = time.monotonic() + self.config.connect_timeout
        self._connect_other(session, deadline)

    def _accept_again(self) -> None:
        if self.listener.fileno() >= 0 and self.listener not in self.selector.get_map():
            self.selector.register(self.listener, selectors.EVENT_READ, ("accept", None))

    def _connect_other(self, session: Session, deadline: float) -> None:
        if session.ended:
            return
        side = self.config.listen_side.peer
        path = self.config.frontend_path if side is Side.FRONTEND else self.config.backend_path
        try:
            sock = endpoints.try_connect(path)
        except endpoints.EndpointError as exc:
            self._give_up(session, str(exc))
            return
        if sock is None:
            if time.monotonic() >= deadline:
                cause = "refused (nobody listening)" if os.path.exists(path) else "no such socket"
                self._give_up(session, f"{path}: {cause} after {self.config.connect_timeout:g} s")
            else:
                self._later(RETRY_INTERVAL, lambda: self._connect_other(session, deadline))
            return
        session.info[side.value] = endpoints.peer_process(sock)
        endpoint = self._add_endpoint(session, sock, Channel.MAIN.value, side, register=False)
        if side is Side.FRONTEND:
            session.frontend = endpoint
        else:
            session.backend = endpoint
        self._start_session(session)

    def _start_session(self, session: Session) -> None:
        assert session.frontend is not None and session.backend is not None
        session.frontend.peer, session.backend.peer = session.backend, session.frontend
        frontend_info = session.info.get("frontend", {})
        pid = frontend_info.get("pid")
        device = None
        if pid:
            device = endpoints.qemu_device_of_pid(pid, self.config.frontend_path)
        info = {
            "frontend": frontend_info,
            "backend": session.info.get("backend", {}),
            "frontend_socket": self.config.frontend_path,
            "backend_socket": self.config.backend_path,
        }
        if device:
            info["device"] = device
        # issue 12: the device type without QEMU, and how it was known (device_hint.py)
        info.update(device_hint.session_device(info, device, self.config.device))
        device = info.get("device")
        if self.config.strict and device in set(spec.DeviceType):
            session.connection.state.set_device(spec.DeviceType(device))
        session.started = True
        self._event(session, "session-start", info)
        for endpoint in (session.frontend, session.backend):
            self._register(endpoint)

    def _give_up(self, session: Session, why: str) -> None:
        # Said live too: the peer that did connect (QEMU) only sees its socket close.
        print(
            f"vhtrace: session {session.number}: could not reach the "
            f"{self.config.listen_side.peer.value}: {why}",
            file=sys.stderr,
        )
        self._finding(session, "connect", why)
        self._end_session(session, f"could not reach the other side: {why}")

    # -- endpoints -----------------------------------------------------------------

    def _add_endpoint(
        self,
        session: Session,
        fileobj: socket.socket | int,
        channel: str,
        sender: Side,
        *,
        register: bool = True,
        framed: bool = True,
        readable: bool = True,
    ) -> Endpoint:
        if isinstance(fileobj, socket.socket):
            fileobj.setblocking(False)
            endpoint = Endpoint(
                session,
                fileobj.fileno(),
                channel,
                sender,
                is_socket=True,
                framed=framed,
                readable=readable,
                sock=fileobj,
            )
        else:
            flags = fcntl.fcntl(fileobj, fcntl.F_GETFL)
            fcntl.fcntl(fileobj, fcntl.F_SETFL, flags | os.O_NONBLOCK)
            endpoint = Endpoint(
                session, fileobj, channel, sender, is_socket=False, framed=framed, readable=readable
            )
        self._open_endpoints += 1
        session.endpoints.append(endpoint)
        if register:
            self._register(endpoint)
        return endpoint

    def _register(self, endpoint: Endpoint) -> None:
        reading = (
            endpoint.readable and not endpoint.paused and not endpoint.held and not endpoint.starved
        )
        events = selectors.EVENT_READ if reading else 0
        if endpoint.outbox:
            events |= selectors.EVENT_WRITE
        if events == endpoint.events:
            return
        if events == 0:
            self.selector.unregister(endpoint.fd)
        elif endpoint.events == 0:
            self.selector.register(endpoint.fd, events, ("endpoint", endpoint))
        else:
            self.selector.modify(endpoint.fd, events, ("endpoint", endpoint))
        endpoint.events = events

    def _close_endpoint(self, endpoint: Endpoint) -> None:
        if endpoint.closed:
            return
        endpoint.closed = True
        self._open_endpoints -= 1
        self._starved.pop(endpoint, None)
        self._closing.discard(endpoint)
        if endpoint.events:
            self.selector.unregister(endpoint.fd)
            endpoint.events = 0
        for out in endpoint.outbox:
            close_fds(out.fds)
            close_fds(out.close_after)
        endpoint.outbox.clear()
        self._in_flight_fds -= endpoint.outbox_fds
        endpoint.outbox_bytes = endpoint.outbox_fds = 0
        if endpoint.sock is not None:
            endpoint.sock.close()
        else:
            with contextlib.suppress(OSError):
                os.close(endpoint.fd)

    # -- reading -------------------------------------------------------------------

    def _read(self, endpoint: Endpoint) -> bool:
        """One read, and what it completes; False if there was nothing to read."""
        reader, sock = endpoint.reader, endpoint.sock
        if reader is not None:
            wanted, at_boundary = reader.bytes_wanted(), not reader.in_message
        else:
            wanted, at_boundary = READ_LIMIT, True
        if (
            endpoint.is_socket
            and at_boundary
            and not self.fd_budget.may_read(self._fds_in_flight(), self._open_endpoints)
        ):
            self._starve(endpoint)
            return False
        if reader is not None and sock is not None and at_boundary:
            # At a message boundary: what is waiting is peeked; whole messages without fds
            # go on at once, else all that carries no fds is read in one go.
            waiting = peek_fd_free(sock, BURST_BYTES)
            if waiting and endpoint.messages and self._plain:
                ends = reader.burst(waiting)
                if ends:
                    self._relay_peeked(endpoint, sock, waiting, ends)
                    return True
            wanted = max(wanted, len(waiting))
        try:
            if endpoint.is_socket:
                assert endpoint.sock is not None
                data, fds, truncated = recv_chunk(endpoint.sock, wanted)
            else:
                data, fds, truncated = os.read(endpoint.fd, wanted), [], False
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
                self._io_failed(endpoint, "reading", exc)
                return False
            data, fds, truncated = b"", [], False
        mono, wall = now_ns()
        if truncated:
            self._finding(
                endpoint.session,
                "fd-truncated",
                f"{endpoint.label}: the kernel "
                "dropped fds of a message (more than 253 sent, or no fds left to "
                "the proxy)",
            )
        if not data:
            close_fds(fds)
            self._eof(endpoint, mono, wall)
            return False
        if reader is None:
            self._stream(endpoint, data, fds, mono, wall)
            return True
        events = reader.receive(data, fds)
        # A burst goes out in groups of FLUSH_EVERY messages, several per sendmsg; a
        # message read alone goes out at once.
        self._send_at_once = len(events) == 1
        for count, event in enumerate(events, 1):
            if endpoint.closed:
                break
            if count % FLUSH_EVERY == 0:
                self._flush_dirty()
            if isinstance(event, Frame):
                self._frame(endpoint, event, mono, wall)
            elif isinstance(event, OversizedStart):
                self._oversized_start(endpoint, event, mono, wall)
            elif isinstance(event, OversizedData):
                if event.fds:  # fds inside the payload: recorded with the message
                    endpoint.oversized_dups += self._dups(
                        endpoint, endpoint.oversized_seq, event.fds
                    )
                self._forward(
                    endpoint, event.data, list(event.fds), list(event.fds), endpoint.oversized_seq
                )
        return True

    def _relay_peeked(
        self, endpoint: Endpoint, sock: socket.socket, waiting: bytes, ends: list[int]
    ) -> None:
        """Whole messages without fds, seen by a peek, that the policy simply forwards (the
        common case, kept short): sent on as the one piece they came in, then taken off
        the socket (which wakes their sender's side of it: after the send, so off the
        round trip), then recorded."""
        mono, wall = now_ns()
        end = ends[-1]
        data = waiting if end == len(waiting) else waiting[:end]
        first = self._seq + 1
        self._seq += len(ends)
        self._forward(endpoint, data, [], [], first)
        self._flush_dirty()
        try:
            taken = take_peeked(sock, end, self._scratch)
        except OSError as exc:
            taken, failure = 0, exc
        else:
            failure = OSError(errno.EIO, f"{taken} of {end} bytes peeked could be read")
        start = 0
        for seq, stop in enumerate(ends, first):
            self._record_message(endpoint, seq, data[start:stop], mono, wall, 0, [])
            start = stop
        if taken != end:  # not seen yet: the socket has one reader, the relay
            self._io_failed(endpoint, "reading", failure)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _frame(self, endpoint: Endpoint, frame: Frame, mono: int, wall: int) -> None:
        session = endpoint.session
        if frame.oversized:
            self._record_message(
                endpoint,
                endpoint.oversized_seq,
                frame.raw,
                mono,
                wall,
                fmt.MESSAGE_OVERSIZED,
                endpoint.oversized_dups,
            )
            endpoint.oversized_seq, endpoint.oversized_dups = 0, []
            return
        seq = self._next_seq()
        if not endpoint.messages:
            self._record_stream(
                endpoint, seq, frame.raw, self._dups(endpoint, seq, frame.fds), mono, wall
            )
            self._forward(endpoint, frame.raw, list(frame.fds), list(frame.fds), seq)
            return
        decision = self.policy.decide(
            session.connection if self.config.strict else None,
            seq,
            endpoint.channel,
            endpoint.sender,
            frame,
            _fd_meta,
        )
        if decision.wrong_fd:
            # Relayed as it came (not interposed): the receiver judges it, the trace notes it.
            name = _request_name(endpoint, frame.header)
            self._finding(session, "channel-fd", decision.wrong_fd, seq, name)
            if decision.drop:
                self._drop(endpoint, seq, frame, mono, wall, f"#{seq} {name}: {decision.drop}")
                return
            send_fds, keep = list(frame.fds), set()
            notes: list[dict[str, Any]] = [{"not_interposed": decision.wrong_fd}]
        elif decision.drop:
            self._drop(endpoint, seq, frame, mono, wall, decision.drop)
            return
        elif decision.interpose is not None:
            send_fds, keep, notes = self._interpose(
                endpoint, frame, decision.interpose, seq, (mono, wall)
            )
        else:
            send_fds, keep, notes = list(frame.fds), set(), [{}] * len(frame.fds)
        dups = self._dups(endpoint, seq, frame.fds)
        close_after = [fd for fd in frame.fds if fd not in keep]
        close_after += [fd for fd in send_fds if fd not in frame.fds]
        if decision.hold:
            self._hold(endpoint, seq, frame, mono, wall, dups, notes, send_fds, close_after)
            return
        self._forward(endpoint, frame.raw, send_fds, close_after, seq)
        if self._send_at_once:
            self._flush_dirty()  # sent before it is recorded: the peer works meanwhile
        self._record_message(endpoint, seq, frame.raw, mono, wall, 0, dups, notes)

    def _oversized_start(
        self, endpoint: Endpoint, start: OversizedStart, mono: int, wall: int
    ) -> None:
        endpoint.oversized_seq = self._next_seq()
        endpoint.oversized_dups = self._dups(endpoint, endpoint.oversized_seq, start.fds)
        if self.config.strict:
            frame = Frame(start.request, start.flags, start.size, b"", start.fds, oversized=True)
            self._drop(
                endpoint,
                endpoint.oversized_seq,
                frame,
                mono,
                wall,
                f"size {start.size} above the protocol maximum",
            )
            return
        self._forward(
            endpoint, start.header, list(start.fds), list(start.fds), endpoint.oversized_seq
        )

    def _stream(
        self, endpoint: Endpoint, data: bytes, fds: list[int], mono: int, wall: int
    ) -> None:
        seq = self._next_seq()
        self._record_stream(endpoint, seq, data, self._dups(endpoint, seq, fds), mono, wall)
        self._forward(endpoint, data, fds, fds, seq)

    def _eof(self, endpoint: Endpoint, mono: int, wall: int) -> None:
        """The other side closed: pass on what was left, then the close itself."""
        session = endpoint.session
        leftover, streamed = None, False
        if endpoint.reader is not None:
            leftover, streamed = endpoint.reader.eof()
        if leftover is not None:
            seq = endpoint.oversized_seq or self._next_seq()
            dups = endpoint.oversized_dups + self._dups(endpoint, seq, leftover.fds)
            endpoint.oversized_seq, endpoint.oversized_dups = 0, []
            if not streamed:  # a streamed message's bytes went out as they came
                self._forward(endpoint, leftover.data, list(leftover.fds), list(leftover.fds), seq)
            if endpoint.messages:
                self._record_message(
                    endpoint, seq, leftover.data, mono, wall, _incomplete_flags(leftover), dups
                )
            else:
                self._record_stream(endpoint, seq, leftover.data, dups, mono, wall)
            self._finding(
                session,
                "incomplete",
                f"{endpoint.label}: {leftover.describe()}",
                seq,
                _request_name(endpoint, leftover.data),
            )
        self._close_endpoint(endpoint)
        peer = endpoint.peer
        if endpoint is session.frontend or endpoint is session.backend:
            reason = fmt.closed_by(endpoint.sender.value)
            self._end_session(session, reason)
            return
        self._event(session, f"{endpoint.channel}-channel-closed", {"by": endpoint.sender.value})
        if peer is not None:
            self._close_when_flushed(peer)

    def _drain(self, endpoint: Endpoint, limit: int = 256) -> None:
        """Read what a closing session's peer had already sent, so that it is recorded."""
        for _ in range(limit):
            if endpoint.closed or not endpoint.readable or not _has_data(endpoint.fd):
                return
            self._read(endpoint)

    def _record_unfinished(self, endpoint: Endpoint) -> None:
        """A message half read when its session ends: recorded as incomplete."""
        reader = endpoint.reader
        if endpoint.closed or reader is None or not reader.in_message:
            return
        leftover, _ = reader.eof()
        if leftover is None:
            return
        mono, wall = now_ns()
        seq = endpoint.oversized_seq or self._next_seq()
        dups = endpoint.oversized_dups + self._dups(endpoint, seq, leftover.fds)
        close_fds(list(leftover.fds))
        endpoint.oversized_seq, endpoint.oversized_dups = 0, []
        if endpoint.messages:
            self._record_message(
                endpoint, seq, leftover.data, mono, wall, _incomplete_flags(leftover), dups
            )
        else:
            close_fds(dups)
        self._finding(
            endpoint.session,
            "incomplete",
            f"{endpoint.label}: {leftover.describe()} when the session ended",
            seq,
            _request_name(endpoint, leftover.data),
        )

    def _close_when_flushed(self, endpoint: Endpoint) -> None:
        if endpoint.outbox:
            endpoint.close_when_flushed = True
            endpoint.readable = False
            self._closing.add(endpoint)
            self._register(endpoint)
        else:
            self._close_endpoint(endpoint)

    def _end_session(self, session: Session, reason: str) -> None:
        if session.ended:
            return
        session.ended = True
        session.end_reason = reason
        for endpoint in list(session.endpoints):
            self._drain(endpoint)
            self._record_unfinished(endpoint)
            self._close_when_flushed(endpoint)
        self._event(
            session, "session-end" if session.started else "session-failed", {"reason": reason}
        )
        self.sessions.pop(session.number, None)
        self.finished_sessions += 1
        if self.config.once:
            self._stop = True

    # -- forwarding ------------------------------------------------------------------

    def _forward(
        self,
        source: Endpoint,
        data: bytes,
        fds: list[int],
        close_after: list[int],
        seq: int | None = None,
    ) -> None:
        destination = source.peer
        if destination is None or destination.closed or destination.close_when_flushed:
            close_fds(close_after)
            return
        if not fds and not close_after:  # the common case, kept short
            destination.outbox.append(Outgoing(memoryview(data), [], []))
            destination.outbox_bytes += len(data)
            self._dirty[destination] = None
            if destination.outbox_bytes > PAUSE_BYTES and not source.paused and not source.closed:
                source.paused = True
                self._register(source)
            return
        pieces = split_fds(len(data), len(fds)) if destination.is_socket else [(len(data), 0)]
        if pieces is None:
            close_fds(close_after)
            why = (
                f"{len(fds)} fds on {len(data)} bytes: at most {spec.SCM_MAX_FD} fds go "
                f"with one sendmsg, and too few bytes to split them over"
            )
            self._finding(source.session, "fd-limit", f"{source.label}: {why}", seq)
            where = f"#{seq} " if seq is not None else ""
            self._end_session(source.session, f"{where}{source.label}: cannot relay {why}")
            return
        view = memoryview(data)
        held = len(set(fds) | set(close_after))
        at = fd_at = 0
        for index, (size, count) in enumerate(pieces):
            last = index == len(pieces) - 1
            destination.outbox.append(
                Outgoing(
                    view[at : at + size],
                    fds[fd_at : fd_at + count],
                    close_after if last else [],
                    held if last else 0,
                )
            )
            at += size
            fd_at += count
        destination.outbox_bytes += len(data)
        destination.outbox_fds += held
        self._in_flight_fds += held
        self._dirty[destination] = None  # sent when this read is done (_flush_dirty)
        over = destination.outbox_bytes > PAUSE_BYTES or destination.outbox_fds > PAUSE_FDS
        if over and not source.paused and not source.closed:
            source.paused = True
            self._register(source)

    def _flush_dirty(self) -> None:
        """Send what was forwarded since the last call: the messages of one read burst
        go out together (one sendmsg for whole messages without fds)."""
        while self._dirty:
            endpoint = next(iter(self._dirty))
            del self._dirty[endpoint]
            if not endpoint.closed:
                self._flush(endpoint)

    def _flush(self, endpoint: Endpoint) -> None:
        while endpoint.outbox:
            out = endpoint.outbox[0]
            try:
                if endpoint.is_socket:
                    assert endpoint.sock is not None
                    ancillary = []
                    if out.fds:
                        ancillary = [
                            (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", out.fds))
                        ]
                    # Whole messages without fds ride along: fds stay on their first byte.
                    parts = [out.data]
                    if len(endpoint.outbox) > 1:
                        size = len(out.data)
                        for later in itertools.islice(endpoint.outbox, 1, MAX_IOV):
                            if later.fds or size + len(later.data) > PAUSE_BYTES:
                                break
                            parts.append(later.data)
                            size += len(later.data)
                    sent = endpoint.sock.sendmsg(parts, ancillary)
                else:
                    sent = os.write(endpoint.fd, out.data)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                    self._io_failed(endpoint, "sending", exc)
                    return
                self._broken(endpoint, exc)
                return
            out.fds = []
            endpoint.outbox_bytes -= sent
            while sent and endpoint.outbox:
                out = endpoint.outbox[0]
                if sent < len(out.data):
                    out.data = out.data[sent:]
                    break
                sent -= len(out.data)
                close_fds(out.close_after)
                endpoint.outbox_fds -= out.held_fds
                self._in_flight_fds -= out.held_fds
                endpoint.outbox.popleft()
            if endpoint.outbox and not endpoint.outbox[0].data:
                out = endpoint.outbox.popleft()  # an empty piece (a message of no bytes)
                close_fds(out.close_after)
                endpoint.outbox_fds -= out.held_fds
                self._in_flight_fds -= out.held_fds
        if self._starved:
            self._feed_starved()
        if not endpoint.outbox and endpoint.close_when_flushed:
            self._close_endpoint(endpoint)
            return
        self._register(endpoint)
        source = endpoint.peer
        below = endpoint.outbox_bytes < PAUSE_BYTES // 2 and endpoint.outbox_fds <= PAUSE_FDS // 2
        if source is not None and source.paused and below:
            source.paused = False
            if not source.closed:
                self._register(source)

    def _broken(self, endpoint: Endpoint, exc: OSError) -> None:
        """Writing failed: the reader on that side is gone; its read side reports the close."""
        for out in endpoint.outbox:
            close_fds(out.fds)
            close_fds(out.close_after)
        endpoint.outbox.clear()
        endpoint.outbox_bytes = endpoint.outbox_fds = 0
        if endpoint.close_when_flushed or not endpoint.readable:
            self._close_endpoint(endpoint)

    # -- before:NAME snapshots ------------------------------------------------------------

    def _hold(
        self,
        endpoint: Endpoint,
        seq: int,
        frame: Frame,
        mono: int,
        wall: int,
        dups: list[int],
        notes: list[dict[str, Any]],
        send_fds: list[int],
        close_after: list[int],
    ) -> None:
        """Record the message now, forward it once the recorder has snapshotted before it."""
        hold = Hold(time.monotonic() + self.config.hold_seconds, _nothing)
        number = self._next_hold
        self._next_hold += 1
        endpoint.held = True
        self._register(endpoint)
        held = Held(hold, endpoint, frame.raw, send_fds, close_after, number)
        self._held.append(held)
        self._holds[number] = held
        if not self._record_message(endpoint, seq, frame.raw, mono, wall, 0, dups, notes, number):
            hold.expire()  # dropped (queue full): nobody will snapshot it

    def _from_recorder(self) -> None:
        """The recorder released a held message (or failed, or finished)."""
        for item in self.recorder.read():
            if isinstance(item, Release):
                held = self._holds.get(item.hold)
                still = held is not None and held.hold.release()
                self.recorder.submit(Answer(item.hold, still))
        if self.recorder.dead and self._link_events:
            self.selector.unregister(self.recorder.sock)
            self._link_events = 0

    def _hand_over(self) -> None:
        """Send the recorder what this turn of the loop gave it (after all forwarding)."""
        if not self._link_events:
            return
        self.recorder.flush_due()
        if self._starved:
            self._feed_starved()
        if self.recorder.dead:
            self.selector.unregister(self.recorder.sock)
            self._link_events = 0
            return
        events = selectors.EVENT_READ
        if self.recorder.wants_write():
            events |= selectors.EVENT_WRITE
        if events != self._link_events:
            self.selector.modify(self.recorder.sock, events, ("link", None))
            self._link_events = events

    def _release_held(self) -> float:
        """Forward what the recorder released or what waited too long; the next deadline."""
        now = time.monotonic()
        waiting: list[Held] = []
        for held in self._held:
            if not held.hold.done and now >= held.hold.deadline:
                held.hold.expire()
            if not held.hold.done:
                waiting.append(held)
                continue
            self._holds.pop(held.number, None)
            endpoint = held.endpoint
            endpoint.held = False
            if endpoint.closed:
                close_fds(held.fds)
                close_fds(held.close_after)
                continue
            self._forward(endpoint, held.data, held.fds, held.close_after)
            self._flush_dirty()
            self._register(endpoint)
        self._held = waiting
        if not waiting:
            return 1.0
        return max(0.0, min(h.hold.deadline for h in waiting) - time.monotonic())

    # -- channels carried by fds -------------------------------------------------------

    def _interpose(
        self, endpoint: Endpoint, frame: Frame, opens: str, seq: int, when: tuple[int, int]
    ) -> tuple[list[int], set[int], list[dict[str, Any]]]:
        """Substitute our own fd for one that opens a channel, and relay that channel.

        Returns the fds to send, the received fds we keep (now endpoints), and extra
        metadata for each fd saying what was done. If the channel cannot be set up
        (out of fds, a kind epoll refuses), the fd is relayed as it came, with a finding."""
        fds = list(frame.fds)
        session = endpoint.session
        original = fds[0]
        added = len(session.endpoints)
        made: list[socket.socket | int] = []
        """What we opened for the channel: closed again if setting it up fails."""
        try:
            if opens in ("backend", "gpu"):
                given = self._interpose_socket(session, original, opens, made)
            else:
                given = self._interpose_pipe(session, original, endpoint.sender, made)
        except OSError as exc:
            self._undo_endpoints(session, added, original, made)
            name = _request_name(endpoint, frame.header)
            self._finding(
                session,
                "interpose-failed",
                f"the {opens} channel could not be relayed through the proxy "
                f"({exc.strerror or exc}): fd passed on as it came, its channel "
                f"not recorded",
                seq,
                name,
            )
            return fds, set(), [{"not_interposed": exc.strerror or str(exc)}]
        self._event(session, f"{opens}-channel", {"seq": self._seq}, when)
        return [given], {original}, [{"interposed": opens}]

    def _interpose_socket(
        self, session: Session, original: int, opens: str, made: list[socket.socket | int]
    ) -> int:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        made += [ours, theirs]
        frontend_side = socket.socket(fileno=original)
        if opens == "gpu":
            session.connection.frame_channel(Channel.GPU, GPU_MAX_MESSAGE)
        try:
            fe = self._add_endpoint(session, frontend_side, opens, Side.FRONTEND)
        except OSError:
            if not any(e.sock is frontend_side for e in session.endpoints):
                frontend_side.detach()  # ``original`` is the sender's: never closed here
            raise
        made.remove(ours)
        try:
            be = self._add_endpoint(session, ours, opens, Side.BACKEND)
        except OSError:
            if not any(e.sock is ours for e in session.endpoints):
                made.append(ours)
            raise
        fe.peer, be.peer = be, fe
        if opens == "gpu":
            fe.messages = be.messages = False  # another protocol: kept as a byte stream
        made.remove(theirs)
        return theirs.detach()

    def _undo_endpoints(
        self, session: Session, added: int, original: int, made: list[socket.socket | int]
    ) -> None:
        """Forget endpoints a failed interposition made; close ours, never ``original``."""
        for endpoint in session.endpoints[added:]:
            if endpoint.events:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self.selector.unregister(endpoint.fd)
                endpoint.events = 0
            endpoint.closed = True
            if endpoint.fd == original:
                if endpoint.sock is not None:
                    endpoint.sock.detach()
            elif endpoint.sock is not None:
                endpoint.sock.close()
            else:
                close_fds([endpoint.fd])
            with contextlib.suppress(ValueError):
                made.remove(endpoint.sock if endpoint.sock is not None else endpoint.fd)
        del session.endpoints[added:]
        for item in made:
            if isinstance(item, socket.socket):
                item.close()
            else:
                close_fds([item])
        made.clear()

    def _interpose_pipe(
        self, session: Session, original: int, sender: Side, made: list[socket.socket | int]
    ) -> int:
        """Put a pipe of ours in the middle of a device-state pipe; the end to pass on."""
        access = fcntl.fcntl(original, fcntl.F_GETFL) & os.O_ACCMODE
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        made += [read_end, write_end]
        receiver = sender.peer
        if access == os.O_WRONLY:
            # The sender keeps the read end: the receiver writes the state into our pipe.
            source = self._add_endpoint(session, read_end, "device-state", receiver, framed=False)
            sink = self._add_endpoint(
                session, original, "device-state", receiver, framed=False, readable=False
            )
            given = write_end
        else:
            # The sender writes the state: we read its pipe and fill ours.
            source = self._add_endpoint(session, original, "device-state", sender, framed=False)
            sink = self._add_endpoint(
                session, write_end, "device-state", sender, framed=False, readable=False
            )
            given = read_end
        source.messages = sink.messages = False
        source.peer, sink.peer = sink, source
        return given

    # -- fds for the recorder, I/O errors -----------------------------------------------

    def _dups(
        self, endpoint: Endpoint, seq: int | None, fds: tuple[int, ...] | list[int]
    ) -> list[int]:
        """The recorder's copies of ``fds`` (for their metadata); none if it cannot take them.

        Out of fds (EMFILE/ENFILE) the metadata of this message is shed, with a finding
        and a count: relaying matters more than describing."""
        if not fds or not self.recorder.has_room_for_fds(len(fds)):
            return []
        dups: list[int] = []
        try:
            if not self.fd_budget.may_copy(self._fds_in_flight(), self._open_endpoints, len(fds)):
                raise OSError(errno.EMFILE, "too close to the fd limit")
            for fd in fds:
                dups.append(os.dup(fd))
        except OSError as exc:
            close_fds(dups)
            self.shed_fd_metadata += len(fds)
            self._finding(
                endpoint.session,
                "fd-metadata-shed",
                f"{endpoint.label}: metadata of {len(fds)} fd{'s' if len(fds) > 1 else ''} "
                f"not recorded ({exc.strerror or exc}); {self.shed_fd_metadata} shed so far",
                seq,
            )
            return []
        return dups

    def _fds_in_flight(self) -> int:
        return self._in_flight_fds + self.recorder.queued_fds

    def _starve(self, endpoint: Endpoint) -> None:
        """Stop reading ``endpoint`` until sends free fds (its fds wait in the kernel)."""
        self._starved[endpoint] = None
        endpoint.starved = True
        self._register(endpoint)

    def _feed_starved(self) -> None:
        """Read the starved endpoints again once a message's worth of fds is free."""
        if not self.fd_budget.may_read(self._fds_in_flight(), self._open_endpoints):
            return
        starved, self._starved = self._starved, {}
        for endpoint in starved:
            endpoint.starved = False
            if not endpoint.closed:
                self._register(endpoint)

    def _io_failed(self, endpoint: Endpoint, what: str, exc: OSError) -> None:
        """An unexpected I/O error: ends that channel (or the session), never the process."""
        session = endpoint.session
        reason = f"{endpoint.label}: {what} failed: {exc.strerror or exc}"
        self._finding(session, "io-error", reason)
        peer = endpoint.peer
        self._close_endpoint(endpoint)
        if endpoint is session.frontend or endpoint is session.backend:
            self._end_session(session, reason)
            return
        self._event(
            session, f"{endpoint.channel}-channel-closed", {"by": "error", "reason": reason}
        )
        if peer is not None and not peer.closed:
            self._close_when_flushed(peer)

    # -- strict mode -----------------------------------------------------------------

    def _drop(
        self, endpoint: Endpoint, seq: int, frame: Frame, mono: int, wall: int, why: str
    ) -> None:
        dups = self._dups(endpoint, seq, frame.fds)
        close_fds(list(frame.fds))
        self._record_message(endpoint, seq, frame.raw, mono, wall, fmt.MESSAGE_DROPPED, dups)
        self._finding(
            endpoint.session,
            "strict",
            f"--strict: dropped the connection: {why}",
            seq,
            _request_name(endpoint, frame.header),
        )
        self._end_session(endpoint.session, f"--strict: malformed message #{seq}")

    # -- recording -------------------------------------------------------------------

    def _record_message(
        self,
        endpoint: Endpoint,
        seq: int,
        raw: bytes,
        mono: int,
        wall: int,
        flags: int,
        dups: list[int],
        notes: list[dict[str, Any]] | None = None,
        hold: int = 0,
    ) -> bool:
        """Hand a message to the recorder; ``dups`` are its own copies of the fds."""
        record = MessageRecord(
            seq,
            mono,
            wall,
            endpoint.session.number,
            endpoint.channel,
            endpoint.sender.value,
            raw,
            tuple(notes or ()),
            flags,
        )
        return self.recorder.submit(Relayed(record, len(dups), hold), dups)

    def _record_stream(
        self, endpoint: Endpoint, seq: int, data: bytes, dups: list[int], mono: int, wall: int
    ) -> None:
        """Record stream bytes; ``dups`` are the recorder's own copies of the fds."""
        record = StreamRecord(
            seq,
            mono,
            wall,
            endpoint.session.number,
            endpoint.channel,
            endpoint.sender.value,
            data,
            (),
        )
        self.recorder.submit(Relayed(record, len(dups)), dups)

    def _event(
        self,
        session: Session,
        event: str,
        info: dict[str, Any],
        when: tuple[int, int] | None = None,
    ) -> None:
        mono, wall = when or now_ns()
        self.recorder.submit(EventRecord(mono, wall, session.number, event, info))

    def _finding(
        self, session: Session, code: str, text: str, seq: int | None = None, request: str = ""
    ) -> None:
        finding = Finding(seq, request, code, text, Severity.ERROR)
        self.recorder.submit(FindingRecord(session.number, finding))

    # -- shutdown --------------------------------------------------------------------

    def _shutdown(self) -> None:
        for held in self._held:
            held.hold.expire()
            close_fds(held.fds)
            close_fds(held.close_after)
        self._held = []
        for session in list(self.sessions.values()):
            if session.started:
                self._end_session(session, fmt.END_RECORDER_STOPPED)
            else:
                for endpoint in session.endpoints:
                    self._close_endpoint(endpoint)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and self._closing:
            for key, mask in self.selector.select(0.05):
                self._dispatch(key, mask)
                self._flush_dirty()
        for key in list(self.selector.get_map().values()):
            what, endpoint = key.data
            if what == "endpoint":
                self._close_endpoint(endpoint)
        self._holds.clear()
        self.selector.close()
        self.listener.close()
        with contextlib.suppress(OSError):
            os.unlink(self.listen_path)
        os.close(self._wake_r)
        os.close(self._wake_w)


_yield = os.sched_yield


def _can_read(endpoint: Endpoint) -> bool:
    return not (
        endpoint.closed
        or endpoint.held
        or endpoint.paused
        or endpoint.starved
        or not endpoint.readable
    )


def _nothing() -> None:
    """A hold's wake-up: the relay's loop sees a release when it reads the recorder."""


def _request_name(endpoint: Endpoint, data: bytes) -> str:
    """The request a (maybe cut) message names, for a finding; '' if its header is cut."""
    if len(data) < spec.HEADER_SIZE or endpoint.channel not in ("main", "backend"):
        return ""
    return spec.request_name(Channel(endpoint.channel), unpack_header(data)[0])


def _incomplete_flags(leftover: Incomplete) -> int:
    """Record flags of a message cut off by the end of its stream."""
    return fmt.MESSAGE_INCOMPLETE | (fmt.MESSAGE_OVERSIZED if leftover.oversized else 0)


def _fd_meta(fd: int) -> dict[str, Any]:
    """What an fd is (fdinfo), and for a socket whether it is connected."""
    meta = fdinfo.describe(fd)
    if meta.get("kind") != "socket":
        return meta
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return meta
    try:
        sock.getpeername()
        meta["connected"] = True
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            meta["connected"] = False
    finally:
        sock.close()
    return meta


def _has_data(fd: int) -> bool:
    """True if a read would not block (data or EOF waiting)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))
