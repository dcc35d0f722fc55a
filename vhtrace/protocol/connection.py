"""One vhost-user connection as one party speaks it: bytes and fds in, events out.

This is h11's ``Connection`` for vhost-user, and the only layer the shells (replay,
the mock back-end, fuzz) read and write through. It owns, for one connection:

* a :class:`~vhtrace.protocol.framing.Framer` per channel we read (the main socket,
  the back-end channel): :meth:`Connection.receive_data` takes what one ``recvmsg``
  returned and gives back whole messages, each with the fds that came with it;
* the :class:`~vhtrace.protocol.conversation.Conversation` that both directions feed,
  so that every message, received or sent, is numbered, decoded and checked once, in
  wire order, with the same state (features, regions, rings) behind it.

It does no I/O: the caller reads and writes the sockets, and closes the fds an event
hands back as nobody's (:class:`StrayFds`). A shell never builds a ``WireMessage``
itself: :func:`wire_view` (a frame) and :func:`recorded_view` (a trace's message record)
are the only two places a message becomes one.

``vhtrace record`` is the one shell in the middle rather than a party: its relay reads
both sides through one ``Connection(None)`` per session, at the framing level
(:meth:`Connection.relay_reader`), since it forwards each message before anything is
analysed and an oversized one piece by piece as it comes; it has a message analysed
(:meth:`Connection.check`) only under ``--strict``. Its recorder, in a process of its
own, analyses what the relay handed over as trace records through
:func:`recorded_view`, the path ``show`` takes, so that what a recording said live and
what ``show`` says of it later agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vhtrace.protocol import messages
from vhtrace.protocol.conversation import CUT_HEADER, Analysis, Conversation, WireMessage
from vhtrace.protocol.findings import Finding
from vhtrace.protocol.framing import (
    Frame,
    Framer,
    FramerEvent,
    Incomplete,
    OversizedData,
    unpack_header,
)
from vhtrace.protocol.payloads import PayloadContext
from vhtrace.protocol.spec import HEADER_SIZE, MAX_PAYLOAD, Channel, DeviceType, Side
from vhtrace.protocol.state import ConversationState


@dataclass(frozen=True, slots=True)
class Received:
    """A whole message the peer sent, analysed. Its fds now belong to the caller."""

    frame: Frame
    wire: WireMessage
    """The header fields as the conversation read them."""
    analysis: Analysis

    @property
    def seq(self) -> int:
        return self.analysis.seq

    @property
    def channel(self) -> Channel:
        return self.analysis.channel

    @property
    def name(self) -> str:
        return self.analysis.name

    @property
    def fds(self) -> tuple[int, ...]:
        return self.frame.fds


@dataclass(frozen=True, slots=True)
class StrayFds:
    """fds that no message owns (they came inside an oversized payload): close them."""

    fds: tuple[int, ...]
    channel: Channel


@dataclass(frozen=True, slots=True)
class Truncated:
    """The stream ended inside a message: what was left, and its fds (close them)."""

    channel: Channel
    description: str
    fds: tuple[int, ...]


Event = Received | StrayFds

Piece = FramerEvent
"""What a relay reads: a whole Frame, or an oversized message's start and pieces."""


def wire_view(seq: int, channel: Channel, sender: Side, frame: Frame) -> WireMessage:
    """The conversation's view of a frame (a message read or built whole): with
    :func:`recorded_view`, the one place a message becomes a WireMessage."""
    return WireMessage(
        seq,
        channel,
        sender,
        frame.request,
        frame.flags,
        frame.size,
        frame.payload,
        len(frame.fds),
        not frame.oversized and frame.size == len(frame.payload),
    )


def recorded_view(
    seq: int, channel: Channel, sender: Side, raw: bytes, nfds: int, cut: int | bool = False
) -> WireMessage:
    """The conversation's view of a message as a trace holds it: its bytes as they were
    read (the payload maybe short of its size field, or only part of the header) and how
    many fds came; ``cut``: the recorder knows it was cut (oversized, or ended by EOF).
    Every recorded message of every trace comes this way (show, stats, the recorder)."""
    request, flags, size, payload, whole = _HEADS.get(raw) or _head(raw)
    return _new_tuple(
        WireMessage,
        (seq, channel, sender, request, flags, size, payload, nfds, whole and not cut),
    )


def _head(raw: bytes) -> tuple[int, int, int, bytes, bool]:
    """(request, flags, size, payload, whether raw is as long as size says) of a message's
    bytes; kept for small messages, since conversations repeat the same ones."""
    if len(raw) >= HEADER_SIZE:
        request, flags, size = unpack_header(raw)
        head = (request, flags, size, raw[HEADER_SIZE:], len(raw) == HEADER_SIZE + size)
    else:  # the stream ended inside the header: size says how much of it came
        head = (CUT_HEADER, 0, len(raw), b"", False)
    if len(raw) <= _HEAD_CACHED_SIZE:
        if len(_HEADS) >= _HEADS_MAX:
            _HEADS.clear()
        _HEADS[raw] = head
    return head


_new_tuple = tuple.__new__
"""WireMessage is a NamedTuple: built without its keyword-checking __new__ (hot path)."""
_HEADS: dict[bytes, tuple[int, int, int, bytes, bool]] = {}
"""_head by message bytes: a pure function of them, so never stale."""
_HEADS_MAX = 8192
_HEAD_CACHED_SIZE = 256
"""Larger messages are rare and not worth keeping."""


class RelayReader:
    """One socket's bytes from one side, framed for a proxy that forwards what it reads
    before anything is analysed: whole frames, and an oversized message as it comes (its
    start, its pieces, then its frame with the payload cut to the maximum)."""

    __slots__ = ("_framer", "channel", "sender")

    def __init__(self, channel: Channel, sender: Side, framer: Framer) -> None:
        self.channel = channel
        self.sender = sender
        self._framer = framer

    def bytes_wanted(self) -> int:
        """How much the next recvmsg may read: never past the current message's end."""
        return self._framer.bytes_wanted()

    @property
    def in_message(self) -> bool:
        """True while part of a message has been read."""
        return self._framer.in_message

    def receive(self, data: bytes, fds: Sequence[int] = ()) -> list[Piece]:
        """What one read completes (fds inside an oversized payload's pieces are the
        caller's to pass on; those of a frame are on the frame)."""
        self._framer.feed(data, fds)
        return self._framer.events()

    def burst(self, data: bytes) -> list[int] | None:
        """Where each whole message (none oversized) at the start of ``data`` ends, seen
        without fds at a message boundary: a proxy may forward them as the one piece they
        came in, and take just those bytes off the socket. They count as read. [] or None
        (part of a message is held): read and :meth:`receive` instead."""
        return self._framer.whole_messages(data)

    def eof(self) -> tuple[Incomplete | None, bool]:
        """The stream ended: what was left of an unfinished message, if any (its fds the
        caller's), and whether it was an oversized one already forwarded as it came (then
        only its record is due)."""
        streamed = self._framer.streaming
        return self._framer.eof(), streamed


class Connection:
    """The protocol state of one connection, from the side of ``our_side``, or of a proxy
    in the middle of it (``our_side`` None: both sides are read, see the relay methods).

    Messages are numbered in the order they are received or sent (1, 2, ...), both
    channels and both directions together, as a trace numbers them."""

    def __init__(
        self,
        our_side: Side | None,
        device: DeviceType | None = None,
        max_payload: int = MAX_PAYLOAD,
    ) -> None:
        self.our_side = our_side
        self.peer_side = None if our_side is None else our_side.peer
        self.conversation = Conversation(device)
        self._max_payload = max_payload
        self._limits: dict[Channel, int] = {}
        self._framers: dict[Channel, Framer] = {}
        self.seq = 0
        """Number of the last message received or sent."""

    @property
    def state(self) -> ConversationState:
        """What the conversation has established so far (features, regions, rings)."""
        return self.conversation.state

    @property
    def context(self) -> PayloadContext:
        """How payloads read now (negotiated features, device type)."""
        return self.conversation.state.payload_context()

    def frame_channel(self, channel: Channel, max_payload: int) -> None:
        """Frame ``channel`` too, with messages up to ``max_payload``: the GPU socket, whose
        protocol has vhost-user's header, is framed by a proxy so that its fds stay on their
        message (it is recorded as a byte stream)."""
        self._limits[channel] = max_payload

    # -- receiving ------------------------------------------------------------------

    def bytes_wanted(self, channel: Channel = Channel.MAIN) -> int:
        """How much to ask the next recvmsg for: never past the current message's end,
        so the fds the kernel hands out with a read belong to one message."""
        return self._framer(channel).bytes_wanted()

    def receive_data(
        self, data: bytes, fds: Sequence[int] = (), channel: Channel = Channel.MAIN
    ) -> list[Event]:
        """Feed what one recvmsg returned (``data`` not empty; b'' is :meth:`eof`)."""
        framer = self._framer(channel)
        framer.feed(data, tuple(fds))
        events: list[Event] = []
        for event in framer.events():
            if isinstance(event, Frame):
                events.append(self._received(channel, event))
            elif isinstance(event, OversizedData) and event.fds:
                events.append(StrayFds(event.fds, channel))
            # OversizedStart: its fds come back with the final Frame
        return events

    def in_message(self, channel: Channel = Channel.MAIN) -> bool:
        """True while part of a message on ``channel`` has been read."""
        framer = self._framers.get(channel)
        return framer is not None and framer.in_message

    def eof(self, channel: Channel = Channel.MAIN) -> Truncated | None:
        """The peer closed ``channel``: what was left of an unfinished message, if any."""
        framer = self._framers.pop(channel, None)
        leftover = framer.eof() if framer is not None else None
        if leftover is None:
            return None
        return Truncated(channel, leftover.describe(), leftover.fds)

    def _received(self, channel: Channel, frame: Frame) -> Received:
        self.seq += 1
        assert self.peer_side is not None, "a proxy reads with relay_reader"
        wire = wire_view(self.seq, channel, self.peer_side, frame)
        return Received(frame, wire, self.conversation.analyse(wire))

    def _framer(self, channel: Channel) -> Framer:
        framer = self._framers.get(channel)
        if framer is None:
            if self.peer_side is None:
                raise ValueError("a proxy's connection reads through relay_reader")
            if not channel.framed:
                raise ValueError(f"the {channel} channel is not framed")
            framer = self._framers[channel] = Framer(self._max_payload)
        return framer

    # -- relaying (a proxy in the middle: our_side None) ------------------------------

    def relay_reader(self, channel: Channel, sender: Side) -> RelayReader:
        """A reader of ``sender``'s bytes on one socket of ``channel``, for a proxy: one per
        socket (a hostile front-end may open a second back-end channel beside the first).
        Its messages are numbered and checked by the proxy (:meth:`check`)."""
        limit = self._limits.get(channel)
        if limit is None and not channel.framed:
            raise ValueError(f"the {channel} channel is not framed")
        return RelayReader(channel, sender, Framer(limit or self._max_payload))

    def check(self, seq: int, channel: Channel, sender: Side, frame: Frame) -> Analysis:
        """A relayed message analysed by the conversation under its trace number ``seq``
        (a proxy numbers messages with its sessions' other records)."""
        return self.conversation.analyse(wire_view(seq, channel, sender, frame))

    # -- sending --------------------------------------------------------------------

    def send(
        self,
        name: str | int,
        fields: dict[str, Any] | None = None,
        *,
        fds: Sequence[int] = (),
        channel: Channel = Channel.MAIN,
        reply: bool = False,
        need_reply: bool = False,
        layout: str | None = None,
    ) -> tuple[Frame, Analysis]:
        """A message of ours, encoded from its fields and analysed as sent: the frame to
        write (header, payload and fds) and what it says."""
        frame = messages.build(
            name,
            fields,
            channel=channel,
            reply=reply,
            need_reply=need_reply,
            layout=layout,
            fds=tuple(fds),
            ctx=self.context,
        )
        return frame, self.sending(frame, channel)

    def sending(self, frame: Frame, channel: Channel = Channel.MAIN) -> Analysis:
        """Analyse a frame of ours built elsewhere (recorded bytes replayed, a fault's
        hand-made header): sent messages take their number and move the state."""
        return self._analyse(channel, self.our_side, frame)

    # -- the end --------------------------------------------------------------------

    def close(self, why: str = "the connection closed") -> list[Finding]:
        """The connection ended: every reply still owed becomes a finding."""
        return self.conversation.close(why)

    def _analyse(self, channel: Channel, sender: Side, frame: Frame) -> Analysis:
        self.seq += 1
        return self.conversation.analyse(wire_view(self.seq, channel, sender, frame))
