"""What one connection of the mock back-end knows and can do: ``ctx`` in scripts.

The :class:`Context` of a connection holds its device, guest memory, rings, script and
what the protocol :class:`~vhtrace.protocol.connection.Connection` made of the
conversation, and it is what handlers, hooks and the back-end channel act on. It is the
leaf of mockbackend's connection layer: :mod:`mockbackend.handlers`,
:mod:`mockbackend.channel` and :mod:`mockbackend.script` import it, it imports none of
them, and the I/O loop (:class:`mockbackend.loop.ConnectionLoop`) sits on top, reading
messages and handing them over. Two things it needs from above come in as values: the
default handling of a message (``default``) and the script (anything shaped like
:class:`ScriptView`, which :class:`mockbackend.script.Script` is).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

from mockbackend.connection_report import Report
from mockbackend.devices.base import Device
from mockbackend.errors import describe_exception
from mockbackend.expect import Expectation
from mockbackend.inflight import InflightArea
from mockbackend.memory import GuestMemory, MappedRegion
from mockbackend.messages import Answer, Message
from mockbackend.rings import Ring, RingWorker, process_ring
from vhtrace import wire
from vhtrace.protocol import spec
from vhtrace.protocol.connection import Connection, Received
from vhtrace.protocol.conversation import Conversation, Role
from vhtrace.protocol.findings import Finding, Severity
from vhtrace.protocol.framing import Frame
from vhtrace.protocol.spec import Channel, ProtocolFeature, Side
from vhtrace.protocol.state import ConversationState

log = logging.getLogger("mockbackend")

MAX_KEPT = 10_000
"""Messages (and violations) kept per connection; older ones are forgotten, counted."""

MAX_RINGS = 256
"""Rings a device may declare (bounded allocation whatever the front-end asks)."""

Handler = Callable[["Context", Message], Answer | None]
"""Handles a request: the answer to send, or None."""
BeforeHook = Callable[["Context", Message], None]
AfterHook = Callable[["Context", Message, Answer | None], None]


class ConnectionClosed(Exception):
    """A fault or a handler closed the connection on purpose."""


@runtime_checkable
class ScriptView(Protocol):
    """What a connection reads of its script (:class:`mockbackend.script.Script`)."""

    device: Device | None
    protocol_features: int
    max_mem_slots: int
    expectations: list[Expectation]

    @property
    def features(self) -> int: ...

    @property
    def queues(self) -> int: ...

    def config_space(self) -> bytes: ...

    def hooks_after(self, name: str) -> list[AfterHook]: ...


class Context:
    """The mock back-end's side of one vhost-user connection (``ctx`` in scripts)."""

    def __init__(self, sock: socket.socket, script: ScriptView, default: Handler) -> None:
        self.sock = sock
        """The main socket (the loop reads it; replies and :meth:`send_frame` write it)."""
        self.script = script
        self._default = default
        self.device: Device | None = script.device
        names = {"blk": spec.DeviceType.BLK, "net": spec.DeviceType.NET}
        device_type = names.get(self.device.name) if self.device is not None else None
        self.connection = Connection(Side.BACKEND, device=device_type)
        """The protocol of this connection: every message, both channels, goes through it."""
        self.memory = GuestMemory(on_violation=lambda code, text: self.note(None, code, text))
        queues = max(1, min(script.queues, MAX_RINGS))
        self.rings = [Ring(i) for i in range(queues)]
        if self.device is not None:
            self.device.attach(self._wake_index)
        self.backend: Any = None
        """The back-end channel (a :class:`mockbackend.channel.BackendChannel`) once
        SET_BACKEND_REQ_FD passed its socket; None before."""
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

    @property
    def conversation(self) -> Conversation:
        """The conversation behind :attr:`connection` (its findings and pending replies)."""
        return self.connection.conversation

    @property
    def state(self) -> ConversationState:
        """What the conversation has established (features, regions, rings)."""
        return self.conversation.state

    # -- messages in and out -------------------------------------------------------

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

    def default(self, msg: Message) -> Answer | None:
        """What the mock does with ``msg`` unless a script overrides it."""
        return self._default(self, msg)

    def send_frame(self, frame: Frame) -> None:
        """Send a frame on the main socket as is (for hand-made messages)."""
        wire.send_frame(self.sock, frame)

    def send_raw(self, data: bytes, fds: tuple[int, ...] = ()) -> None:
        """Send bytes that may be no message at all."""
        wire.send_all(self.sock, data, fds)

    def close(self, why: str = "closed by the script") -> None:
        """End the connection after the current message (from a handler or hook)."""
        raise ConnectionClosed(why)

    def after_backend_reply(self, msg: Message) -> None:
        """Hooks registered for a back-end channel request also see its reply."""
        for hook in self.script.hooks_after(msg.name):
            try:
                hook(self, msg, None)
            except Exception as exc:
                self.script_error(f"hook {getattr(hook, '__name__', hook)}", exc)

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
        """Add an error (a refused request, a broken ring, the mock's own trouble)."""
        log.error("%s", text)
        with self.lock:
            self.report.errors.append(text)

    def script_error(self, what: str, exc: BaseException) -> None:
        """A handler, hook or expectation of the script raised: one line, no traceback."""
        text = f"{what} raised at {describe_exception(exc)}"
        log.error("script error: %s", text)
        with self.lock:
            self.report.script_errors.append(text)

    def note(self, seq: int | None, code: str, text: str) -> None:
        """A front-end violation found outside the conversation (memory, the socket)."""
        finding = Finding(seq, "", code, text)
        log.warning("front-end violation: %s", finding)
        with self.lock:
            self.report.add_violation(finding)

    # -- the end -------------------------------------------------------------------

    def release(self) -> None:
        """Stop the rings and the back-end channel; unmap memory; close what we hold."""
        for ring in self.rings:
            self.stop_ring(ring)
        if self.backend is not None:
            self.backend.close()
        with self.lock:
            for finding in self.connection.close(self.report.closed_by or "the end"):
                if finding.code == "no-reply" and _owed_by_us(finding):
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


def _owed_by_us(finding: Finding) -> bool:
    row = spec.lookup_request(finding.request)
    return row is not None and row[0] is Channel.MAIN
