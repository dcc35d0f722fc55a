"""Wireshark's exported-PDU header (LINKTYPE_WIRESHARK_UPPER_PDU, 252).

A packet of this link type is a list of TLVs (2-byte big-endian tag, 2-byte
big-endian length, value), ended by tag 0 length 0, then the PDU. Tag numbers
are Wireshark's (``wiretap/exported_pdu_tlvs.h``; older releases had them in
``epan/exported_pdu.h``). We write two:

* 12, EXP_PDU_TAG_DISSECTOR_NAME: the dissector to call ("vhost-user", the
  name our Lua ``Proto`` registers), NUL-padded to 32 bits as Wireshark's own
  exporter does (readers ignore trailing NULs);
* 35, EXP_PDU_TAG_P2P_DIRECTION: a 4-byte big-endian P2P_DIR_SENT (0) or
  P2P_DIR_RECV (1), which sets the packet's direction for every dissector.

Tag 36 (EXP_PDU_TAG_COL_INFO_TEXT) would fill the Info column, but tshark
4.0 (Debian 12) does not know it and reports an unknown tag, so it is not
written: the Lua dissector fills the Info column itself.
"""

from __future__ import annotations

import struct

LINKTYPE_WIRESHARK_UPPER_PDU = 252
LINKTYPE_USER0 = 147

EXP_PDU_TAG_END_OF_OPT = 0
EXP_PDU_TAG_DISSECTOR_NAME = 12
EXP_PDU_TAG_P2P_DIRECTION = 35

P2P_DIR_SENT = 0
P2P_DIR_RECV = 1

DISSECTOR_NAME = "vhost-user"


def tlv(tag: int, value: bytes) -> bytes:
    return struct.pack(">HH", tag, len(value)) + value


def header(dissector: str = DISSECTOR_NAME, direction: int | None = None) -> bytes:
    """The TLVs that precede a PDU: which dissector, which direction, end."""
    name = dissector.encode()
    name += b"\0" * (-len(name) % 4)
    parts = [tlv(EXP_PDU_TAG_DISSECTOR_NAME, name)]
    if direction is not None:
        parts.append(tlv(EXP_PDU_TAG_P2P_DIRECTION, struct.pack(">i", direction)))
    parts.append(tlv(EXP_PDU_TAG_END_OF_OPT, b""))
    return b"".join(parts)
