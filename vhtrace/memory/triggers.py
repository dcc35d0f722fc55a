"""When snapshots are taken: the ``--snapshot`` language and its matching (pure).

    --snapshot TRIGGER[,TRIGGER...]

==================  =====================================================================
``start``           a ring starts: SET_VRING_KICK (when the ring is enabled, or rings need
                    no enabling), SET_VRING_ENABLE 1 (when its kick fd came already)
``stop``            a ring stopped: the back-end's GET_VRING_BASE reply
``before:NAME``     before the back-end sees request NAME: the relay holds that message
                    until the snapshot is written (bounded by --snapshot-hold)
``after:NAME``      after request NAME took effect: at its reply if one is owed, else as
                    soon as the recorder sees the request
``every:SECONDS``   periodically, every open session
``signal``          on SIGUSR1, every open session
==================  =====================================================================

The default is ``start,stop``; neither ever holds the relay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vhtrace.protocol import spec
from vhtrace.protocol.conversation import Analysis, Role
from vhtrace.protocol.effects import RingEnabled, RingStarted, RingStopped
from vhtrace.protocol.spec import Channel, Side
from vhtrace.protocol.state import ConversationState

DEFAULT = "start,stop"
RequestKey = tuple[str, int]
"""(channel value, request id)."""


class TriggerError(ValueError):
    """A --snapshot value that does not parse (the text says why)."""


@dataclass(frozen=True)
class Triggers:
    start: bool = False
    stop: bool = False
    before: frozenset[RequestKey] = frozenset()
    after: frozenset[RequestKey] = frozenset()
    every: float | None = None
    signal: bool = False
    names: dict[RequestKey, str] = field(default_factory=dict, compare=False)

    def __str__(self) -> str:
        parts = [name for name in ("start", "stop") if getattr(self, name)]
        parts += [f"before:{self.names[k]}" for k in sorted(self.before, key=_main_first)]
        parts += [f"after:{self.names[k]}" for k in sorted(self.after, key=_main_first)]
        if self.every is not None:
            parts.append(f"every:{self.every:g}")
        if self.signal:
            parts.append("signal")
        return ",".join(parts) or "none"

    @property
    def any(self) -> bool:
        return bool(
            self.start or self.stop or self.before or self.after or self.every or self.signal
        )


def _main_first(key: RequestKey) -> tuple[bool, int]:
    return key[0] != Channel.MAIN.value, key[1]


def _request(term: str, what: str) -> tuple[RequestKey, str]:
    found = spec.lookup_request(term)
    if found is None and term.isdigit():
        found = (Channel.MAIN, int(term))
    if found is None:
        raise TriggerError(f"{what}: no request named {term!r}")
    channel, request = found
    name = spec.request_name(channel, request)
    return (channel.value, request), ("BACKEND_" + name if channel is Channel.BACKEND else name)


def parse(text: str) -> Triggers:
    """Parse a --snapshot value (TriggerError with the reason)."""
    values: dict[str, Any] = {"before": set(), "after": set(), "names": {}}
    for term in (t.strip() for t in text.split(",")):
        if not term or term == "none":
            continue
        word, _, arg = term.partition(":")
        word = word.lower()
        if word in ("start", "stop") and not arg:
            values[word] = True
        elif word in ("signal", "sigusr1") and not arg:
            values["signal"] = True
        elif word in ("before", "after") and arg:
            key, name = _request(arg, term)
            values[word].add(key)
            values["names"][key] = name
        elif word == "every" and arg:
            try:
                seconds = float(arg.removesuffix("s"))
            except ValueError:
                raise TriggerError(f"{term}: expected every:SECONDS") from None
            if not seconds > 0:
                raise TriggerError(f"{term}: the interval must be positive")
            values["every"] = seconds
        else:
            raise TriggerError(
                f"{term}: expected start, stop, before:NAME, after:NAME, every:SECONDS or signal"
            )
    return Triggers(
        start=values.get("start", False),
        stop=values.get("stop", False),
        before=frozenset(values["before"]),
        after=frozenset(values["after"]),
        every=values.get("every"),
        signal=values.get("signal", False),
        names=values["names"],
    )


def before(triggers: Triggers, channel: str, sender: str, request: int, flags: int) -> str | None:
    """The before:NAME trigger a message fires, judged from its header alone (relay side too)."""
    if not triggers.before or flags & spec.FLAG_REPLY:
        return None
    key = (channel, request)
    if key not in triggers.before:
        return None
    requester = Side.FRONTEND.value if channel == Channel.MAIN.value else Side.BACKEND.value
    if sender != requester:
        return None
    return f"before:{triggers.names[key]}"


def after(
    triggers: Triggers, analysis: Analysis, request: int, state: ConversationState, reply_owed: bool
) -> list[tuple[str, int | None]]:
    """(trigger, ring index) of what fires once a message has been analysed."""
    fired: list[tuple[str, int | None]] = []
    role = analysis.role
    for effect in analysis.effects if triggers.start or triggers.stop else ():
        if triggers.start and isinstance(effect, RingStarted | RingEnabled):
            if _goes_live(effect, state):
                fired.append(("start", effect.index))
        elif triggers.stop and isinstance(effect, RingStopped):
            fired.append(("stop", effect.index))
    if triggers.after:
        key = (analysis.channel.value, request)
        if key in triggers.after and (
            role is Role.REPLY or (role is Role.REQUEST and not reply_owed)
        ):
            fired.append((f"after:{triggers.names[key]}", None))
    return fired


def _goes_live(effect: RingStarted | RingEnabled, state: ConversationState) -> bool:
    """Whether the ring of ``effect`` is now live: started (kicked) and, where
    VHOST_USER_F_PROTOCOL_FEATURES makes rings start disabled, enabled too."""
    if isinstance(effect, RingStarted):
        ring = state.rings.get(effect.index)
        needs_enable = state.has_virtio(spec.VIRTIO_F_PROTOCOL_FEATURES)
        return ring is not None and (not needs_enable or ring.enabled is True)
    ring = state.rings.get(effect.index)
    return effect.enabled and ring is not None and ring.started
