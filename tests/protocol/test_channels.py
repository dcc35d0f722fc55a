"""Which fd a channel-opening message must carry, judged from the fd's metadata."""

from __future__ import annotations

import pytest

from vhtrace.protocol.channels import DUE, describe_kind, wrong_fd

UNIX_STREAM = {"kind": "socket", "family": "unix", "type": "stream", "connected": True}


@pytest.mark.parametrize(
    ("meta", "words"),
    [
        ({"kind": "eventfd"}, "an eventfd"),
        ({"kind": "pipe"}, "a pipe"),
        ({"kind": "memfd"}, "a memfd"),
        (UNIX_STREAM, "a unix stream socket"),
        ({**UNIX_STREAM, "type": "dgram"}, "a unix dgram socket"),
        ({**UNIX_STREAM, "connected": False}, "an unconnected unix stream socket"),
        ({"kind": "socket", "family": "inet6", "type": "stream"}, "an inet6 stream socket"),
        ({"kind": "socket"}, "an unknown-family unknown-type socket"),
        ({"kind": "other", "error": "EBADF"}, "an unreadable fd (EBADF)"),
        ({}, "an other"),
    ],
)
def test_an_fd_kind_in_words(meta: dict, words: str) -> None:
    assert describe_kind(meta) == words


@pytest.mark.parametrize("opens", ["backend", "gpu"])
def test_socket_channels_need_a_connected_unix_stream_socket(opens: str) -> None:
    assert wrong_fd(opens, UNIX_STREAM) is None
    assert wrong_fd(opens, {**UNIX_STREAM, "connected": None}) is None  # not known: fits
    assert wrong_fd(opens, {"kind": "eventfd"}) == f"an eventfd, {DUE[opens]} is due"
    unconnected = wrong_fd(opens, {**UNIX_STREAM, "connected": False})
    assert unconnected == "an unconnected unix stream socket, a unix stream socket is due"
    assert wrong_fd(opens, {**UNIX_STREAM, "type": "seqpacket"}) is not None
    assert wrong_fd(opens, {**UNIX_STREAM, "family": "inet"}) is not None


def test_the_device_state_channel_needs_a_pipe() -> None:
    assert wrong_fd("device-state", {"kind": "pipe"}) is None
    assert wrong_fd("device-state", UNIX_STREAM) == "a unix stream socket, a pipe is due"


def test_a_channel_with_no_rule_accepts_anything() -> None:
    assert wrong_fd("log", {"kind": "eventfd"}) is None
