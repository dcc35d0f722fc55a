"""Dissecting vhost-user with other people's tools: scapy and Wireshark.

* :mod:`.scapy_layers`: scapy packet classes for the header and every payload
  layout (re-exported, with :func:`read_trace`, as :mod:`vhtrace.scapy`);
* :mod:`.scapy_trace`: a trace as a scapy ``PacketList``;
* :mod:`.meta`: what a message knows beyond its bytes, and the pcapng comment
  lines that carry it;
* :mod:`.pcapng` and :mod:`.exported_pdu`: a small pcapng writer and the
  Wireshark exported-PDU header;
* :mod:`.export`: a trace to a pcapng file (``vhtrace export``);
* :mod:`.lua`: the Wireshark Lua dissector ``vhost-user.lua``, whose protocol
  tables are generated from :mod:`vhtrace.protocol.spec`.

Everything the protocol says (ids, names, layouts, flags) comes from
:mod:`vhtrace.protocol`; this package only decides how it looks.
"""
