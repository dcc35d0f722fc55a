"""A conversation fed with built messages: protocol state for snapshot tests, no sockets."""

from __future__ import annotations

from typing import Any

from vhtrace.protocol import spec
from vhtrace.protocol.conversation import Analysis, Conversation, WireMessage
from vhtrace.protocol.messages import build
from vhtrace.protocol.spec import Channel, Side
from vhtrace.protocol.state import ConversationState

FEATURES = (
    1 << spec.VIRTIO_F_PROTOCOL_FEATURES
    | 1 << spec.VIRTIO_F_VERSION_1
    | 1 << spec.VIRTIO_F_EVENT_IDX
    | 1 << spec.VIRTIO_F_INDIRECT_DESC
)


class Talk:
    def __init__(self) -> None:
        self.conversation = Conversation()
        self.seq = 0

    @property
    def state(self) -> ConversationState:
        return self.conversation.state

    def send(
        self,
        name: str,
        fields: dict[str, Any] | None = None,
        *,
        reply: bool = False,
        fds: int = 0,
        need_reply: bool = False,
    ) -> tuple[Analysis, int, bool]:
        """(analysis, request id, reply owed) of one message."""
        self.seq += 1
        frame = build(name, fields, reply=reply, need_reply=need_reply)
        sender = Side.BACKEND if reply else Side.FRONTEND
        wire = WireMessage(
            self.seq,
            Channel.MAIN,
            sender,
            frame.request,
            frame.flags,
            frame.size,
            frame.payload,
            fds,
        )
        analysis = self.conversation.analyse(wire)
        owed = any(p.seq == self.seq for p in self.conversation.pending[Channel.MAIN])
        return analysis, frame.request, owed

    def ring(self, index: int, num: int, desc: int, avail: int, used: int, base: int = 0) -> None:
        """Configure and start a ring (addresses in the front-end's space)."""
        self.send("SET_VRING_NUM", {"index": index, "num": num})
        self.send("SET_VRING_BASE", {"index": index, "num": base})
        self.send(
            "SET_VRING_ADDR",
            {
                "index": index,
                "flags": 0,
                "desc_user_addr": desc,
                "used_user_addr": used,
                "avail_user_addr": avail,
                "log_guest_addr": 0,
            },
        )
        self.send("SET_VRING_KICK", {"index": index, "nofd": False}, fds=1)
        self.send("SET_VRING_ENABLE", {"index": index, "num": 1})
