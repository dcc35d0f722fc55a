"""A replay's socket: whole messages with their fds, several per read, the peer's close."""

from __future__ import annotations

import os
import socket

from vhtrace.protocol import spec
from vhtrace.protocol.connection import Connection
from vhtrace.protocol.messages import build, resolve
from vhtrace.protocol.spec import Channel, Side
from vhtrace.replay.links import Link
from vhtrace.wire import send_frame


def link_pair() -> tuple[Link, socket.socket]:
    """Our link (a back-end replay reading the front-end) and the front-end's socket."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return Link(ours, Channel.MAIN, Connection(Side.BACKEND)), theirs


def test_every_waiting_message_comes_in_one_read_with_its_fds() -> None:
    link, peer = link_pair()
    efd = os.eventfd(0)
    try:
        send_frame(peer, build("GET_FEATURES"))
        send_frame(peer, build("SET_VRING_KICK", {"index": 0}, fds=(efd,)))
        send_frame(peer, build("SET_OWNER"))
        received, closed = link.read()
        assert not closed
        assert [r.wire.request for r in received] == [
            resolve(name).id for name in ("GET_FEATURES", "SET_VRING_KICK", "SET_OWNER")
        ]
        [fd] = received[1].frame.fds
        assert os.path.samestat(os.fstat(fd), os.fstat(efd))
        os.close(fd)
        assert link.fileno() == link.sock.fileno()
    finally:
        os.close(efd)
        link.close()
        peer.close()


def test_the_peers_close_is_reported_after_its_last_message() -> None:
    link, peer = link_pair()
    send_frame(peer, build("GET_FEATURES"))
    peer.close()
    received, closed = link.read()
    assert len(received) == 1 and closed
    link.close()
    link.close()  # twice is fine
    assert link.closed


def test_half_a_message_waits_for_the_rest() -> None:
    link, peer = link_pair()
    raw = build("SET_VRING_NUM", {"index": 0, "num": 256}).raw
    peer.sendall(raw[:5])
    assert link.read() == ([], False)
    peer.sendall(raw[5:])
    received, _ = link.read()
    assert [r.frame.raw for r in received] == [raw]
    link.close()
    peer.close()


def test_send_puts_the_fds_on_the_message() -> None:
    link, peer = link_pair()
    reply = build("GET_FEATURES", {"features": 1}, reply=True)
    link.send(reply.raw)
    data = peer.recv(64)
    assert data == reply.raw and data[4] & spec.FLAG_REPLY
    link.close()
    peer.close()
