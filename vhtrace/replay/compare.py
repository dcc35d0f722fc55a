"""Compare a live message with a recorded one, field by field, and find the closest recording.

A matcher in vcrpy's sense: ``compare(recorded, live, rules)`` returns every difference
with the field it is in, both values in words, and, for differences the rules excuse,
the reason. Feature words are compared bit by bit and named (``live sets RO (bit 5)``);
byte strings say where they first differ. :func:`closest` finds the recorded message
most like a live one, for the "closest recorded alternative" of a divergence report.

Payloads are decoded by the protocol model (the live message with the recorded
message's layout when the two disagree, so a postcopy reply reads as a memory table on
both sides). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from vhtrace.protocol import payloads, spec
from vhtrace.protocol.conversation import Analysis, Role, WireMessage
from vhtrace.protocol.payloads import PayloadContext
from vhtrace.protocol.spec import Channel, Side
from vhtrace.replay.rules import Rules

_FEATURE_LAYOUTS = frozenset({"virtio_features", "protocol_features"})
REQUEST_MISMATCH_WEIGHT = 100
"""A different request counts as this many field differences when ranking alternatives."""


@dataclass(frozen=True, slots=True)
class MessageView:
    """What comparison looks at in one message, recorded or live."""

    channel: Channel
    sender: Side
    request: int
    """The header's request id."""
    name: str
    """The request's name (for a reply: the request it answers)."""
    role: str
    flags: int
    size: int
    payload: bytes
    layout: str | None
    fields: dict[str, Any] | None
    fd_kinds: tuple[str, ...]
    context: PayloadContext
    summary: str = ""

    @property
    def label(self) -> str:
        """``GET_FEATURES reply``, ``ADD_MEM_REG postcopy-ack``, ``SET_OWNER``."""
        if self.role == Role.REPLY:
            return f"{self.name} reply"
        if self.role == Role.POSTCOPY_ACK:
            return f"{self.name} postcopy-ack"
        return self.name


def view(wire: WireMessage, analysis: Analysis, fds: Sequence[dict[str, Any]]) -> MessageView:
    """The comparable view of an analysed message and the metadata of its fds."""
    return MessageView(
        wire.channel,
        wire.sender,
        wire.request,
        analysis.name,
        str(analysis.role),
        wire.flags,
        wire.size,
        wire.payload,
        analysis.layout,
        analysis.fields,
        tuple(str(meta.get("kind", "other")) for meta in fds),
        analysis.context,
        analysis.summary(),
    )


@dataclass(frozen=True, slots=True)
class Difference:
    """One field whose live value is not the recorded one."""

    field: str
    """Where, as shown: ``features``, ``regions[1].userspace_addr``, ``fds``."""
    recorded: str
    live: str
    note: str = ""
    """What the difference means, when words help (bits set or cleared, first byte)."""
    ignored: str | None = None
    """Why it does not count (a default rule or the user's --ignore), or None."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "recorded": self.recorded, "live": self.live}
        if self.note:
            out["note"] = self.note
        if self.ignored:
            out["ignored"] = self.ignored
        return out


def show_value(value: Any, name: str = "") -> str:
    """A field value in words: small ints in decimal, big ones and addresses in hex."""
    if value is None:
        return "absent"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        if name in ("features", "flags") or value >= 4096 or value < 0:
            return f"0x{value:x}"
        return str(value)
    if isinstance(value, bytes | bytearray):
        text = bytes(value[:24]).hex()
        return text + ("..." if len(value) > 24 else "") + f" ({len(value)} bytes)"
    return str(value)


class Sides(NamedTuple):
    """What the two messages compared are called in notes."""

    first: str = "recorded"
    second: str = "live"
    first_whole: str = "the recording"
    """The first side as a subject of its own (``which the recording has not``)."""


REPLAY_SIDES = Sides()
DIFF_SIDES = Sides("old", "new", "the old trace")


def _bits_note(
    recorded: int, live: int, layout: str, ctx: PayloadContext, sides: Sides = REPLAY_SIDES
) -> str:
    def names(value: int) -> str:
        words = []
        for bit in spec.bits_of(value):
            if layout == "protocol_features":
                name = spec.protocol_feature_names(1 << bit)[0]
            else:
                name = spec.virtio_feature_name(bit, ctx.device)
            words.append(f"{name} (bit {bit})")
        return ", ".join(words)

    parts = []
    if live & ~recorded:
        parts.append(
            f"{sides.second} sets {names(live & ~recorded)}, which {sides.first_whole} has not"
        )
        if not recorded & ~live:
            return parts[0]
    if recorded & ~live:
        parts.append(f"{sides.second} lacks {names(recorded & ~live)}")
    return "; ".join(parts)


def _bytes_note(recorded: bytes, live: bytes, sides: Sides = REPLAY_SIDES) -> str:
    first, second = sides.first, sides.second
    for offset, (a, b) in enumerate(zip(recorded, live, strict=False)):
        if a != b:
            return f"first difference at byte {offset}: {first} 0x{a:02x}, {second} 0x{b:02x}"
    return f"{first} {len(recorded)} bytes, {second} {len(live)}"


_NAMED_CONFIG = "device_config"
"""The config layout's named device fields: derived from its region bytes."""


def _named_note(recorded: dict[str, Any], live: dict[str, Any], path: str) -> str:
    """For a config region: the device fields that differ, by name."""
    if path != "region":
        return ""
    before, after = recorded.get(_NAMED_CONFIG) or {}, live.get(_NAMED_CONFIG) or {}
    changed = [
        f"{name} {show_value(before.get(name), name)} -> {show_value(after.get(name), name)}"
        for name in list(before) + [n for n in after if n not in before]
        if before.get(name) != after.get(name)
    ]
    return f" ({', '.join(changed)})" if changed else ""


def _walk(recorded: Any, live: Any, path: str, shown: str) -> Iterator[tuple[str, str, Any, Any]]:
    """(path, shown path, recorded, live) of every leaf that differs."""
    if isinstance(recorded, dict) and isinstance(live, dict):
        for key in list(recorded) + [k for k in live if k not in recorded]:
            sub = f"{path}.{key}" if path else key
            yield from _walk(
                recorded.get(key), live.get(key), sub, f"{shown}.{key}" if shown else key
            )
    elif isinstance(recorded, list) and isinstance(live, list):
        if len(recorded) != len(live):
            yield path, f"{shown} (count)", len(recorded), len(live)
        for i, (a, b) in enumerate(zip(recorded, live, strict=False)):
            yield from _walk(a, b, path, f"{shown}[{i}]")
    elif recorded != live:
        yield path, shown, recorded, live


def compare(
    recorded: MessageView, live: MessageView, rules: Rules, sides: Sides = REPLAY_SIDES
) -> list[Difference]:
    """Every difference between a recorded message and a live one (ignored ones marked);
    ``sides`` names the two in the notes (``old`` and ``new`` for two traces)."""
    out: list[Difference] = []

    def add(path: str, recorded_text: str, live_text: str, note: str = "", shown: str = "") -> None:
        reason = rules.ignored(recorded.name, recorded.role, recorded.sender, path)
        out.append(Difference(shown or path, recorded_text, live_text, note, reason))

    if (recorded.request, recorded.channel) != (live.request, live.channel) or (
        recorded.role != live.role
    ):
        add("request", recorded.label, live.label)
        return out
    if recorded.flags != live.flags:
        names = "|".join(spec.flag_names(live.flags))
        add("flags", f"0x{recorded.flags:x}", f"0x{live.flags:x}", f"{sides.second} flags {names}")
    if recorded.size != live.size:
        add("size", str(recorded.size), str(live.size))
    live_fields = live.fields
    if recorded.layout is not None and live.layout != recorded.layout:
        live_fields = payloads.decode(recorded.layout, live.payload, recorded.context).fields
    if recorded.fields is not None and live_fields is not None:
        mask = rules.mask.for_layout(recorded.layout)
        for path, shown, a, b in _walk(recorded.fields, live_fields, "", ""):
            if path.partition(".")[0] == _NAMED_CONFIG:
                continue  # a view of region: compared there, named in its note
            note = ""
            if recorded.layout in _FEATURE_LAYOUTS and isinstance(a, int) and isinstance(b, int):
                if (a & ~mask) == (b & ~mask):
                    continue
                note = _bits_note(a & ~mask, b & ~mask, recorded.layout, recorded.context, sides)
            elif isinstance(a, bytes) and isinstance(b, bytes):
                note = _bytes_note(a, b, sides) + _named_note(recorded.fields, live_fields, path)
            add(path, show_value(a, path), show_value(b, path), note, shown)
    elif recorded.payload != live.payload:
        add(
            "payload",
            show_value(recorded.payload),
            show_value(live.payload),
            _bytes_note(recorded.payload, live.payload, sides),
        )
    if recorded.fd_kinds != live.fd_kinds:
        add("fds", _kinds(recorded.fd_kinds), _kinds(live.fd_kinds))
    return out


def _kinds(kinds: tuple[str, ...]) -> str:
    return "[" + ", ".join(kinds) + "]" if kinds else "none"


def counted(differences: Sequence[Difference]) -> list[Difference]:
    """The differences that count (not excused by a rule)."""
    return [d for d in differences if d.ignored is None]


def score(differences: Sequence[Difference]) -> int:
    """How far apart two messages are: counted differences, a different request weighs most."""
    return sum(REQUEST_MISMATCH_WEIGHT if d.field == "request" else 1 for d in counted(differences))


@dataclass(frozen=True, slots=True)
class Alternative:
    """The recorded message most like a live one."""

    seq: int
    label: str
    differences: tuple[Difference, ...]
    """Its counted differences from the live message (empty: identical)."""

    def describe(self) -> str:
        if not self.differences:
            return f"#{self.seq} {self.label}, identical to the live message"
        fields = ", ".join(d.field for d in self.differences)
        return f"#{self.seq} {self.label}, differs in: {fields}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "label": self.label,
            "differences": [d.to_dict() for d in self.differences],
        }


def closest(
    live: MessageView,
    candidates: Sequence[tuple[int, MessageView]],
    rules: Rules,
    *,
    near: int = 0,
) -> Alternative | None:
    """The candidate (seq, recorded view) most like ``live``: fewest counted differences,
    then the one nearest to message ``near``. None if no candidate has the same request."""
    best: tuple[int, int, int, MessageView, list[Difference]] | None = None
    for seq, candidate in candidates:
        if (candidate.request, candidate.role, candidate.channel) != (
            live.request,
            live.role,
            live.channel,
        ):
            continue
        differences = counted(compare(candidate, live, rules))
        key = (score(differences), abs(seq - near))
        if best is None or key < (best[0], best[1]):
            best = (key[0], key[1], seq, candidate, differences)
    if best is None:
        return None
    return Alternative(best[2], best[3].label, tuple(best[4]))
