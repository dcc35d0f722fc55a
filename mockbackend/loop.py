"""One connection of the mock back-end: read, validate, hook, handle, reply, report.

Theory of operation
-------------------
The loop reads the front-end's messages one at a time, never past a message's end, so
every fd lands on its own message (:class:`vhtrace.protocol.framing.Framer`). Each
message, and each message the mock sends, goes through the connection's
:class:`vhtrace.protocol.connection.Connection`, which decodes it and reports what
breaks the spec. Findings on the front-end's messages are *violations*: logged, kept
for the report, handed to scripts, never a crash.

Then, in order: expectations observe the message; an armed connection fault may close
the connection; ``before`` hooks run; the handler (the script's override, else the
default one in :mod:`mockbackend.handlers`) computes the answer; an armed reply fault
may change it; the answer is sent; ``after`` hooks run; fds nobody took are closed.
A handler or hook that raises is reported as an error and the connection goes on.

What the connection knows and what handlers act on is its
:class:`~mockbackend.context.Context` (``ctx`` in scripts); this module is only the
loop on top of it. Ring processing runs on one thread per ring
(:mod:`mockbackend.rings`); the back-end channel has its own reader thread
(:mod:`mockbackend.channel`). The conversation is shared, under the context's lock.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time

from mockbackend import faults as faultlib
from mockbackend import handlers
from mockbackend.connection_report import Report
from mockbackend.context import ConnectionClosed, Context
from mockbackend.messages import Answer, Message
from mockbackend.script import Script
from vhtrace import wire
from vhtrace.protocol import spec
from vhtrace.protocol.conversation import Role
from vhtrace.protocol.framing import Frame
from vhtrace.protocol.spec import Channel

log = logging.getLogger("mockbackend")
fault_log = logging.getLogger("mockbackend.faults")
"""One INFO line per fault that fires (the CLI shows these unless -q)."""


class ConnectionLoop:
    """Serves one vhost-user connection with a script, on the calling thread."""

    def __init__(self, sock: socket.socket, script: Script) -> None:
        self.sock = sock
        self.script = script
        self.ctx = Context(sock, script, handlers.handle)
        """What the connection knows and what handlers and hooks act on."""
        self._closed = False
        self._reader = wire.ConnectionReader(sock, self.ctx.connection, Channel.MAIN, self.ctx.lock)

    @property
    def report(self) -> Report:
        return self.ctx.report

    # -- the loop ----------------------------------------------------------------

    def run(self) -> Report:
        """Serve the connection until it closes; the report."""
        report = self.ctx.report
        try:
            while not self._closed:
                msg = self._read()
                if msg is None:
                    report.closed_by = report.closed_by or "closed by the front-end"
                    break
                try:
                    self._handle(msg)
                except ConnectionClosed as exc:
                    report.closed_by = str(exc)
                    break
        except OSError as exc:
            report.closed_by = f"socket error: {exc}"
        finally:
            self._finish()
        return report

    def _read(self) -> Message | None:
        """The next whole message (oversized ones come with their payload cut)."""
        received = self._reader.read()
        if self._reader.fds_dropped:
            self._reader.fds_dropped = False
            self.ctx.note(None, "fd-limit", "more fds sent than the kernel passes; some dropped")
        if received is None:
            if self._reader.truncated is not None:
                self.ctx.note(None, "truncated", self._reader.truncated.description)
            return None
        return self.ctx.receive(received)

    def _handle(self, msg: Message) -> None:
        ctx = self.ctx
        ctx.received += 1
        log.debug("<- %s", msg)
        try:
            fired = [a for a in self.script.faults if a.matches(ctx.received, msg.name)]
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
                answer = handlers.postcopy_ack(ctx, msg)
            elif msg.role is Role.REPLY:
                answer = None  # a reply where we asked nothing: the finding says it all
            else:
                answer = self._dispatch(msg)
            sent = self._send_answer(msg, answer, [a.fault for a in fired])
            for hook in self.script.hooks_after(msg.name):
                self._call(hook, msg, sent)
        finally:
            msg.close_fds()

    def _dispatch(self, msg: Message) -> Answer | None:
        ctx = self.ctx
        handler = self.script.handlers.get(msg.name)
        try:
            answer = handler(ctx, msg) if handler else ctx.default(msg)
        except ConnectionClosed:
            raise
        except Exception as exc:
            if handler is None:
                log.exception("handler for %s failed", msg.name)
                ctx.error(f"#{msg.seq} {msg.name}: handler raised {exc!r}")
            else:
                ctx.script_error(f"#{msg.seq} {msg.name}: handler", exc)
            answer = Answer.ack(1) if msg.need_reply else None
        row = msg.row
        if (
            answer is None
            and msg.need_reply
            and row is not None
            and row.reply in (spec.Reply.ACK, spec.Reply.POSTCOPY)
        ):
            answer = Answer.ack(0)  # libvhost-user acks every NEED_REPLY it has no reply for
        return answer

    def _call(self, hook: object, *args: object) -> None:
        try:
            hook(self.ctx, *args)  # type: ignore[operator]
        except ConnectionClosed:
            raise
        except Exception as exc:
            self.ctx.script_error(f"hook {getattr(hook, '__name__', hook)}", exc)

    # -- answers -------------------------------------------------------------------

    def _send_answer(
        self, msg: Message, answer: Answer | None, fired: list[faultlib.Fault]
    ) -> Answer | None:
        ctx = self.ctx
        if answer is None:
            if any(faultlib.affects_reply(f) for f in fired):
                log.info("fault on %s, which has no reply: ignored", msg)
            return None
        default_layout = msg.analysis.layout if msg.row is None else self._reply_layout(msg)
        frame = answer.frame(msg.request, default_layout or "ack", ctx.state.payload_context())
        garbage_then_reply = True
        for fault in fired:
            if isinstance(fault, faultlib.Delay):
                time.sleep(fault.seconds)
            elif isinstance(fault, faultlib.Drop):
                log.info("fault: dropping the reply to %s", msg)
                self._close_answer_fds(answer, frame)
                return answer
            elif isinstance(fault, faultlib.Garbage):
                log.info("fault: sending %d bytes of garbage for %s", len(fault.data), msg)
                wire.send_all(self.sock, fault.data)
                garbage_then_reply = fault.then_reply
            else:
                frame = fault.mutate(frame)
        if garbage_then_reply:
            ctx.note_sent(Channel.MAIN, frame)
            log.debug(
                "-> reply %s flags=0x%x size=%d fds=%d",
                msg.name,
                frame.flags,
                frame.size,
                len(frame.fds),
            )
            ctx.send_frame(frame)
        self._close_answer_fds(answer, frame)
        return answer

    def _reply_layout(self, msg: Message) -> str:
        row = msg.row
        assert row is not None
        if row.reply is spec.Reply.POSTCOPY and self.ctx.postcopy_listening:
            return row.postcopy_payload or "ack"
        if row.reply is spec.Reply.ACK:
            return "ack"
        return row.reply_payload

    @staticmethod
    def _close_answer_fds(answer: Answer, frame: Frame) -> None:
        extra = [fd for fd in frame.fds if fd not in answer.fds]
        wire.close_fds(extra)  # fds a fault added
        if answer.close_fds:
            wire.close_fds(answer.fds)

    # -- the end -------------------------------------------------------------------

    def _finish(self) -> None:
        self._closed = True
        ctx = self.ctx
        ctx.release()
        for expectation in self.script.expectations:
            try:
                ctx.report.expectation_failures += expectation.sentences()
            except Exception as exc:
                ctx.script_error(f"expectation {expectation.description!r}", exc)
        ctx.report.unused_faults = [a.describe() for a in self.script.faults if not a.fired]
        with contextlib.suppress(OSError):
            self.sock.close()
