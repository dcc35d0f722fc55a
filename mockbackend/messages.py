"""What scripts see and return: a received :class:`Message` and the :class:`Answer` to send.

A Message is one front-end message (or a front-end reply on the back-end channel) with
what :class:`vhtrace.protocol.conversation.Conversation` made of it: its name, decoded
fields and findings. An Answer is the reply a handler wants sent back; it is encoded with
the protocol model's layouts, and every header field can be overridden to build a wrong
one. (It was called ``Reply``, which :class:`vhtrace.protocol.spec.Reply`, the reply rule
of a request, is also called; ``Reply`` stays importable as its old name.)
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any

from vhtrace.protocol import messages as vmessages
from vhtrace.protocol import payloads, spec
from vhtrace.protocol.conversation import Analysis, Role
from vhtrace.protocol.findings import Finding
from vhtrace.protocol.framing import Frame
from vhtrace.protocol.payloads import PayloadContext
from vhtrace.protocol.spec import Channel


@dataclass(slots=True)
class Message:
    """A message the mock back-end received, decoded and judged."""

    seq: int
    channel: Channel
    name: str
    frame: Frame
    analysis: Analysis
    fds: list[int] = field(default_factory=list)
    """fds that came with it; closed after handling unless taken with :meth:`take_fd`."""

    @property
    def request(self) -> int:
        return self.frame.request

    @property
    def flags(self) -> int:
        return self.frame.flags

    @property
    def size(self) -> int:
        return self.frame.size

    @property
    def payload(self) -> bytes:
        return self.frame.payload

    @property
    def role(self) -> Role:
        return self.analysis.role

    @property
    def fields(self) -> dict[str, Any]:
        """Decoded payload fields ({} when the payload could not be decoded)."""
        return self.analysis.fields or {}

    @property
    def decoded(self) -> bool:
        return self.analysis.fields is not None

    @property
    def findings(self) -> list[Finding]:
        return self.analysis.findings

    @property
    def need_reply(self) -> bool:
        return bool(self.frame.flags & spec.FLAG_NEED_REPLY)

    @property
    def row(self) -> spec.RequestSpec | None:
        return spec.request_spec(self.channel, self.frame.request)

    def take_fd(self, index: int = 0) -> int | None:
        """Take ownership of an fd (the caller closes it); None if there is no such fd."""
        if index >= len(self.fds) or self.fds[index] < 0:
            return None
        fd, self.fds[index] = self.fds[index], -1
        return fd

    def close_fds(self) -> None:
        for i, fd in enumerate(self.fds):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                self.fds[i] = -1

    def __str__(self) -> str:
        text = f"#{self.seq} {self.name}"
        summary = self.analysis.summary()
        return f"{text} {summary}" if summary else text


@dataclass(slots=True)
class Answer:
    """A reply to send. By default a well-formed one; any part can be made wrong.

    ``fields`` are encoded with ``layout`` (default: the request's reply layout);
    ``payload`` replaces the encoded bytes. ``request``, ``flags`` and ``size`` override
    the header (``size`` alone lies about the length: the bytes sent stay the payload).
    ``fds`` are sent with it and stay owned by the caller, unless ``close_fds``.
    """

    fields: dict[str, Any] | None = None
    payload: bytes | None = None
    layout: str | None = None
    fds: tuple[int, ...] = ()
    request: int | None = None
    flags: int | None = None
    size: int | None = None
    close_fds: bool = False

    @classmethod
    def ack(cls, value: int = 0) -> Answer:
        """The u64 of REPLY_ACK (0 success, anything else failure)."""
        return cls({"value": value}, layout="ack")

    @classmethod
    def u64(cls, value: int) -> Answer:
        return cls({"value": value}, layout="u64")

    def frame(self, msg_request: int, default_layout: str, ctx: PayloadContext) -> Frame:
        """The frame this reply becomes, answering request id ``msg_request``."""
        payload = self.payload
        if payload is None:
            layout = self.layout or default_layout
            payload = payloads.encode(layout, self.fields or {}, ctx)
        flags = spec.REPLY_FLAGS if self.flags is None else self.flags
        request = msg_request if self.request is None else self.request
        size = len(payload) if self.size is None else self.size
        return Frame(request, flags, size, payload, tuple(self.fds))


Reply = Answer
"""The old name of :class:`Answer` (scripts written before the rename keep working)."""


def build_request(
    name: str | int,
    fields: dict[str, Any] | None = None,
    *,
    channel: Channel = Channel.BACKEND,
    need_reply: bool = False,
    fds: tuple[int, ...] = (),
    ctx: PayloadContext = payloads.DEFAULT_CONTEXT,
) -> Frame:
    """A request frame by name (the back-end channel's by default)."""
    return vmessages.build(name, fields, channel=channel, need_reply=need_reply, fds=fds, ctx=ctx)


def is_request(msg: Message) -> bool:
    return msg.role is Role.REQUEST
