"""What one fuzz iteration sends: a :class:`Case`, made from a trace's front-end side.

A case is a list of sessions (one connection each), each a list of :class:`Message`:
the bytes to send (header and payload, exactly) and the fds to pass, described by kind
as a trace describes them, so the replay's :class:`~vhtrace.replay.fds.FdFactory`
re-creates them (memfds filled from the trace's snapshots, eventfds, the back-end
channel's socketpair). A mutated message keeps the recorded one it came from
(``origin``), which is what memory contents are taken from and what minimization
reverts to. :class:`Template` also holds what the mutators need to aim well (the
regions handed out, the queue count). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from vhtrace.fuzz.rings import RingAttack, RingSetup
from vhtrace.protocol import payloads, spec
from vhtrace.protocol.conversation import Role
from vhtrace.protocol.framing import pack_header, unpack_header
from vhtrace.protocol.payloads import DEFAULT_CONTEXT, PayloadContext
from vhtrace.protocol.spec import HEADER_SIZE, Channel, Side
from vhtrace.replay.compare import MessageView
from vhtrace.replay.plan import SessionPlan, Step


@dataclass(frozen=True)
class Message:
    """One message of ours to send."""

    raw: bytes
    """Header and payload as sent (the header's size need not match: that is a mutation)."""
    fds: tuple[dict[str, Any], ...] = ()
    """The fds to pass, by recorded kind (kind, size, name, dev/ino)."""
    layout: str | None = None
    """The payload layout of the request (None: unknown request)."""
    context: PayloadContext = DEFAULT_CONTEXT
    origin: int | None = None
    """The recorded message number it comes from (None: made up by a mutator)."""
    origin_fields: dict[str, Any] | None = field(default=None, compare=False)
    """The recorded message's decoded payload: where the memory of its fds comes from."""
    original: Message | None = field(default=None, compare=False, repr=False)
    """The message before mutation (None: not mutated)."""
    mutation: str = ""
    """What was done to it, in words (empty: as recorded)."""
    channel: Channel = Channel.MAIN
    after: int | None = None
    """Served (front-end direction): the recorded front-end message an inserted message
    follows (None: where the message before it in the case goes)."""

    @property
    def request(self) -> int:
        return unpack_header(self.raw)[0]

    @property
    def flags(self) -> int:
        return unpack_header(self.raw)[1]

    @property
    def size(self) -> int:
        return unpack_header(self.raw)[2]

    @property
    def payload(self) -> bytes:
        return self.raw[HEADER_SIZE:]

    @property
    def cut(self) -> bool:
        """Its bytes stop short of what its header says: the connection ends inside it."""
        return len(self.raw) < HEADER_SIZE or len(self.raw) < HEADER_SIZE + self.size

    @property
    def name(self) -> str:
        return spec.request_name(self.channel, self.request)

    def fields(self) -> dict[str, Any] | None:
        """The payload decoded by the request's layout, or None if it does not decode."""
        if self.layout is None:
            return None
        return payloads.decode(self.layout, self.payload, self.context).fields

    def with_raw(self, raw: bytes, mutation: str) -> Message:
        return replace(self, raw=raw, original=self.original or self, mutation=mutation)

    def with_fds(self, fds: tuple[dict[str, Any], ...], mutation: str) -> Message:
        return replace(self, fds=fds, original=self.original or self, mutation=mutation)

    def describe(self) -> str:
        text = self.name
        if self.origin is not None:
            text = f"#{self.origin} {text}"
        return f"{text} ({self.mutation})" if self.mutation else text


def build(request: int, flags: int, payload: bytes) -> bytes:
    """Header and payload, the header's size being the payload's."""
    return pack_header(request, flags, len(payload)) + payload


@dataclass(frozen=True)
class Case:
    """Sessions of messages: what one iteration sends, connection by connection."""

    sessions: tuple[tuple[Message, ...], ...]
    mutations: tuple[str, ...] = ()
    """What was done to the template, in order, in words."""
    attacks: tuple[RingAttack, ...] = ()
    """Malformed descriptor chains put on rings once they run (``rings``)."""

    def __post_init__(self) -> None:
        # A cut message ends its connection: whatever a later mutation or the minimizer
        # put after it would be read as the rest of it, and the peer waiting for those
        # bytes is right, not hung.
        sessions = tuple(_up_to_the_cut(session) for session in self.sessions)
        if sessions != self.sessions:
            object.__setattr__(self, "sessions", sessions)

    @property
    def messages(self) -> Iterator[Message]:
        for session in self.sessions:
            yield from session

    def count(self) -> int:
        return sum(len(s) for s in self.sessions)


def _up_to_the_cut(session: tuple[Message, ...]) -> tuple[Message, ...]:
    for index, message in enumerate(session):
        if message.cut:
            return session[: index + 1]
    return session


@dataclass(frozen=True)
class Region:
    """A memory region the template hands out, as the front-end described it."""

    guest_phys_addr: int
    memory_size: int
    userspace_addr: int
    mmap_offset: int


@dataclass(frozen=True)
class Template:
    """The recorded front-end side of a trace, and what mutators aim with."""

    case: Case
    device: spec.DeviceType | None
    regions: tuple[Region, ...] = ()
    queue_num: int = 1
    negotiated_protocol: int = 0
    """The protocol features the front-end set (SET_PROTOCOL_FEATURES)."""
    rings: tuple[RingSetup, ...] = ()
    """Every ring setup of the trace (ring attacks aim at them)."""
    requests: tuple[tuple[int, str], ...] = ()
    """Served (front-end direction): the recorded front-end's messages (number, name),
    where inserted back-end-channel requests may go."""


def template(plans: list[SessionPlan]) -> Template:
    """The front-end's messages of each session of a front-end replay plan.

    Only the front-end's requests and postcopy acks on the main channel are kept: the
    replies we owe on the back-end channel are the fuzzer's to give (see driver)."""
    sessions: list[tuple[Message, ...]] = []
    regions: list[Region] = []
    queue_num, protocol = 1, 0
    device = None
    rings: list[RingSetup] = []
    for plan in plans:
        messages = []
        nums: dict[int, int] = {}
        addrs: dict[int, tuple[int, int]] = {}
        kicks: dict[int, int] = {}
        for step in plan.steps:
            v = step.view
            device = device or v.context.device
            if not step.ours:
                if v.name == "GET_QUEUE_NUM" and v.fields:
                    queue_num = max(1, int(v.fields.get("value", 1)))
                continue
            if v.channel is not Channel.MAIN or v.role == Role.REPLY:
                continue
            if v.name == "SET_PROTOCOL_FEATURES" and v.fields:
                protocol = int(v.fields.get("features", 0))
            if v.fields:
                _track_ring(v.name, v.fields, step.seq, nums, addrs, kicks, rings)
            if v.fields and v.name in ("ADD_MEM_REG", "SET_MEM_TABLE"):
                for r in v.fields.get("regions", [v.fields]):
                    regions.append(Region(*(int(r[k]) for k in payloads.REGION_FIELDS)))
            messages.append(
                Message(
                    step.raw,
                    tuple(step.fds),
                    v.layout,
                    v.context,
                    step.seq,
                    v.fields,
                    channel=v.channel,
                )
            )
        if messages:
            sessions.append(tuple(messages))
    return Template(
        Case(tuple(sessions)), device, tuple(regions), queue_num, protocol, tuple(rings)
    )


def _track_ring(
    name: str,
    fields: dict[str, Any],
    seq: int,
    nums: dict[int, int],
    addrs: dict[int, tuple[int, int]],
    kicks: dict[int, int],
    rings: list[RingSetup],
) -> None:
    """Follow one ring's setup messages; a setup is complete once the ring runs."""
    index = int(fields.get("index", 0))
    if name == "SET_VRING_NUM":
        nums[index] = int(fields["num"])
    elif name == "SET_VRING_ADDR":
        addrs[index] = (int(fields["desc_user_addr"]), int(fields["avail_user_addr"]))
    elif name == "SET_VRING_KICK" and not fields.get("nofd"):
        kicks[index] = seq
    if index not in nums or index not in addrs or index not in kicks:
        return
    runs = name == "SET_VRING_ENABLE" and fields.get("num") == 1
    if runs or (name == "SET_VRING_KICK" and seq == kicks[index]):
        setup = RingSetup(index, nums[index], *addrs[index], kicks[index], seq)
        if runs and rings and rings[-1].kick_seq == setup.kick_seq:
            rings[-1] = setup  # the same setup: it runs from the enable on, not the kick
        else:
            rings.append(setup)


def step_of(message: Message, session: int, index: int) -> Step:
    """The replay step that sends ``message`` (for the replay's session loop)."""
    request, flags, size = unpack_header(message.raw)
    view = MessageView(
        message.channel,
        Side.FRONTEND,
        request,
        message.name,
        str(Role.REQUEST),
        flags,
        size,
        message.payload,
        message.layout,
        message.origin_fields,
        tuple(str(m.get("kind", "other")) for m in message.fds),
        message.context,
    )
    seq = message.origin if message.origin is not None else 0
    return Step(seq, session, True, message.raw, message.fds, 0.0, None, frozenset(), view)


def describe_case(case: Case) -> list[str]:
    """One line per message, mutated ones marked: for reports."""
    lines = []
    for number, session in enumerate(case.sessions, 1):
        lines.append(f"session {number}:")
        for message in session:
            mark = "*" if message.mutation else " "
            lines.append(f"  {mark} {message.describe()}")
    return lines
