"""A conversation driver for protocol tests: messages in, analyses out, no sockets."""

from __future__ import annotations

from typing import Any

import pytest

from vhtrace.protocol import spec
from vhtrace.protocol.conversation import Analysis, Conversation, WireMessage
from vhtrace.protocol.framing import Frame
from vhtrace.protocol.messages import build
from vhtrace.protocol.spec import Channel, DeviceType, ProtocolFeature, Side

ALL_PROTOCOL_FEATURES = sum(1 << bit for bit in ProtocolFeature) & ~(
    # XEN_MMAP changes the memory region layout and GPA_ADDRESSES the address space:
    # tests that want them ask for them.
    1 << ProtocolFeature.XEN_MMAP | 1 << ProtocolFeature.GPA_ADDRESSES
)
VIRTIO_FEATURES = (
    1 << spec.VIRTIO_F_PROTOCOL_FEATURES
    | 1 << spec.VIRTIO_F_VERSION_1
    | 1 << spec.VIRTIO_F_ACCESS_PLATFORM
)

DRIVER_STATUS = 0x3
"""ACKNOWLEDGE | DRIVER: the status a driver has before it sets FEATURES_OK."""
FEATURES_OK = spec.VIRTIO_STATUS_FEATURES_OK


class Dialogue:
    """Feeds one Conversation, numbering messages as they would cross the wire."""

    def __init__(self, device: DeviceType | None = None, frontend: str | None = None) -> None:
        self.conversation = Conversation(device, frontend)
        self.seq = 0

    @property
    def state(self) -> Any:
        return self.conversation.state

    def send(
        self,
        frame: Frame,
        sender: Side = Side.FRONTEND,
        channel: Channel = Channel.MAIN,
        fds: int | None = None,
        complete: bool = True,
    ) -> Analysis:
        """One message; ``fds`` is how many fds came with it (default: the frame's)."""
        self.seq += 1
        count = len(frame.fds) if fds is None else fds
        wire = WireMessage(
            self.seq,
            channel,
            sender,
            frame.request,
            frame.flags,
            frame.size,
            frame.payload,
            count,
            complete,
        )
        return self.conversation.analyse(wire)

    def request(
        self,
        name: str,
        fields: dict[str, Any] | None = None,
        *,
        need_reply: bool | None = None,
        fds: int = 0,
        channel: Channel = Channel.MAIN,
    ) -> Analysis:
        """A request from whichever side sends requests on the channel; NEED_REPLY as a
        front-end sets it unless told (always on the rows whose spec says so)."""
        if need_reply is None:
            found = spec.lookup_request(name)
            row = spec.request_spec(*found) if found else None
            need_reply = bool(row and row.sets_need_reply)
        frame = build(name, fields, channel=channel, need_reply=need_reply)
        return self.send(frame, spec.requester(channel), channel, fds)

    def reply(
        self,
        name: str,
        fields: dict[str, Any] | None = None,
        *,
        layout: str | None = None,
        fds: int = 0,
        channel: Channel = Channel.MAIN,
    ) -> Analysis:
        """A well-formed reply (flags 0x5) from the side that answers on the channel."""
        frame = build(name, fields, channel=channel, reply=True, layout=layout)
        return self.send(frame, spec.requester(channel).peer, channel, fds)

    def negotiate(
        self,
        protocol: int = ALL_PROTOCOL_FEATURES,
        virtio: int = VIRTIO_FEATURES,
        queues: int | None = None,
    ) -> list[Analysis]:
        """The usual opening: features offered and set, protocol features, queue count."""
        steps = [
            self.request("GET_FEATURES"),
            self.reply("GET_FEATURES", {"features": virtio}),
            self.request("GET_PROTOCOL_FEATURES"),
            self.reply("GET_PROTOCOL_FEATURES", {"features": protocol}),
            self.request("SET_PROTOCOL_FEATURES", {"features": protocol}),
        ]
        if queues is not None:
            steps += [self.request("GET_QUEUE_NUM"), self.reply("GET_QUEUE_NUM", {"value": queues})]
        steps.append(self.request("SET_FEATURES", {"features": virtio}))
        if protocol >> ProtocolFeature.STATUS & 1:
            # as QEMU's vhost_user_set_features() does: read the status, add FEATURES_OK
            steps += [
                self.request("GET_STATUS"),
                self.reply("GET_STATUS", {"status": DRIVER_STATUS}),
                self.request("SET_STATUS", {"status": DRIVER_STATUS | FEATURES_OK}),
            ]
        return steps


@pytest.fixture
def make_dialogue() -> type[Dialogue]:
    """The Dialogue class, for tests that need several or a device type."""
    return Dialogue


@pytest.fixture
def dialogue() -> Dialogue:
    """A conversation with nothing negotiated yet."""
    return Dialogue()


@pytest.fixture
def negotiated() -> Dialogue:
    """A conversation past feature negotiation (every protocol feature but XEN_MMAP and
    GPA_ADDRESSES), with no finding so far."""
    talk = Dialogue()
    for step in talk.negotiate():
        assert not step.findings, [str(f) for f in step.findings]
    return talk
