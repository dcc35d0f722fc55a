"""The byte-stream channels of a replay: our side written in a thread, the peer's compared."""

from __future__ import annotations

import os
import select

import pytest

from vhtrace.replay.streams import READ_SIZE, StreamEnd, write_and_close


def pipe() -> tuple[int, int]:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    return read_end, write_end


def drain(end: StreamEnd) -> None:
    while True:
        select.select([end.fd], [], [], 5)
        if end.read():
            return


def test_more_than_a_pipe_holds_is_written_then_eof() -> None:
    read_end, write_end = pipe()
    data = os.urandom(4 * READ_SIZE + 123)
    thread = write_and_close(write_end, data)
    end = StreamEnd(read_end, "device-state", data)
    drain(end)
    thread.join(5)
    assert not thread.is_alive()
    assert bytes(end.got) == data and end.difference() is None
    end.close()


def test_a_different_stream_says_where_it_differs() -> None:
    read_end, write_end = pipe()
    write_and_close(write_end, b"abcXef").join(5)
    end = StreamEnd(read_end, "device-state", b"abcdef")
    drain(end)
    assert end.difference() == (
        "the device-state stream differs: recorded 6 bytes, live 6; first difference at byte 3"
    )
    end.close()


@pytest.mark.parametrize("live", [b"abc", b"abcdefgh"])
def test_a_shorter_or_longer_stream_is_a_prefix(live: bytes) -> None:
    read_end, write_end = pipe()
    write_and_close(write_end, live).join(5)
    end = StreamEnd(read_end, "gpu", b"abcdef")
    drain(end)
    assert end.difference() == (
        f"the gpu stream differs: recorded 6 bytes, live {len(live)}; one is a prefix of the other"
    )
    end.close()


def test_a_drained_stream_is_not_compared_nor_kept() -> None:
    read_end, write_end = pipe()
    write_and_close(write_end, b"x" * 1000).join(5)
    end = StreamEnd(read_end, "gpu", None)
    drain(end)
    assert not end.compared and end.got == bytearray() and end.difference() is None
    end.close()


def test_nothing_to_read_yet_is_not_eof_and_an_unfinished_stream_says_how_far() -> None:
    read_end, write_end = pipe()
    end = StreamEnd(read_end, "device-state", b"0123456789")
    assert end.read() is False
    os.write(write_end, b"0123")
    assert end.read() is False
    assert end.unfinished(2.5) == (
        "the device-state stream did not end within 2.5 s (4 of 10 recorded bytes came)"
    )
    os.close(write_end)
    end.close()
