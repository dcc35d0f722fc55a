"""Framing: a byte stream plus the fds received with it -> messages.

Pure code in the sans-I/O manner: :meth:`Framer.feed` takes whatever one
``recvmsg`` returned (bytes and the fds that came with them) and
:meth:`Framer.next_event` hands out what can be told from that so far.

Which message owns a group of fds: the spec asks senders to attach fds to the
``sendmsg`` that carries the first byte of a message's header, and the kernel
hands them out with the ``recvmsg`` that reads that byte. So the fds fed with a
chunk belong to the first message that starts inside that chunk; if no message
starts inside it (a chunk in the middle of a payload), to the message in
progress. A reader that never reads past the end of a message (the recorder
asks for :meth:`Framer.bytes_wanted` bytes) sees at most one message start per
chunk, which makes the rule exact.

A header whose size field is above ``max_payload`` is reported at once
(:class:`OversizedStart`) and its payload is passed through in pieces
(:class:`OversizedData`) without being stored: only the first ``max_payload``
bytes are kept for the record. A transparent relay forwards those pieces as
they come, as the real peer would have read them.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from vhtrace.protocol.spec import HEADER_SIZE, MAX_PAYLOAD, SCM_MAX_FD

_HEADER = struct.Struct("<III")
_SIZE = struct.Struct("<I")


def pack_header(request: int, flags: int, size: int) -> bytes:
    return _HEADER.pack(request, flags, size)


def unpack_header(data: bytes) -> tuple[int, int, int]:
    """(request, flags, size) of the first 12 bytes."""
    return _HEADER.unpack_from(data)


@dataclass(frozen=True, slots=True)
class Frame:
    """One message as it crossed the socket."""

    request: int
    flags: int
    size: int
    """The size field of the header (what the sender claimed)."""
    payload: bytes
    """The payload bytes kept: all of them unless the message is oversized."""
    fds: tuple[int, ...] = ()
    oversized: bool = False
    """size was above the framer's maximum: payload holds only a prefix."""

    @property
    def header(self) -> bytes:
        return _HEADER.pack(self.request, self.flags, self.size)

    @property
    def raw(self) -> bytes:
        """Header and kept payload: exactly what was sent, unless oversized."""
        return self.header + self.payload

    @classmethod
    def parse(cls, raw: bytes, fds: tuple[int, ...] = ()) -> Frame:
        """The frame of a message's bytes (a recorded one: its payload may be short of
        its size field); ValueError if the 12-byte header is not whole."""
        if len(raw) < HEADER_SIZE:
            raise ValueError(f"{len(raw)} bytes: a message header is {HEADER_SIZE}")
        request, flags, size = _HEADER.unpack_from(raw)
        return cls(request, flags, size, bytes(raw[HEADER_SIZE:]), tuple(fds))

    @classmethod
    def build(
        cls, request: int, flags: int, payload: bytes = b"", fds: tuple[int, ...] = ()
    ) -> Frame:
        """A well-formed frame whose size field matches its payload."""
        return cls(request, flags, len(payload), payload, tuple(fds))


@dataclass(frozen=True, slots=True)
class OversizedStart:
    """A header whose size is above the maximum: forward it now, payload follows."""

    request: int
    flags: int
    size: int
    fds: tuple[int, ...]

    @property
    def header(self) -> bytes:
        return _HEADER.pack(self.request, self.flags, self.size)


@dataclass(frozen=True, slots=True)
class OversizedData:
    """A piece of an oversized payload, to be forwarded as is."""

    data: bytes
    fds: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Incomplete:
    """What was left of a message when the stream ended."""

    data: bytes
    """Header bytes (fewer than 12) or a header and part of its payload."""
    fds: tuple[int, ...]
    expected: int
    """Bytes the message needed: 12 while in the header, else 12 + size."""
    oversized: bool = False
    """The size field was above the maximum: data holds only a prefix of the payload."""

    def describe(self) -> str:
        if len(self.data) < HEADER_SIZE:
            where = f"{len(self.data)} bytes into a message header"
        else:
            request, _, size = unpack_header(self.data)
            where = f"{len(self.data) - HEADER_SIZE} of {size} payload bytes into request {request}"
        fds = f", {len(self.fds)} fds attached" if self.fds else ""
        return f"stream ended {where}{fds}"


FramerEvent = Frame | OversizedStart | OversizedData


def split_fds(size: int, nfds: int, limit: int = SCM_MAX_FD) -> list[tuple[int, int]] | None:
    """How to send ``size`` bytes with ``nfds`` fds when one sendmsg takes at most ``limit``.

    Returns (bytes, fds) per sendmsg, in order: every piece but the last is one
    byte, so the fds stay as close to the message start as they can; None when
    there are fewer bytes than pieces needed."""
    if nfds <= limit:
        return [(size, nfds)]
    pieces = -(-nfds // limit)
    if size < pieces:
        return None
    out = [(1, limit)] * (pieces - 1)
    out.append((size - (pieces - 1), nfds - limit * (pieces - 1)))
    return out


@dataclass(slots=True)
class _FdGroup:
    start: int
    """Stream offset of the first byte of the chunk the fds came with."""
    end: int
    fds: tuple[int, ...]


class Framer:
    """Turns one direction of a vhost-user stream into frames."""

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buffer = bytearray()
        self._buffer_offset = 0
        """Stream offset of the first byte in the buffer."""
        self._fed = 0
        """Stream offset just past the last byte fed."""
        self._groups: deque[_FdGroup] = deque()
        self._events: deque[FramerEvent] = deque()
        # An oversized message being passed through:
        self._streaming: OversizedStart | None = None
        self._stream_left = 0
        self._stream_kept = bytearray()
        self._stream_start = 0

    # -- input ---------------------------------------------------------------

    def feed(self, data: bytes, fds: tuple[int, ...] | list[int] = ()) -> None:
        """Add the bytes and fds of one read."""
        if fds:
            self._groups.append(_FdGroup(self._fed, self._fed + len(data), tuple(fds)))
        self._fed += len(data)
        if self._streaming is not None:
            data = self._pass_through(data)
        self._buffer += data
        self._parse()

    def whole_messages(self, data: bytes) -> list[int] | None:
        """Where each whole message at the start of ``data`` ends (none oversized), when the
        framer holds nothing: a burst seen at a message boundary, which a relay can forward
        as one piece and take off the socket (the rest, a message cut short, stays there).
        The framer counts those bytes as read. [] if ``data`` begins with no whole message,
        None if the framer holds part of one: then :meth:`feed` what is read."""
        if self._buffer or self._streaming is not None or self._groups:
            return None
        ends = []
        at, total, limit = 0, len(data), self.max_payload
        while total - at >= HEADER_SIZE:
            size = _SIZE.unpack_from(data, at + 8)[0]
            end = at + HEADER_SIZE + size
            if size > limit or end > total:
                break
            ends.append(end)
            at = end
        self._fed += at
        self._buffer_offset += at
        return ends

    def bytes_wanted(self) -> int:
        """How many bytes complete the current header or message (never past its end)."""
        if self._streaming is not None:
            return self._stream_left
        if len(self._buffer) < HEADER_SIZE:
            return HEADER_SIZE - len(self._buffer)
        _, _, size = unpack_header(self._buffer)
        return max(HEADER_SIZE + size - len(self._buffer), 1)

    def next_event(self) -> FramerEvent | None:
        """The next complete event, or None when more bytes are needed."""
        return self._events.popleft() if self._events else None

    def events(self) -> list[FramerEvent]:
        """All events available now."""
        out = list(self._events)
        self._events.clear()
        return out

    def eof(self) -> Incomplete | None:
        """The stream ended: what was left of an unfinished message, if anything."""
        if self._streaming is not None:
            # Its fds went out with OversizedStart: the caller owns them already.
            start = self._streaming
            data = start.header + bytes(self._stream_kept)
            self._streaming = None
            return Incomplete(data, (), HEADER_SIZE + start.size, oversized=True)
        if not self._buffer and not self._groups:
            return None
        fds = tuple(fd for group in self._groups for fd in group.fds)
        self._groups.clear()
        data = bytes(self._buffer)
        self._buffer.clear()
        expected = HEADER_SIZE + unpack_header(data)[2] if len(data) >= HEADER_SIZE else HEADER_SIZE
        return Incomplete(data, fds, expected)

    @property
    def streaming(self) -> bool:
        """True while an oversized payload is being passed through (already forwarded)."""
        return self._streaming is not None

    @property
    def in_message(self) -> bool:
        """True while part of a message has been read."""
        return bool(self._buffer) or self._streaming is not None

    # -- internals -----------------------------------------------------------

    def _claim_fds(self, start: int, end: int) -> tuple[int, ...]:
        """fds of the message occupying stream bytes [start, end)."""
        claimed: list[int] = []
        while self._groups and self._groups[0].start < end:
            group = self._groups[0]
            if group.start > start and group.end > end:
                break  # the chunk begins inside this message and another starts in it
            claimed.extend(group.fds)
            self._groups.popleft()
        return tuple(claimed)

    def _parse(self) -> None:
        while len(self._buffer) >= HEADER_SIZE:
            request, flags, size = unpack_header(self._buffer)
            start = self._buffer_offset
            if size > self.max_payload:
                self._start_streaming(request, flags, size, start)
                if self._streaming is not None:
                    return
                continue
            total = HEADER_SIZE + size
            if len(self._buffer) < total:
                return
            payload = bytes(self._buffer[HEADER_SIZE:total])
            del self._buffer[:total]
            self._buffer_offset += total
            fds = self._claim_fds(start, start + total)
            self._events.append(Frame(request, flags, size, payload, fds))

    def _start_streaming(self, request: int, flags: int, size: int, start: int) -> None:
        fds = self._claim_fds(start, start + HEADER_SIZE)
        self._streaming = OversizedStart(request, flags, size, fds)
        self._stream_left = size
        self._stream_kept = bytearray()
        self._stream_start = start
        self._events.append(self._streaming)
        rest = bytes(self._buffer[HEADER_SIZE:])
        self._buffer.clear()
        self._buffer_offset = start + HEADER_SIZE
        leftover = self._pass_through(rest)
        self._buffer += leftover

    def _pass_through(self, data: bytes) -> bytes:
        """Consume payload bytes of the oversized message; return what follows it."""
        assert self._streaming is not None
        take = data[: self._stream_left]
        rest = data[self._stream_left :]
        if take:
            room = self.max_payload - len(self._stream_kept)
            if room > 0:
                self._stream_kept += take[:room]
            late_fds = self._claim_fds(self._buffer_offset, self._buffer_offset + len(take))
            self._events.append(OversizedData(bytes(take), late_fds))
            self._stream_left -= len(take)
            self._buffer_offset += len(take)
        if self._stream_left == 0:
            start = self._streaming
            self._events.append(
                Frame(
                    start.request,
                    start.flags,
                    start.size,
                    bytes(self._stream_kept),
                    start.fds,
                    oversized=True,
                )
            )
            self._streaming = None
            self._stream_kept = bytearray()
        return rest
