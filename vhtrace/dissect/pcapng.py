"""A small pcapng writer: one section, one interface, enhanced packet blocks.

Why our own rather than scapy's: exported packets need nanosecond timestamps
(``if_tsresol`` 9, so a trace's ``wall_ns`` survives exactly), several comments
per packet, direction flags and a real original length for messages the
recorder kept only a prefix of; and ``vhtrace export`` should not need scapy.
The format is https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-03.html;
blocks are written little-endian.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import BinaryIO

BLOCK_SHB = 0x0A0D0D0A
BLOCK_IDB = 0x00000001
BLOCK_EPB = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D

OPT_ENDOFOPT = 0
OPT_COMMENT = 1
SHB_USERAPPL = 4
IF_NAME = 2
IF_DESCRIPTION = 3
IF_TSRESOL = 9
EPB_FLAGS = 2

INBOUND = 1
OUTBOUND = 2
"""epb_flags bits 0-1: the packet's direction."""

MAX_OPTION = 0xFFFF


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def option(code: int, value: bytes) -> bytes:
    """One option TLV, its value padded to 32 bits."""
    return struct.pack("<HH", code, len(value)) + _pad4(value)


def text_option(code: int, text: str) -> bytes:
    """A UTF-8 string option, cut (on a character boundary) to the 64 KiB an option holds."""
    data = text.encode()
    if len(data) > MAX_OPTION:
        data = data[:MAX_OPTION].decode(errors="ignore").encode()
    return option(code, data)


def options(items: Iterable[bytes]) -> bytes:
    """Options followed by opt_endofopt (nothing at all when there are none)."""
    body = b"".join(items)
    return body + option(OPT_ENDOFOPT, b"") if body else b""


def block(block_type: int, body: bytes) -> bytes:
    """A block: type, total length, body (already 32-bit aligned), total length."""
    total = 12 + len(body)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


class PcapNgWriter:
    """Writes a section with a single interface to a binary stream."""

    def __init__(
        self,
        stream: BinaryIO,
        linktype: int,
        *,
        application: str,
        comments: Iterable[str] = (),
        if_name: str = "vhost-user",
        if_description: str | None = None,
    ) -> None:
        self.stream = stream
        self.packets = 0
        shb_options = [text_option(OPT_COMMENT, c) for c in comments]
        shb_options.append(text_option(SHB_USERAPPL, application))
        stream.write(
            block(
                BLOCK_SHB, struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + options(shb_options)
            )
        )
        idb_options = [text_option(IF_NAME, if_name)]
        if if_description:
            idb_options.append(text_option(IF_DESCRIPTION, if_description))
        idb_options.append(option(IF_TSRESOL, bytes([9])))  # nanoseconds
        stream.write(block(BLOCK_IDB, struct.pack("<HHI", linktype, 0, 0) + options(idb_options)))

    def packet(
        self,
        data: bytes,
        timestamp_ns: int,
        *,
        original_length: int | None = None,
        comments: Iterable[str] = (),
        direction: int | None = None,
    ) -> None:
        """One enhanced packet block; ``original_length`` when only a prefix was kept."""
        head = struct.pack(
            "<IIIII",
            0,
            timestamp_ns >> 32 & 0xFFFFFFFF,
            timestamp_ns & 0xFFFFFFFF,
            len(data),
            max(original_length or 0, len(data)),
        )
        opts = [text_option(OPT_COMMENT, c) for c in comments]
        if direction is not None:
            opts.append(option(EPB_FLAGS, struct.pack("<I", direction & 0x3)))
        self.stream.write(block(BLOCK_EPB, head + _pad4(data) + options(opts)))
        self.packets += 1
