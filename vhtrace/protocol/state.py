"""What a conversation has established so far: features, memory, rings.

Plain data, filled in by :mod:`vhtrace.protocol.conversation` and read by the
checks, the summaries and the tools built on top (stats, snapshots, replay).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from vhtrace.protocol import spec
from vhtrace.protocol.payloads import PayloadContext
from vhtrace.protocol.spec import DeviceType, ProtocolFeature


class PostcopyPhase(enum.StrEnum):
    NONE = "none"
    ADVISED = "advised"
    """POSTCOPY_ADVISE answered: the back-end has a userfaultfd."""
    LISTENING = "listening"
    """POSTCOPY_LISTEN sent: memory tables now get the three-way exchange."""
    ENDED = "ended"


@dataclass(slots=True)
class Region:
    """A guest memory region as the front-end described it."""

    guest_phys_addr: int
    memory_size: int
    userspace_addr: int
    mmap_offset: int
    seq: int
    """The message that added it."""
    backend_addr: int | None = None
    """Postcopy: the back-end's own mapping address (its 'client base')."""

    def contains(self, addr: int, length: int, space: str) -> bool:
        base = self.guest_phys_addr if space == "gpa" else self.userspace_addr
        return base <= addr and addr + length <= base + self.memory_size

    def start(self, space: str) -> int:
        return self.guest_phys_addr if space == "gpa" else self.userspace_addr


@dataclass(slots=True)
class Ring:
    """What the front-end told the back-end about one virtqueue."""

    index: int
    num: int | None = None
    num_seq: int | None = None
    base: int | None = None
    desc: int | None = None
    avail: int | None = None
    used: int | None = None
    log: int | None = None
    addr_flags: int = 0
    kick: str | None = None
    """'fd' or 'nofd' once SET_VRING_KICK was seen."""
    call: str | None = None
    err: str | None = None
    enabled: bool | None = None
    started: bool = False
    """SET_VRING_KICK received: the back-end processes the ring."""
    last_base: int | None = None
    """num of the last GET_VRING_BASE reply (where the back-end stopped)."""


@dataclass(slots=True)
class ConversationState:
    """Everything negotiated and configured on one connection."""

    device: DeviceType | None = None
    frontend: str | None = None
    """Who the front-end is, when the session context says (``spec.FRONTEND_QEMU``):
    findings about what one front-end does not implement need it."""
    features_offered: int | None = None
    """The back-end's GET_FEATURES reply."""
    features_acked: int | None = None
    """The front-end's last SET_FEATURES."""
    protocol_offered: int | None = None
    protocol_acked: int | None = None
    queue_num: int | None = None
    max_mem_slots: int | None = None
    postcopy: PostcopyPhase = PostcopyPhase.NONE
    postcopy_ack_due: int | None = None
    """Request id whose postcopy ack the front-end owes (after the back-end's reply)."""
    regions: list[Region] = field(default_factory=list)
    rings: dict[int, Ring] = field(default_factory=dict)
    backend_channel: bool = False
    """SET_BACKEND_REQ_FD passed a socket."""
    inflight_requests: int = 0
    """GET_INFLIGHT_FD requests since a ring last stopped (GET_VRING_BASE reply)."""
    log_base: tuple[int, int] | None = None
    status: int | None = None
    """The device status as last set (SET_STATUS) or read (GET_STATUS reply)."""
    started_without_features_ok: bool = False
    """With STATUS, a ring started (SET_VRING_KICK) while the status lacked FEATURES_OK,
    since the last SET_FEATURES (so that this is reported once, not once per ring)."""
    _context: PayloadContext | None = None

    def has_protocol(self, bit: ProtocolFeature) -> bool:
        return self.protocol_acked is not None and bool(self.protocol_acked >> bit & 1)

    def has_virtio(self, bit: int) -> bool:
        return self.features_acked is not None and bool(self.features_acked >> bit & 1)

    def offered_virtio(self, bit: int) -> bool:
        return self.features_offered is not None and bool(self.features_offered >> bit & 1)

    def payload_context(self) -> PayloadContext:
        context = self._context
        if context is None:
            context = self._context = PayloadContext(
                packed=self.has_virtio(spec.VIRTIO_F_RING_PACKED),
                xen_mmap=self.has_protocol(ProtocolFeature.XEN_MMAP),
                device=self.device,
            )
        return context

    def set_features(self, features: int) -> None:
        self.features_acked = features
        self.started_without_features_ok = False
        self._context = None

    def set_device(self, device: DeviceType) -> None:
        """The device type, learnt after the start (inferred from the messages)."""
        self.device = device
        self._context = None

    def set_protocol_features(self, features: int) -> None:
        self.protocol_acked = features
        self._context = None

    def ring(self, index: int) -> Ring:
        """The ring of an index; indices beyond MAX_VRINGS share one scratch entry."""
        ring = self.rings.get(index)
        if ring is None:
            if index >= spec.MAX_VRINGS:
                return Ring(index)  # never a real ring: not kept (bounded memory)
            ring = self.rings[index] = Ring(index)
        return ring

    def address_space(self) -> str:
        """Which addresses vring addresses are in: 'iova', 'gpa' or 'uaddr'."""
        if self.has_virtio(spec.VIRTIO_F_ACCESS_PLATFORM):
            return "iova"
        if self.has_protocol(_GPA_ADDRESSES):
            return "gpa"
        return "uaddr"

    def ring_limit(self) -> tuple[int, str] | None:
        """(bound, why) on ring indices, when the back-end told its queue count."""
        bound = self.ring_bound()
        return None if bound is None else (bound, self.ring_why())

    def ring_bound(self) -> int | None:
        """The bound of ring_limit alone (checked for most ring messages: no text built)."""
        if self.queue_num is None:
            return None
        return 2 * self.queue_num + 1 if self.device is _NET else self.queue_num

    def ring_why(self) -> str:
        """The reason of ring_limit, once a queue count is known."""
        if self.device is _NET:
            return f"{self.queue_num} queue pairs (GET_QUEUE_NUM)"
        return f"{self.queue_num} queues (GET_QUEUE_NUM)"


_NET, _GPA_ADDRESSES = DeviceType.NET, ProtocolFeature.GPA_ADDRESSES
"""As globals: an enum member read off its class is slow in Python 3.11."""
