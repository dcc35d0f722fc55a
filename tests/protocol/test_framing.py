"""The framer: a byte stream cut anywhere, plus fds, back into the messages sent.

The fd rule under test (protocol reference section 1, framing.py): fds ride
with the read that carries the first byte of their message's header, so the
fds fed with a chunk belong to the first message that starts in that chunk,
or, when none starts in it, to the message in progress.
"""

from __future__ import annotations

import itertools
import tracemalloc
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from vhtrace.protocol.framing import (
    Frame,
    Framer,
    Incomplete,
    OversizedData,
    OversizedStart,
    pack_header,
)
from vhtrace.protocol.spec import HEADER_SIZE, MAX_PAYLOAD


@dataclass(frozen=True)
class Sent:
    request: int
    flags: int
    payload: bytes
    fds: tuple[int, ...]

    @property
    def raw(self) -> bytes:
        return pack_header(self.request, self.flags, len(self.payload)) + self.payload


_fd_numbers = itertools.count(100)

sent_messages = st.lists(
    st.builds(
        lambda request, flags, payload, nfds: Sent(
            request, flags, payload, tuple(next(_fd_numbers) for _ in range(nfds))
        ),
        st.integers(0, 0xFFFFFFFF),
        st.integers(0, 0xFFFFFFFF),
        st.binary(max_size=200),
        st.sampled_from([0, 0, 0, 1, 2, 8]),
    ),
    min_size=1,
    max_size=12,
)


@dataclass
class Stream:
    messages: list[Sent]
    chunks: list[tuple[bytes, tuple[int, ...]]]
    """What each recvmsg returned: bytes and the fds that came with them."""


@st.composite
def chunked_streams(draw: st.DrawFn, fd_chunk_starts_at_message: bool) -> Stream:
    """Messages serialized, cut at random points and coalesced.

    Each fd-carrying message gets a cut where its fds' chunk begins: at its first
    byte, or (when not ``fd_chunk_starts_at_message``) anywhere after the first
    byte of the message before it, as when a read takes the tail of one message
    and the head of the next. No other cut falls between that point and the
    message's first byte, so the message is the first to start in the chunk."""
    messages = draw(sent_messages)
    data = b"".join(m.raw for m in messages)
    starts = list(itertools.accumulate((len(m.raw) for m in messages[:-1]), initial=0))
    cuts = set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=20)))
    fd_at: dict[int, tuple[int, ...]] = {}
    for i, message in enumerate(messages):
        if not message.fds:
            continue
        start = starts[i]
        low = start if fd_chunk_starts_at_message or i == 0 else starts[i - 1] + 1
        where = draw(st.integers(low, start))
        cuts = {c for c in cuts if not where < c <= start}
        cuts.add(where)
        fd_at[where] = message.fds
    bounds = sorted({0, *cuts, len(data)})
    chunks = [(data[a:b], fd_at.get(a, ())) for a, b in itertools.pairwise(bounds) if a < b]
    return Stream(messages, chunks)


def frames_of(framer: Framer) -> list[Frame]:
    events = framer.events()
    assert all(isinstance(event, Frame) for event in events)
    return events


def assert_same_messages(frames: list[Frame], messages: list[Sent]) -> None:
    assert [(f.request, f.flags, f.size, f.payload, f.fds) for f in frames] == [
        (m.request, m.flags, len(m.payload), m.payload, m.fds) for m in messages
    ]
    assert not any(f.oversized for f in frames)


@settings(max_examples=300, deadline=None)
@given(stream=chunked_streams(fd_chunk_starts_at_message=True))
def test_messages_cut_anywhere_come_back_in_order_with_their_fds(stream: Stream) -> None:
    framer = Framer()
    frames = []
    for data, fds in stream.chunks:
        framer.feed(data, fds)
        frames += frames_of(framer)
    assert_same_messages(frames, stream.messages)
    assert framer.eof() is None
    assert not framer.in_message


@settings(max_examples=300, deadline=None)
@given(stream=chunked_streams(fd_chunk_starts_at_message=False))
def test_fds_of_a_chunk_go_to_the_first_message_starting_in_it(stream: Stream) -> None:
    framer = Framer()
    for data, fds in stream.chunks:
        framer.feed(data, fds)
    assert_same_messages(frames_of(framer), stream.messages)


@settings(max_examples=300, deadline=None)
@given(messages=sent_messages, data=st.data())
def test_a_reader_that_reads_what_the_framer_wants_never_crosses_a_message_end(
    messages: list[Sent], data: st.DataObject
) -> None:
    """The recorder reads at most bytes_wanted(): every read then lies inside one
    message, so the kernel's fds (which come with the read holding the first byte)
    land on exactly that message."""
    stream = b"".join(m.raw for m in messages)
    ends = list(itertools.accumulate(len(m.raw) for m in messages))
    starts = [0, *ends[:-1]]
    framer = Framer()
    frames: list[Frame] = []
    position = 0
    while position < len(stream):
        wanted = framer.bytes_wanted()
        end = next(e for e in ends if e > position)
        assert 1 <= wanted <= end - position
        take = data.draw(st.integers(1, wanted))
        fds = ()
        if position in starts:
            fds = messages[starts.index(position)].fds
        framer.feed(stream[position : position + take], fds)
        position += take
        frames += frames_of(framer)
    assert_same_messages(frames, messages)
    assert framer.bytes_wanted() == HEADER_SIZE  # back at the start of a header


def test_fds_arriving_in_the_middle_of_a_payload_belong_to_the_message_in_progress() -> None:
    first = Sent(5, 1, bytes(40), ())
    second = Sent(1, 1, b"", ())
    framer = Framer()
    framer.feed(first.raw[:20])
    framer.feed(first.raw[20:30], (7, 8))  # no message starts in this chunk
    framer.feed(first.raw[30:] + second.raw)
    frames = frames_of(framer)
    assert [f.fds for f in frames] == [(7, 8), ()]


def test_a_chunk_holding_the_tail_of_one_message_and_the_head_of_the_next() -> None:
    first = Sent(16, 1, bytes(8), ())
    second = Sent(5, 1, bytes(40), ())
    framer = Framer()
    framer.feed(first.raw[:10])
    framer.feed(first.raw[10:] + second.raw[:5], (3,))  # second starts in this chunk
    framer.feed(second.raw[5:])
    assert [f.fds for f in frames_of(framer)] == [(), (3,)]


# --------------------------------------------------------------------------
# Oversized size fields
# --------------------------------------------------------------------------


def test_size_ffffffff_is_reported_at_once_and_its_payload_is_never_stored() -> None:
    framer = Framer()
    framer.feed(pack_header(5, 1, 0xFFFFFFFF), (4, 5))
    events = framer.events()
    assert events == [OversizedStart(5, 1, 0xFFFFFFFF, (4, 5))]
    assert framer.bytes_wanted() == 0xFFFFFFFF

    piece = b"\xab" * (64 << 10)
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        forwarded = 0
        for _ in range(128):  # 8 MiB of payload
            framer.feed(piece)
            for event in framer.events():
                assert isinstance(event, OversizedData)
                forwarded += len(event.data)
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert forwarded == 128 * len(piece)
    assert peak < 1 << 20  # nothing like the 8 MiB that went through
    assert framer.bytes_wanted() == 0xFFFFFFFF - forwarded

    leftover = framer.eof()
    assert isinstance(leftover, Incomplete)
    assert leftover.fds == ()  # handed out with OversizedStart: closing them again would be wrong
    assert leftover.expected == HEADER_SIZE + 0xFFFFFFFF
    # the header and only the first max_payload bytes were kept
    assert leftover.data == pack_header(5, 1, 0xFFFFFFFF) + piece[:MAX_PAYLOAD]
    assert "into request 5" in leftover.describe()


def test_the_stream_after_an_oversized_message_is_framed_correctly() -> None:
    big = Sent(24, 1, bytes(range(256)) * 4, (10,))  # 1024 bytes, above the limit of 64
    after = [Sent(1, 1, b"", ()), Sent(13, 1, bytes(8), (11,))]
    framer = Framer(max_payload=64)
    # the oversized message and the next one coalesced, then the fd-carrying one
    framer.feed(big.raw[:500], big.fds)
    framer.feed(big.raw[500:] + after[0].raw)
    framer.feed(after[1].raw, after[1].fds)
    events = framer.events()
    assert events[0] == OversizedStart(24, 1, 1024, (10,))
    pieces = [e for e in events if isinstance(e, OversizedData)]
    assert b"".join(p.data for p in pieces) == big.payload
    frames = [e for e in events if isinstance(e, Frame)]
    assert frames[0] == Frame(24, 1, 1024, big.payload[:64], (10,), oversized=True)
    assert_same_messages(frames[1:], after)


def test_an_oversized_header_in_the_middle_of_a_chunk_is_reported_when_read() -> None:
    normal = Sent(3, 1, b"", ())
    framer = Framer(max_payload=16)
    framer.feed(normal.raw + pack_header(8, 1, 100) + bytes(10))
    events = framer.events()
    assert isinstance(events[0], Frame) and events[0].request == 3
    assert events[1] == OversizedStart(8, 1, 100, ())
    assert events[2] == OversizedData(bytes(10))
    assert framer.bytes_wanted() == 90


# --------------------------------------------------------------------------
# End of stream
# --------------------------------------------------------------------------


def test_eof_after_whole_messages_leaves_nothing() -> None:
    framer = Framer()
    assert framer.eof() is None
    framer.feed(Sent(1, 1, b"", ()).raw)
    framer.events()
    assert framer.eof() is None


def test_eof_inside_a_header_returns_the_bytes_and_the_fds_to_close() -> None:
    framer = Framer()
    framer.feed(pack_header(5, 1, 40)[:5], (20, 21))
    assert framer.events() == []
    leftover = framer.eof()
    assert leftover == Incomplete(pack_header(5, 1, 40)[:5], (20, 21), HEADER_SIZE)
    assert leftover.describe() == "stream ended 5 bytes into a message header, 2 fds attached"
    assert framer.eof() is None  # handed out once


def test_eof_inside_a_payload_says_how_far_it_got() -> None:
    framer = Framer()
    message = Sent(5, 1, bytes(40), (9,))
    framer.feed(message.raw[:30], message.fds)
    leftover = framer.eof()
    assert leftover.data == message.raw[:30]
    assert leftover.fds == (9,)
    assert leftover.expected == HEADER_SIZE + 40
    assert (
        leftover.describe() == "stream ended 18 of 40 payload bytes into request 5, 1 fds attached"
    )


def test_whole_messages_gives_where_each_of_a_burst_ends() -> None:
    burst = b"".join(
        s.raw for s in (Sent(1, 1, b"", ()), Sent(2, 1, b"x" * 8, ()), Sent(3, 5, b"", ()))
    )
    framer = Framer()
    assert framer.whole_messages(burst) == [12, 32, 44]
    assert not framer.in_message
    follow = Sent(7, 1, b"y" * 4, (5,))
    framer.feed(follow.raw, (5,))
    [frame] = framer.events()
    assert (frame.request, frame.payload, frame.fds) == (7, b"y" * 4, (5,)), "offsets kept"


def test_whole_messages_leaves_anything_else_to_feed() -> None:
    whole = Sent(1, 1, b"abcd", ()).raw
    assert Framer().whole_messages(whole[:-1]) == [], "a cut payload"
    assert Framer().whole_messages(whole[:5]) == [], "a cut header"
    assert Framer(max_payload=2).whole_messages(whole) == [], "oversized"
    framer = Framer()
    assert framer.whole_messages(whole + whole[:5]) == [16], "the cut one after is left"
    framer.feed(whole[:3])
    assert framer.whole_messages(whole[3:]) is None, "the framer holds part of a message"
    framer.feed(whole[3:])
    assert [f.payload for f in framer.events()] == [b"abcd"]
