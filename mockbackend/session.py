"""One connection of the mock back-end: read, validate, hook, handle, reply, report.

Theory of operation
-------------------
The session thread reads the front-end's messages one at a time, never past a message's
end, so every fd lands on its own message (:class:`vhtrace.protocol.framing.Framer`).
Each message, and each message the mock sends, goes through one
:class:`vhtrace.protocol.conversation.Conversation`, which decodes it and reports what
breaks the spec. Findings on the front-end's messages are *violations*: logged, kept
for the report, handed to scripts, never a crash.

Then, in order: expectations observe the message; an armed connection fault may close
the connection; ``before`` hooks run; the handler (the script's override, else the
default one in :mod:`mockbackend.handlers`) computes the reply; an armed reply fault
may change it; the reply is sent; ``after`` hooks run; fds nobody took are closed.
A handler or hook that raises is reported as an error and the connection goes on.

Ring processing runs on one thread per ring (:mod:`mockbackend.rings`); the back-end
channel has its own reader thread (:mod:`mockbackend.channel`). The conversation is
shared, under a lock.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mockbackend import faults as faultlib
from mockbackend import handlers
from mockbackend.channel import BackendChannel
from mockbackend.devices.base import Device
from mockbackend.inflight import InflightArea
from mockbackend.memory import GuestMemory, MappedRegion
from mockbackend.messages import Message, Reply
from mockbackend.report import Report
from mockbackend.rings import Ring, RingWorker, process_ring
from mockbackend.script import describe_exception
from vhtrace import wire
from vhtrace.protocol import spec
from vhtrace.protocol.connection import Connection, Received
from vhtrace.protocol.conversation import Conversation, Role
from vhtrace.protocol.findings import Finding, Severity
from vhtrace.protocol.framing import Frame
from vhtrace.protocol.spec import Channel, ProtocolFeature, Side
from vhtrace.protocol.state import ConversationState

if TYPE_CHECKING:
    from mockbackend.script import Script

log = logging.getLogger("mockbackend")
fault_log = logging.getLogger("mockbackend.faults")
"""One INFO line per fault that fires (the CLI shows these unless -q)."""

MAX_KEPT = 10_000
"""Messages (and violations) kept per connection; older ones are forgotten, counted."""

MAX_RINGS = 256
"""Rings a device may declare (bounded allocation whatever the front-end asks)."""


class ConnectionClosed(Exception):
    """A fault or a handler closed the connection on purpose."""


class Session:
    """The mock back-end's side of one vhost-user connection (``ctx`` in scripts)."""

    def __init__(self, sock: socket.socket, script: Script) -> None:
        self.sock = sock
        self.script = script
        self.device: Device | None = script.device
        names = {"blk": spec.DeviceType.BLK, "net": spec.DeviceType.NET}
        device_type = names.get(self.device.name) if self.device is not None else None
        self.connection = Connection(Side.BACKEND, device=device_type)
        """The protocol of this connection: every message, both channels, goes through it."""
        self.memory = GuestMemory(on_violation=lambda code, text: self._note(None, code, text))
        queues = max(1, min(script.queues, MAX_RINGS))
        self.rings = [Ring(i) for i in range(queues)]
        if self.device is not None:
            self.device.attach(self._wake_index)
        self.backend: BackendChannel | None = None
        self.inflight: InflightArea | None = None
        self.ufd: int | None = None
        self.postcopy_listening = False
        self.postcopy_pending: list[MappedRegion] = []
        self.status = 0
        self.report = Report()
        self.messages: list[Message] = []
        """Every message received (front-end requests and back-end channel replies)."""
        self.received = 0
        """Front-end messages received on the main socket (what ``fault(at=N)`` counts)."""
        self.lock = threading.RLock()
        """Held while the connection analyses and the report changes (several threads)."""
        self._closed = False
        self._reader = wire.ConnectionReader(sock, self.connection, Channel.MAIN, self.lock)

    @property
    def conversation(self) -> Conversation:
        """The conversation behind :attr:`connection` (its findings and pending replies)."""
        return self.connection.conversation

    @property
    def state(self) -> ConversationState:
        """What the conversation has established (features, regions, rings)."""
        return self.conversation.state

    # -- the loop ----------------------------------------------------------------

    def run(self) -> Report:
        """Serve the connection until it closes; the report."""
        try:
            while not self._closed:
                msg = self._read()
                if msg is None:
                    self.report.closed_by = self.report.closed_by or "closed by the front-end"
                    break
                try:
                    self._handle(msg)
                except ConnectionClosed as exc:
                    self.report.closed_by = str(exc)
                    break
        except OSError as exc:
            self.report.closed_by = f"socket error: {exc}"
        finally:
            self._finish()
        return self.report

    def _read(self) -> Message | None:
        """The next whole message (oversized ones come with their payload cut)."""
        received = self._reader.read()
        if self._reader.fds_dropped:
            self._reader.fds_dropped = False
            self._note(None, "fd-limit", "more fds sent than the kernel passes; some dropped")
        if received is None:
            if self._reader.truncated is not None:
                self._note(None, "truncated", self._reader.truncated.description)
            return None
        return self.receive(received)

    def receive(self, received: Received) -> Message:
        """Take one front-end message (either channel) the connection analysed."""
        with self.lock:
            frame, analysis = received.frame, received.analysis
            seq, channel = analysis.seq, analysis.channel
            msg = Message(seq, channel, analysis.name, frame, analysis, list(frame.fds))
            self.report.messages += 1
            self.messages.append(msg)
            if len(self.messages) > MAX_KEPT:
                del self.messages[: MAX_KEPT // 2]  # bounded memory on endless connections
            for finding in analysis.findings:
                self.report.add_violation(finding)
                level = logging.WARNING if finding.severity is Severity.ERROR else logging.INFO
                log.log(level, "front-end violation: %s", finding)
            for expectation in self.script.expectations:
                try:
                    expectation.observe(msg)
                except Exception as exc:
                    self.script_error(f"expectation {expectation.description!r}", exc)
        return msg

    def note_sent(self, channel: Channel, frame: Frame) -> int:
        """Analyse one message the mock sends (its findings are our own); its number."""
        with self.lock:
            analysis = self.connection.sending(frame, channel)
            if len(self.report.own) < MAX_KEPT:
                self.report.own.extend(analysis.findings)
            if channel is Channel.BACKEND and analysis.role is Role.REQUEST:
                for expectation in self.script.expectations:
                    expectation.sent(analysis.seq, channel, analysis.name)
            return analysis.seq

    def _handle(self, msg: Message) -> None:
        self.received += 1
        log.debug("<- %s", msg)
        try:
            fired = [a for a in self.script.faults if a.matches(self.received, msg.name)]
            for armed in fired:
                fault_log.info(
                    "fault %s fired on #%d %s", armed.fault.describe(), msg.seq, msg.name
                )
            for armed in fired:
                if isinstance(armed.fault, faultlib.Close):
                    log.info("fault: closing the connection at %s", msg)
                    raise ConnectionClosed(f"closed by fault {armed.describe()}")
            for hook in self.script.hooks_before(msg.name):
                self._call(hook, msg)
            if msg.role is Role.POSTCOPY_ACK:
                reply = handlers.postcopy_ack(self, msg)
            elif msg.role is Role.REPLY:
                reply = None  # a reply where we asked nothing: the finding says it all
            else:
                reply = self._dispatch(msg)
            sent = self._send_reply(msg, reply, [a.fault for a in fired])
            for hook in self.script.hooks_after(msg.name):
                self._call(hook, msg, sent)
        finally:
            msg.close_fds()

    def _dispatch(self, msg: Message) -> Reply | None:
        handler = self.script.handlers.get(msg.name)
        try:
            reply = handler(self, msg) if handler else self.default(msg)
        except ConnectionClosed:
            raise
        except Exception as exc:
            if handler is None:
                log.exception("handler for %s failed", msg.name)
                self.error(f"#{msg.seq} {msg.name}: handler raised {exc!r}")
            else:
                self.script_error(f"#{msg.seq} {msg.name}: handler", exc)
            reply = Reply.ack(1) if msg.need_reply else None
        row = msg.row
        if (
            reply is None
            and msg.need_reply
            and row is not None
            and row.reply in (spec.Reply.ACK, spec.Reply.POSTCOPY)
        ):
            reply = Reply.ack(0)  # libvhost-user acks every NEED_REPLY it has no reply for
        return reply

    def default(self, msg: Message) -> Reply | None:
        """What the mock does with ``msg`` unless a script overrides it."""
        return handlers.handle(self, msg)

    def _call(self, hook: object, *args: object) -> None:
        try:
            hook(self, *args)  # type: ignore[operator]
        except ConnectionClosed:
            raise
        except Exception as exc:
            self.script_error(f"hook {getattr(hook, '__name__', hook)}", exc)

    # -- replies -------------------------------------------------------------------

    def _send_reply(
        self, msg: Message, reply: Reply | None, fired: list[faultlib.Fault]
    ) -> Reply | None:
        if reply is None:
            if any(faultlib.affects_reply(f) for f in fired):
                log.info("fault on %s, which has no reply: ignored", msg)
            return None
        default_layout = msg.analysis.layout if msg.row is None else self._reply_layout(msg)
        frame = reply.frame(
            msg.request, default_layout or "ack", self.conversation.state.payload_context()
        )
        garbage_then_reply = True
        for fault in fired:
            if isinstance(fault, faultlib.Delay):
                time.sleep(fault.seconds)
            elif isinstance(fault, faultlib.Drop):
                log.info("fault: dropping the reply to %s", msg)
                self._close_reply_fds(reply, frame)
                return reply
            elif isinstance(fault, faultlib.Garbage):
                log.info("fault: sending %d bytes of garbage for %s", len(fault.data), msg)
                wire.send_all(self.sock, fault.data)
                garbage_then_reply = fault.then_reply
            else:
                frame = fault.mutate(frame)
        if garbage_then_reply:
            self.note_sent(Channel.MAIN, frame)
            log.debug(
                "-> reply %s flags=0x%x size=%d fds=%d",
                msg.name,
                frame.flags,
                frame.size,
                len(frame.fds),
            )
            self.send_frame(frame)
        self._close_reply_fds(reply, frame)
        return reply

    def _reply_layout(self, msg: Message) -> str:
        row = msg.row
        assert row is not None
        if row.reply is spec.Reply.POSTCOPY and self.postcopy_listening:
            return row.postcopy_payload or "ack"
        if row.reply is spec.Reply.ACK:
            return "ack"
        return row.reply_payload

    @staticmethod
    def _close_reply_fds(reply: Reply, frame: Frame) -> None:
        extra = [fd for fd in frame.fds if fd not in reply.fds]
        wire.close_fds(extra)  # fds a fault added
        if reply.close_fds:
            wire.close_fds(reply.fds)

    def send_frame(self, frame: Frame) -> None:
        """Send a frame on the main socket as is (for hand-made messages)."""
        wire.send_frame(self.sock, frame)

    def send_raw(self, data: bytes, fds: tuple[int, ...] = ()) -> None:
        """Send bytes that may be no message at all."""
        wire.send_all(self.sock, data, fds)

    def close(self, why: str = "closed by the script") -> None:
        """End the connection after the current message (from a handler or hook)."""
        raise ConnectionClosed(why)

    # -- rings ---------------------------------------------------------------------

    def ring(self, index: int) -> Ring | None:
        return self.rings[index] if 0 <= index < len(self.rings) else None

    def start_ring(self, ring: Ring) -> None:
        ring.started = True
        if ring.worker is None:
            ring.worker = RingWorker(ring, self._process)
            ring.worker.start()

    def stop_ring(self, ring: Ring) -> None:
        worker, ring.worker = ring.worker, None
        if worker is not None:
            worker.stop()
        ring.started = False

    def wake_ring(self, ring: Ring) -> None:
        if ring.worker is not None:
            ring.worker.wake()

    def _wake_index(self, index: int) -> None:
        ring = self.ring(index)
        if ring is not None:
            self.wake_ring(ring)

    def _process(self, ring: Ring) -> None:
        device = self.device
        if device is None:
            return
        process_ring(
            ring,
            lambda queue, chain: device.handle(queue, chain, self.memory),  # type: ignore[arg-type]
            self._ring_error,
            self._inband_call if self._inband() else None,
            device.ready,
        )

    def _inband(self) -> bool:
        state = self.conversation.state
        return self.backend is not None and state.has_protocol(ProtocolFeature.INBAND_NOTIFICATIONS)

    def _inband_call(self, index: int) -> None:
        if self.backend is not None:
            self.backend.vring_call(index)

    def _ring_error(self, ring: Ring, text: str) -> None:
        self.error(f"ring {ring.index} broken: {text}")

    @contextlib.contextmanager
    def rings_paused(self) -> Iterator[None]:
        """No ring is processed inside (memory is about to be unmapped)."""
        held = []
        try:
            for ring in self.rings:
                ring.lock.acquire()
                held.append(ring)
            yield
        finally:
            for ring in held:
                ring.lock.release()

    # -- reporting -----------------------------------------------------------------

    def error(self, text: str) -> None:
        log.error("%s", text)
        with self.lock:
            self.report.errors.append(text)

    def script_error(self, what: str, exc: BaseException) -> None:
        """A handler, hook or expectation of the script raised: one line, no traceback."""
        text = f"{what} raised at {describe_exception(exc)}"
        log.error("script error: %s", text)
        with self.lock:
            self.report.script_errors.append(text)

    def _note(self, seq: int | None, code: str, text: str) -> None:
        finding = Finding(seq, "", code, text)
        log.warning("front-end violation: %s", finding)
        with self.lock:
            self.report.add_violation(finding)

    def after_backend_reply(self, msg: Message) -> None:
        """Hooks registered for a back-end channel request also see its reply."""
        for hook in self.script.hooks_after(msg.name):
            try:
                hook(self, msg, None)
            except Exception as exc:
                self.script_error(f"hook {getattr(hook, '__name__', hook)}", exc)

    def _finish(self) -> None:
        self._closed = True
        for ring in self.rings:
            self.stop_ring(ring)
        if self.backend is not None:
            self.backend.close()
        with self.lock:
            for finding in self.connection.close(self.report.closed_by or "the end"):
                if finding.code == "no-reply" and self._owed_by_us(finding):
                    self.report.own.append(finding)
                else:
                    self.report.add_violation(finding)
        for ring in self.rings:
            ring.close()
        with self.rings_paused():
            self.memory.clear()
        if self.inflight is not None:
            self.inflight.close()
            self.inflight = None
        if self.ufd is not None:
            wire.close_fds([self.ufd])
            self.ufd = None
        for expectation in self.script.expectations:
            try:
                self.report.expectation_failures += expectation.sentences()
            except Exception as exc:
                self.script_error(f"expectation {expectation.description!r}", exc)
        self.report.unused_faults = [a.describe() for a in self.script.faults if not a.fired]
        with contextlib.suppress(OSError):
            self.sock.close()

    def _owed_by_us(self, finding: Finding) -> bool:
        row = spec.lookup_request(finding.request)
        return row is not None and row[0] is Channel.MAIN
