"""Trace format constants: versions, record tags, what each version needs.

A trace is a sequence of independent zstd frames; decompressed and joined they
are a stream of msgpack objects: a header map, then records, each an array
whose first element is a one-letter tag. See docs/trace-format.md.
"""

from __future__ import annotations

FORMAT_NAME = "vhtrace"
FORMAT_VERSION = 2
"""Version written by this vhtrace. Bumped whenever old readers would lose data."""

READABLE_VERSIONS = frozenset({1, 2})
"""Versions this vhtrace reads."""

NEEDS_TOOL_VERSION = {1: "0.1.0", 2: "0.2.0"}
"""The first vhtrace release that reads each format version (for the error text)."""

MAGIC = b"\x28\xb5\x2f\xfd"
"""A trace starts with a zstd frame."""

TAG_MESSAGE = "m"
TAG_EVENT = "c"
TAG_FINDING = "f"
TAG_STREAM = "s"
TAG_END = "e"
TAG_PAGE = "p"
"""Version 2: one page of guest memory, named by its content hash."""
TAG_EXTENT = "x"
"""Version 2: the page map of one extent of a snapshot."""
TAG_SNAPSHOT = "i"
"""Version 2: a snapshot ("image"): written after its pages and extents, it commits them."""

PAGE_RAW = 0
"""Page codec: the 4096 bytes as they were (the zstd frame compresses them)."""

MESSAGE_OVERSIZED = 0x1
"""The size field was above the protocol maximum: only a prefix of the payload is kept."""
MESSAGE_INCOMPLETE = 0x2
"""The stream ended inside this message: raw holds what arrived."""
MESSAGE_DROPPED = 0x4
"""Not forwarded (--strict dropped the connection on it)."""

FLUSH_INTERVAL = 0.1
"""Seconds between frame flushes at most: what a killed writer can lose."""
FRAME_BYTES = 1 << 20
"""Uncompressed bytes after which a frame is flushed regardless of time."""

END_FRONTEND_CLOSED = "frontend closed"
END_BACKEND_CLOSED = "backend closed"
END_RECORDER_STOPPED = "the recorder stopped"
"""session-end reasons the recorder writes (``info["reason"]``); others start with
``--strict:`` or ``could not reach``."""


def closed_by(side: str) -> str:
    """The session-end reason when ``side`` ('frontend' or 'backend') closed its socket."""
    return f"{side} closed"
