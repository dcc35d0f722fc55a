"""The back-end channel: requests the mock back-end sends to the front-end, and their replies.

QEMU passes one end of a socketpair in SET_BACKEND_REQ_FD. The mock sends requests on it
whenever a script asks; a reader thread collects the front-end's replies, has the
conversation judge them, and completes the :class:`PendingReply` of each request.

Waiting for a reply on the thread that serves the main socket can deadlock: QEMU answers
CONFIG_CHANGE_MSG only after it has re-read the config with GET_CONFIG on the main socket.
So :meth:`BackendChannel.send` never waits; use :meth:`PendingReply.wait` from another
thread, or :meth:`PendingReply.then` to act when the reply comes.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import uuid as uuidlib
from collections import deque
from collections.abc import Callable
from typing import Any

from mockbackend.context import Context
from mockbackend.messages import Message, build_request
from vhtrace import wire
from vhtrace.protocol import spec
from vhtrace.protocol.connection import Received
from vhtrace.protocol.framing import Frame
from vhtrace.protocol.spec import Channel, ProtocolFeature

log = logging.getLogger("mockbackend")


class PendingReply:
    """The front-end's answer to one back-end request, once it comes."""

    def __init__(self, seq: int, name: str, expects_reply: bool) -> None:
        self.seq = seq
        self.name = name
        self.expects_reply = expects_reply
        self.reply: Message | None = None
        self._done = threading.Event()
        self._callbacks: list[Callable[[Message | None], None]] = []
        if not expects_reply:
            self._done.set()

    def wait(self, timeout: float | None = None) -> Message | None:
        """Block until the reply arrives (None: no reply expected, or the channel closed)."""
        self._done.wait(timeout)
        return self.reply

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def then(self, callback: Callable[[Message | None], None]) -> PendingReply:
        """Call ``callback(reply)`` on the reader thread when the reply arrives."""
        if self._done.is_set():
            callback(self.reply)
        else:
            self._callbacks.append(callback)
        return self

    def complete(self, reply: Message | None) -> None:
        self.reply = reply
        self._done.set()
        for callback in self._callbacks:
            try:
                callback(reply)
            except Exception as exc:  # a script's callback must not kill the reader
                log.exception("back-end channel callback failed")
                del exc


class BackendChannel:
    """Our end of the socketpair from SET_BACKEND_REQ_FD."""

    def __init__(self, sock: socket.socket, ctx: Context) -> None:
        self.sock = sock
        self.ctx = ctx
        self._send_lock = threading.Lock()
        self._waiting: deque[PendingReply] = deque()
        self.sent: list[Frame] = []
        self.closed = False
        self._reader = threading.Thread(target=self._read_loop, name="backend-channel", daemon=True)
        self._reader.start()

    # -- sending ---------------------------------------------------------------

    def send(
        self,
        name: str | int,
        fields: dict[str, Any] | None = None,
        *,
        need_reply: bool | None = None,
        fds: tuple[int, ...] = (),
        frame: Frame | None = None,
    ) -> PendingReply:
        """Send a back-end request; ``need_reply`` defaults to 'if REPLY_ACK was negotiated'.

        ``frame`` sends a hand-made (possibly malformed) message instead."""
        state = self.ctx.conversation.state
        if need_reply is None:
            need_reply = state.has_protocol(ProtocolFeature.REPLY_ACK)
        if frame is None:
            frame = build_request(
                name,
                fields,
                need_reply=need_reply,
                fds=fds,
                ctx=state.payload_context(),
            )
        row = spec.request_spec(Channel.BACKEND, frame.request)
        expects = bool(frame.flags & spec.FLAG_NEED_REPLY) or (
            row is not None and row.reply is spec.Reply.ALWAYS
        )
        with self._send_lock:
            seq = self.ctx.note_sent(Channel.BACKEND, frame)
            pending = PendingReply(seq, spec.request_name(Channel.BACKEND, frame.request), expects)
            if expects:
                self._waiting.append(pending)
            try:
                wire.send_frame(self.sock, frame)
            except OSError as exc:
                self.ctx.error(f"back-end channel send failed: {exc}")
                if expects:
                    self._waiting.remove(pending)
                pending.complete(None)
                return pending
            self.sent.append(frame)
        log.info("-> back-end channel #%d %s", seq, pending.name)
        return pending

    def config_change(self, need_reply: bool | None = None) -> PendingReply:
        """BACKEND_CONFIG_CHANGE_MSG: the front-end re-reads the config (GET_CONFIG)."""
        return self.send("CONFIG_CHANGE_MSG", need_reply=need_reply)

    def iotlb_miss(self, iova: int, perm: int = 3) -> PendingReply:
        """BACKEND_IOTLB_MSG of type MISS for ``iova``."""
        return self.send(
            "IOTLB_MSG", {"iova": iova, "size": 0, "uaddr": 0, "perm": perm, "type": 1}
        )

    def host_notifier(
        self, index: int, fd: int | None, size: int = spec.PAGE_SIZE, offset: int = 0
    ) -> PendingReply:
        """BACKEND_VRING_HOST_NOTIFIER_MSG (``fd=None`` unregisters)."""
        fields = {"index": index, "nofd": fd is None, "size": size, "offset": offset}
        return self.send("VRING_HOST_NOTIFIER_MSG", fields, fds=() if fd is None else (fd,))

    def vring_call(self, index: int) -> PendingReply:
        return self.send("VRING_CALL", {"index": index, "num": 0})

    def vring_err(self, index: int) -> PendingReply:
        return self.send("VRING_ERR", {"index": index, "num": 0})

    def shared_object_add(self, uuid: uuidlib.UUID | str) -> PendingReply:
        return self.send("SHARED_OBJECT_ADD", {"uuid": str(uuid)})

    def shared_object_remove(self, uuid: uuidlib.UUID | str) -> PendingReply:
        return self.send("SHARED_OBJECT_REMOVE", {"uuid": str(uuid)})

    def shared_object_lookup(self, uuid: uuidlib.UUID | str) -> PendingReply:
        """The reply carries a u64 and, on success, a dma-buf fd (``reply.take_fd()``)."""
        return self.send("SHARED_OBJECT_LOOKUP", {"uuid": str(uuid)})

    def shmem_map(
        self, shmid: int, fd: int, fd_offset: int, shm_offset: int, length: int, flags: int = 1
    ) -> PendingReply:
        fields = {
            "shmid": shmid,
            "fd_offset": fd_offset,
            "shm_offset": shm_offset,
            "len": length,
            "flags": flags,
        }
        return self.send("SHMEM_MAP", fields, fds=(fd,))

    def shmem_unmap(self, shmid: int, shm_offset: int, length: int) -> PendingReply:
        fields = {"shmid": shmid, "fd_offset": 0, "shm_offset": shm_offset, "len": length}
        return self.send("SHMEM_UNMAP", fields)

    # -- the front-end's replies ------------------------------------------------

    def _read_loop(self) -> None:
        ctx = self.ctx
        reader = wire.ConnectionReader(self.sock, ctx.connection, Channel.BACKEND, ctx.lock)
        try:
            while (received := reader.read()) is not None:
                self._on_reply(received)
        except OSError:
            pass
        finally:
            self.closed = True
            while self._waiting:
                self._waiting.popleft().complete(None)

    def _on_reply(self, received: Received) -> None:
        msg = self.ctx.receive(received)
        with self._send_lock:
            pending = next((p for p in self._waiting if p.name == msg.name), None)
            if pending is not None:
                self._waiting.remove(pending)
        log.info("<- back-end channel reply %s %s", msg, msg.findings or "")
        self.ctx.after_backend_reply(msg)
        if pending is not None:
            pending.complete(msg)
        if pending is None or msg.name != "SHARED_OBJECT_LOOKUP":
            msg.close_fds()  # only a looked-up dma-buf is left for the script to take

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._reader.join(2)
