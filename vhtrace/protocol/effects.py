"""What a message changed, as the conversation tells it (``Analysis.effects``).

Snapshots, triggers, stats and the mock back-end act on what a message did to the
connection: memory mapped or unmapped, an area passed with its fd, a ring started or
stopped, a channel opened. The conversation already works that out to keep its state;
it says so here, so that nobody works it out again from request names.

``fd`` in an effect is the position of the fd among the message's fds.
"""

from __future__ import annotations

from dataclasses import dataclass

from vhtrace.protocol.spec import Channel
from vhtrace.protocol.state import Region


@dataclass(frozen=True, slots=True)
class MemoryReplaced:
    """SET_MEM_TABLE: every region is new; region i was passed with fd i."""

    regions: tuple[Region, ...]


@dataclass(frozen=True, slots=True)
class RegionAdded:
    """ADD_MEM_REG: one region, passed with fd 0 (None: it came without an fd)."""

    region: Region
    fd: int | None = 0


@dataclass(frozen=True, slots=True)
class RegionRemoved:
    """REM_MEM_REG: the region with these addresses is gone."""

    region: Region


@dataclass(frozen=True, slots=True)
class AreaPassed:
    """A shared area other than guest RAM came with an fd: 'log' or 'inflight'."""

    area: str
    fd: int = 0


@dataclass(frozen=True, slots=True)
class RingStarted:
    """SET_VRING_KICK: the ring starts (the spec's rule; the back-end may poll it now)."""

    index: int


@dataclass(frozen=True, slots=True)
class RingEnabled:
    """SET_VRING_ENABLE: the ring is enabled (num 1) or disabled (num 0)."""

    index: int
    enabled: bool


@dataclass(frozen=True, slots=True)
class RingStopped:
    """The reply to GET_VRING_BASE: the ring stopped, at ``base``."""

    index: int
    base: int


@dataclass(frozen=True, slots=True)
class ChannelOpened:
    """A channel's fd was passed (SET_BACKEND_REQ_FD, GPU_SET_SOCKET, SET_DEVICE_STATE_FD)."""

    channel: Channel
    fd: int = 0


@dataclass(frozen=True, slots=True)
class DeviceReset:
    """RESET_OWNER or RESET_DEVICE: every ring is stopped and disabled."""


Effect = (
    MemoryReplaced
    | RegionAdded
    | RegionRemoved
    | AreaPassed
    | RingStarted
    | RingEnabled
    | RingStopped
    | ChannelOpened
    | DeviceReset
)
