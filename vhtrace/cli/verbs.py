"""The verbs of ``vhtrace``: where each lives and what it does, in one table.

``vhtrace show`` should not pay for importing replay, scapy and the recorder: the
command line imports only the module of the verb it runs (all of them for ``--help``).
"""

from __future__ import annotations

VERBS: dict[str, tuple[str, str]] = {
    "record": ("vhtrace.cli.record", "record a live session as a transparent proxy"),
    "show": ("vhtrace.cli.show", "print the messages of a trace"),
    "stats": ("vhtrace.cli.stats", "summarise a trace"),
    "export": ("vhtrace.cli.export",
               "write a trace as pcapng for Wireshark, or print the Lua dissector"),
    "replay": ("vhtrace.cli.replay",
               "replay a trace against a live back-end (or serve it to a live front-end)"),
    "diff": ("vhtrace.cli.diff", "what two traces say differently (a regression between versions)"),
    "report": ("vhtrace.cli.report",
               "draw a trace as a message-sequence chart (one HTML file, or an SVG)"),
    "rings": ("vhtrace.cli.rings", "show the vrings at each shared-memory snapshot"),
    "memory": ("vhtrace.cli.memory", "dump guest memory from a shared-memory snapshot"),
    "fuzz": ("vhtrace.cli.fuzz",
             "mutate a trace's front-end side against a back-end it starts; crashes, hangs"),
}  # fmt: skip
"""verb -> (module with add_parser/run, one-line help)."""


def help_of(verb: str) -> str:
    return VERBS[verb][1]
