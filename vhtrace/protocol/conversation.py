"""Per-connection protocol state: the messages of both directions in, findings out.

Theory of operation
-------------------
A :class:`Conversation` is fed every message of one connection in the order
they crossed the wire, both directions and both channels (the main socket and
the back-end channel), through :meth:`Conversation.analyse`. It is pure: no
sockets, no clocks. For each message it answers

* what the message is (:class:`Role`): a request, a reply, or the front-end's
  postcopy ack;
* which request a reply answers (its message number) and so by which layout
  its payload reads: a reply's payload often differs from its request's
  (GET_INFLIGHT_FD, POSTCOPY_ADVISE with size 0 plus an fd, the postcopy
  memory table with the back-end's own addresses);
* the decoded fields and a one-line summary;
* findings: everything that breaks the spec or looks like a bug.

Who owes a reply is a queue per channel (:class:`Pending`). A request owes one
when its reply is intrinsic (GET_FEATURES...), when NEED_REPLY is set and
REPLY_ACK was negotiated, or, after POSTCOPY_LISTEN, for SET_MEM_TABLE and
ADD_MEM_REG: the back-end replies with its mapping addresses and the front-end
then sends an ack (same request id, a u64 0), which this code recognises as
such rather than as a new request. Replies are matched to the oldest waiting
request with the same id; a reply for another id is reported and matched to
the request it names if one waits. At :meth:`Conversation.close`, every reply
still owed becomes a finding.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from vhtrace.protocol import checks, payloads, spec
from vhtrace.protocol.checks import error, warning
from vhtrace.protocol.effects import (
    AreaPassed,
    ChannelOpened,
    DeviceReset,
    Effect,
    MemoryReplaced,
    RegionAdded,
    RegionRemoved,
    RingEnabled,
    RingStarted,
    RingStopped,
)
from vhtrace.protocol.findings import Finding
from vhtrace.protocol.payloads import Decoded, PayloadContext
from vhtrace.protocol.spec import Channel, Fds, ProtocolFeature, Reply, RequestSpec, Side
from vhtrace.protocol.state import ConversationState, PostcopyPhase, Region


class Role(enum.StrEnum):
    REQUEST = "request"
    REPLY = "reply"
    POSTCOPY_ACK = "postcopy-ack"
    """The front-end's u64 0 after the back-end's postcopy memory-table reply."""


class WireMessage(NamedTuple):
    """One message as seen on the wire, the input of the analysis."""

    seq: int
    channel: Channel
    sender: Side
    request: int
    """The header's request id; CUT_HEADER when the stream ended inside the header."""
    flags: int
    size: int
    payload: bytes
    fd_count: int = 0
    complete: bool = True
    """False when the payload was not kept whole (oversized, or the stream ended)."""


CUT_HEADER = -1
"""WireMessage.request of a message whose 12-byte header never arrived whole."""


@dataclass(slots=True)
class Pending:
    """A reply that is owed."""

    seq: int
    row: RequestSpec
    layout: str
    fds: Fds
    kind: str
    """'intrinsic', 'ack' (NEED_REPLY) or 'postcopy'."""
    request_fields: dict[str, Any] | None = None
    request_size: int = 0


@dataclass(slots=True)
class Analysis:
    """What one message is and says."""

    seq: int
    channel: Channel
    sender: Side
    role: Role
    name: str
    """Request name (a reply carries the name of the request it answers)."""
    layout: str | None
    decoded: Decoded | None
    context: PayloadContext
    answers: int | None = None
    """For a reply: the number of the request it answers."""
    findings: list[Finding] = field(default_factory=list)
    effects: tuple[Effect, ...] = ()
    """What the message changed (memory, rings, channels): see :mod:`.effects`."""

    @property
    def fields(self) -> dict[str, Any] | None:
        return self.decoded.fields if self.decoded is not None else None

    def summary(self) -> str:
        if self.decoded is None:
            return ""
        return self.decoded.summary(self.context)

    def details(self) -> list[str]:
        if self.decoded is None:
            return []
        return self.decoded.details(self.context)


class Conversation:
    """The protocol state of one connection, fed by the messages of both directions."""

    def __init__(self, device: spec.DeviceType | None = None, frontend: str | None = None) -> None:
        """``device`` names virtio feature bits; ``frontend`` is the session context's
        front-end (``spec.FRONTEND_QEMU`` or None: unknown, see vhtrace.protocol.peers)."""
        self.state = ConversationState(device=device, frontend=frontend)
        self.pending: dict[Channel, deque[Pending]] = {
            Channel.MAIN: deque(),
            Channel.BACKEND: deque(),
        }
        self.last_postcopy_reply: int | None = None

    # -- entry points --------------------------------------------------------

    def analyse(self, msg: WireMessage) -> Analysis:
        """Classify, decode and check one message, and update the state."""
        if msg.request == CUT_HEADER:
            return self._cut_header(msg)
        if msg.sender is _REQUESTER[msg.channel]:
            state = self.state
            if (
                state.postcopy_ack_due is not None or state.postcopy is _LISTENING
            ) and self._is_postcopy_ack(msg):
                return self._postcopy_ack(msg)
            return self._request(msg)
        return self._reply(msg)

    def close(self, why: str = "the connection closed") -> list[Finding]:
        """The connection ended (or the trace did): every reply still owed is a finding."""
        findings = []
        for queue in self.pending.values():
            for pending in queue:
                owed = "NEED_REPLY set, no reply" if pending.kind == "ack" else "no reply"
                findings.append(
                    Finding(pending.seq, pending.row.name, "no-reply", f"{owed} before {why}")
                )
            queue.clear()
        if self.state.postcopy_ack_due is not None:
            name = spec.request_name(Channel.MAIN, self.state.postcopy_ack_due)
            findings.append(
                Finding(
                    self.last_postcopy_reply,
                    name,
                    "postcopy-ack",
                    "the front-end never acked the back-end's postcopy reply",
                )
            )
        return findings

    # -- requests ------------------------------------------------------------

    def _request(self, msg: WireMessage) -> Analysis:
        seq, channel, sender, request, flags, size, payload, fd_count, complete = msg
        state = self.state
        ctx = state._context or state.payload_context()  # its cache, read inline
        plan = _REQUEST_PLANS[channel].get(request)
        if plan is None:
            return self._unknown_request(msg, ctx)
        row, layout = plan.row, plan.layout
        decoded = _DECODED.get((layout, payload, ctx)) if complete else None
        if decoded is None:
            decoded = decode_payload(layout, msg, ctx)
        fields = decoded.fields
        problems: list[checks.Problem] = []
        if flags not in _PLAIN_REQUEST_FLAGS:
            problems += checks.check_flags(flags, is_reply=False)
        if not (size == plan.fixed_size and complete and fields is not None):
            problems += self._size_problems(layout, msg, fields, ctx)
            if channel is Channel.MAIN:
                problems += checks.check_request_44_dialect(request, size)
        if row.gate is not None:
            problems += checks.check_gate(row, state)
        if row.sets_need_reply and not flags & _NEED_REPLY:
            problems.append(
                warning(
                    "need-reply-missing", f"flags {flags:#x}: the spec has NEED_REPLY always set"
                )
            )
        if fd_count or plan.takes_fds:
            problems += checks.check_fds(row.fds, fd_count, fields, state, row.name)
            if (
                channel is _BACKEND
                and fd_count
                and not state.has_protocol(ProtocolFeature.BACKEND_SEND_FD)
            ):
                problems.append(
                    error("not-negotiated", "fds on the back-end channel without BACKEND_SEND_FD")
                )
        check = plan.check
        if check is not None and fields is not None:
            problems += check(fields, state)
        if plan.may_owe_reply or flags & _NEED_REPLY:
            problems += self._expect_reply(msg, row, fields)
        analysis = Analysis(seq, channel, sender, _REQUEST, row.name, layout, decoded, ctx)
        if problems:
            self._add(analysis, problems)
        effect = plan.effect
        if effect is not None and fields is not None:
            analysis.effects = effect(state, msg, fields) or ()
        if fd_count and row.opens is not None:
            analysis.effects += (ChannelOpened(row.opens),)
        return analysis

    def _cut_header(self, msg: WireMessage) -> Analysis:
        """Nothing can be said of a message whose header was cut, but that it was."""
        role = Role.REQUEST if msg.sender is _REQUESTER[msg.channel] else Role.REPLY
        analysis = Analysis(msg.seq, msg.channel, msg.sender, role, "(cut header)", None, None,
                            self.state.payload_context())  # fmt: skip
        self._add(analysis, [error("cut-header", f"the stream ended {msg.size} bytes into "
                                   f"the {spec.HEADER_SIZE}-byte header")])  # fmt: skip
        return analysis

    def _unknown_request(self, msg: WireMessage, ctx: PayloadContext) -> Analysis:
        name = spec.request_name(msg.channel, msg.request)
        analysis = Analysis(msg.seq, msg.channel, msg.sender, Role.REQUEST, name, None, None, ctx)
        problems = [
            error(
                "unknown-request", f"request id {msg.request} ({msg.request:#x}) is not in the spec"
            )
        ]
        problems += checks.check_flags(msg.flags, is_reply=False)
        if msg.fd_count:
            problems.append(
                error("fd-count", f"carries {msg.fd_count} fds with an unknown request")
            )
        self._add(analysis, problems)
        return analysis

    def _expect_reply(
        self, msg: WireMessage, row: RequestSpec, fields: dict[str, Any] | None
    ) -> list[checks.Problem]:
        """Queue the reply this request makes owed, if any."""
        state = self.state
        reply = row.reply
        problems: list[checks.Problem] = []
        pending: Pending | None = None
        if reply is _ALWAYS or (
            reply is _IF_LOG_SHMFD and state.has_protocol(ProtocolFeature.LOG_SHMFD)
        ):
            pending = Pending(
                msg.seq, row, row.reply_payload, row.reply_fds, "intrinsic", fields, msg.size
            )
        elif reply is _POSTCOPY and state.postcopy is _LISTENING:
            assert row.postcopy_payload is not None
            pending = Pending(
                msg.seq, row, row.postcopy_payload, _NO_FDS, "postcopy", fields, msg.size
            )
        elif msg.flags & spec.FLAG_NEED_REPLY:
            acked = state.has_protocol(_PF_REPLY_ACK)
            if acked or msg.channel is _BACKEND:
                pending = Pending(msg.seq, row, "ack", _NO_FDS, "ack", fields, msg.size)
            if not acked:
                problems.append(
                    warning("need-reply", "NEED_REPLY set but REPLY_ACK was not negotiated")
                )
        if pending is not None:
            queue = self.pending[msg.channel]
            if len(queue) >= MAX_PENDING:
                problems.append(
                    warning("pending-limit", f"more than {MAX_PENDING} replies owed: not tracked")
                )
            else:
                queue.append(pending)
        return problems

    # -- postcopy ack ----------------------------------------------------------

    def _is_postcopy_ack(self, msg: WireMessage) -> bool:
        """The u64 0 QEMU sends once a memory table is registered for postcopy.

        With CONFIGURE_MEM_SLOTS it comes once per batch, after every ADD_MEM_REG and
        its reply, and reuses the batch's last header: ADD_MEM_REG, REM_MEM_REG when only
        regions were removed (no postcopy reply came), or request 0 when nothing changed
        (QEMU hw/virtio/vhost-user.c vhost_user_add_remove_regions(), Sep 2026;
        libvhost-user expected one ack per ADD_MEM_REG until Sep 2026).
        """
        if msg.channel is not Channel.MAIN or msg.size != 8:
            return False
        state = self.state
        if state.postcopy_ack_due == msg.request:
            return True
        return (
            state.postcopy is _LISTENING
            and msg.request in _MEM_SLOT_ACK_REQUESTS
            and state.has_protocol(ProtocolFeature.CONFIGURE_MEM_SLOTS)
        )

    def _postcopy_ack(self, msg: WireMessage) -> Analysis:
        ctx = self.state.payload_context()
        name = "NONE" if msg.request == 0 else spec.request_name(msg.channel, msg.request)
        decoded = decode_payload("ack", msg, ctx)
        analysis = Analysis(
            msg.seq,
            msg.channel,
            msg.sender,
            Role.POSTCOPY_ACK,
            name,
            "ack",
            decoded,
            ctx,
            answers=self.last_postcopy_reply,
        )
        problems = checks.check_flags(msg.flags, is_reply=False)
        problems += checks.check_fds(Fds.NONE, msg.fd_count, None, self.state, f"{name} ack")
        if decoded and decoded.fields and decoded.fields["value"] != 0:
            problems.append(
                error("postcopy-ack", f"ack value {decoded.fields['value']}, expected 0")
            )
        self._add(analysis, problems)
        self.state.postcopy_ack_due = None
        return analysis

    # -- replies -------------------------------------------------------------

    def _reply(self, msg: WireMessage) -> Analysis:
        seq, channel, sender, request, flags, size, payload, fd_count, complete = msg
        state = self.state
        ctx = state._context or state.payload_context()  # its cache, read inline
        queue = self.pending[channel]
        problems: list[checks.Problem] = []
        pending = queue[0] if queue and queue[0].row.id == request else None
        if pending is not None:
            queue.popleft()  # the usual case: the oldest request is answered
        else:
            pending = self._match(queue, request)
            if pending is not None:
                head = queue[0]
                problems.append(
                    error(
                        "wrong-reply",
                        f"reply to #{pending.seq} {pending.row.name} "
                        f"while #{head.seq} {head.row.name} still waits for its reply",
                    )
                )
                queue.remove(pending)
        if pending is None:
            row = spec.request_spec(channel, request)
            name = spec.request_name(channel, request)
            if queue:
                head = queue[0]
                problems.append(
                    error(
                        "wrong-reply",
                        f"reply to {name}, but #{head.seq} "
                        f"{head.row.name} is waiting for its reply",
                    )
                )
            else:
                problems.append(
                    error("unexpected-reply", "a reply, but no request is waiting for one")
                )
            layout = row.reply_payload if row else None
            fds_rule = row.reply_fds if row else _NO_FDS
            answers = None
            pending_fields = None
        else:
            row, name, layout = pending.row, pending.row.name, pending.layout
            fds_rule, answers, pending_fields = pending.fds, pending.seq, pending.request_fields
        decoded = None
        if layout:
            decoded = _DECODED.get((layout, payload, ctx)) if complete else None
            if decoded is None:
                decoded = decode_payload(layout, msg, ctx)
        analysis = Analysis(seq, channel, sender, _REPLY, name, layout, decoded, ctx, answers)
        fields = decoded.fields if decoded is not None else None
        if flags != _REPLY_FLAGS:
            problems += checks.check_flags(flags, is_reply=True)
        if layout:
            if not (size == _FIXED_SIZES[layout] and complete and fields is not None):
                problems += self._size_problems(layout, msg, fields, ctx)
                if channel is Channel.MAIN:
                    problems += checks.check_request_44_dialect(msg.request, size)
            check = checks.REPLY_CHECKS.get(layout)
            if check is not None and fields is not None:
                problems += check(fields, state)
        if fd_count or fds_rule is not _NO_FDS:
            problems += checks.check_fds(fds_rule, fd_count, fields, state, f"{name} reply")
        if pending is not None and fields is not None and channel is _MAIN:
            # what the reply establishes, and the checks that need its request
            effect = _REPLY_EFFECTS.get(name)
            if effect is not None:
                problems += effect(state, msg, fields, pending_fields)
                if name in _RING_STOPS:
                    analysis.effects = (RingStopped(fields["index"], fields["num"]),)
            if fd_count and name == "GET_INFLIGHT_FD":
                analysis.effects = (AreaPassed("inflight"),)
            if pending.kind == "postcopy":
                problems += self._postcopy_reply(msg, pending, fields, pending_fields)
        if problems:
            self._add(analysis, problems)
        return analysis

    @staticmethod
    def _match(queue: deque[Pending], request: int) -> Pending | None:
        for pending in queue:
            if pending.row.id == request:
                return pending
        return None

    def _postcopy_reply(
        self,
        msg: WireMessage,
        pending: Pending,
        fields: dict[str, Any],
        request_fields: dict[str, Any] | None,
    ) -> list[checks.Problem]:
        """The back-end's memory-table reply: same regions, its own addresses."""
        state = self.state
        state.postcopy_ack_due = pending.row.id
        self.last_postcopy_reply = msg.seq
        problems: list[checks.Problem] = []
        if msg.size != pending.request_size:
            problems.append(
                error(
                    "postcopy-size",
                    f"reply size {msg.size}, the request's was "
                    f"{pending.request_size} (QEMU requires them equal)",
                )
            )
        if request_fields is None:
            return problems
        if pending.row.name == "SET_MEM_TABLE":
            asked = {r["guest_phys_addr"] for r in request_fields["regions"]}
            replied = list(fields["regions"])
        else:
            asked = {request_fields["guest_phys_addr"]}
            replied = [fields]
        for region in replied:
            gpa = region["guest_phys_addr"]
            if gpa not in asked:
                problems.append(
                    error(
                        "postcopy-region",
                        f"reply region gpa 0x{gpa:x} is not in the request (QEMU rejects it)",
                    )
                )
            for known in state.regions:
                if known.guest_phys_addr == gpa:
                    known.backend_addr = region["userspace_addr"]
        return problems

    # -- helpers ---------------------------------------------------------------

    @staticmethod
    def _size_problems(
        layout: str, msg: WireMessage, fields: dict[str, Any] | None, ctx: PayloadContext
    ) -> list[checks.Problem]:
        expected = payloads.expected_size(layout, fields, ctx)
        problems = checks.check_size(layout, msg.size, expected, msg.complete)
        if fields is None and msg.complete and not problems:
            decoded = payloads.decode(layout, msg.payload, ctx)
            problems.append(error("payload", f"payload undecodable as {layout}: {decoded.error}"))
        return problems

    def _add(self, analysis: Analysis, problems: list[checks.Problem]) -> None:
        for code, text, severity in problems:
            analysis.findings.append(Finding(analysis.seq, analysis.name, code, text, severity))


# --------------------------------------------------------------------------
# What requests change in the state (front-end requests on the main channel)
# --------------------------------------------------------------------------

Fields = dict[str, Any]


Effects = tuple[Effect, ...] | None
"""What a state change returns: the effects the analysis reports (None: nothing to say)."""


def _set_features(state: ConversationState, msg: WireMessage, fields: Fields) -> None:
    state.set_features(fields["features"])


def _set_protocol_features(state: ConversationState, msg: WireMessage, fields: Fields) -> None:
    state.set_protocol_features(fields["features"])


def _region(fields: Fields, seq: int) -> Region:
    return Region(
        fields["guest_phys_addr"],
        fields["memory_size"],
        fields["userspace_addr"],
        fields["mmap_offset"],
        seq,
    )


def _set_mem_table(state: ConversationState, msg: WireMessage, fields: Fields) -> Effects:
    state.regions = [_region(region, msg.seq) for region in fields["regions"]]
    return (MemoryReplaced(tuple(state.regions)),)


def _add_mem_reg(state: ConversationState, msg: WireMessage, fields: Fields) -> Effects:
    region = _region(fields, msg.seq)
    if len(state.regions) < spec.MAX_RAM_SLOTS:
        state.regions.append(region)
    return (RegionAdded(region, 0 if msg.fd_count else None),)


def _rem_mem_reg(state: ConversationState, msg: WireMessage, fields: Fields) -> Effects:
    key = (fields["guest_phys_addr"], fields["userspace_addr"], fields["memory_size"])
    state.regions = [
        r for r in state.regions if (r.guest_phys_addr, r.userspace_addr, r.memory_size) != key
    ]
    return (RegionRemoved(_region(fields, msg.seq)),)


def _set_log_base(state: ConversationState, msg: WireMessage, fields: Fields) -> Effects:
    state.log_base = (fields["mmap_size"], fields["mmap_offset"])
    return (AreaPassed("log"),) if msg.fd_count else None


def _set_inflight_fd(state: ConversationState, msg: WireMessage, fields: Fields) -> Effects:
    return (AreaPassed("inflight"),) if msg.fd_count else None


def _set_vring_num(state: ConversationState, msg: WireMessage, fields: Fields) -> None:
    ring = state.ring(fields["index"])
    ring.num, ring.num_seq = fields["num"], msg.seq


def _set_vring_addr(state: ConversationState, msg: WireMessage, fields: Fields) -> None:
    ring = state.ring(fields["index"])
    ring.desc, ring.avail = fields["desc_user_addr"], fields["avail_user_addr"]
    ring.used, ring.log = fields["used_user_addr"], fields["log_guest_addr"]
    ring.addr_flags = fields["flags"]


def _set_vring_base(state: ConversationState, msg: WireMessage, fields: Fields) -> None:
    state.ring(fields["index"]).base = fields["num"]


def _set_vring_kick(state: ConversationState, msg: WireMessage, fields: Fields) -> Effects:
    ring = state.ring(fields["index"])
    ring.kick = "nofd" if fields["nofd"] else "fd"
    ring.started, ring.num_seq = True, None  # the ring starts here, not at its first kick
    if state.has_protocol(ProtocolFeature.STATUS) and not (
        (state.status or 0) & spec.VIRTIO_STATUS_FEATURES_OK
    ):
        state.started_without_features_ok = True
    return (RingStarted(fields["index"]),)


def _set_vring_call(state: ConversationState, msg: WireMessage, fields: Fields) -> None:
    state.ring(fields["index"]).call = "nofd" if fields["nofd"] else "fd"


def _set_vring_err(state: ConversationState, msg: WireMessage, fields: Fields) -> None:
    state.ring(fields["index"]).err = "nofd" if fields["nofd"] else "fd"


def _set_vring_enable(state: ConversationState, msg: WireMessage, fields: Fields) -> Effects:
    state.ring(fields["index"]).enabled = enabled = bool(fields["num"])
    return (RingEnabled(fields["index"], enabled),)


def _set_backend_req_fd(state: ConversationState, msg: WireMessage, fields: Fields) -> None:
    state.backend_channel = state.backend_channel or msg.fd_count > 0


def _postcopy_listen(state: ConversationState, msg: WireMessage, fields: Fields) -> None:
    state.postcopy = PostcopyPhase.LISTENING


def _postcopy_end(state: ConversationState, msg: WireMessage, fields: Fields) -> None:
    state.postcopy = PostcopyPhase.ENDED


def _get_inflight_fd(state: ConversationState, msg: WireMessage, fields: Fields) -> None:
    state.inflight_requests += 1


def _set_status(state: ConversationState, msg: WireMessage, fields: Fields) -> None:
    state.status = fields["status"]


def _reset(state: ConversationState, msg: WireMessage, fields: Fields) -> Effects:
    for ring in state.rings.values():
        ring.started, ring.enabled = False, None
    return (DeviceReset(),)


_REQUEST_EFFECTS = {
    "SET_FEATURES": _set_features,
    "SET_PROTOCOL_FEATURES": _set_protocol_features,
    "SET_MEM_TABLE": _set_mem_table,
    "ADD_MEM_REG": _add_mem_reg,
    "REM_MEM_REG": _rem_mem_reg,
    "SET_LOG_BASE": _set_log_base,
    "SET_INFLIGHT_FD": _set_inflight_fd,
    "SET_VRING_NUM": _set_vring_num,
    "SET_VRING_ADDR": _set_vring_addr,
    "SET_VRING_BASE": _set_vring_base,
    "SET_VRING_KICK": _set_vring_kick,
    "SET_VRING_CALL": _set_vring_call,
    "SET_VRING_ERR": _set_vring_err,
    "SET_VRING_ENABLE": _set_vring_enable,
    "SET_BACKEND_REQ_FD": _set_backend_req_fd,
    "POSTCOPY_LISTEN": _postcopy_listen,
    "POSTCOPY_END": _postcopy_end,
    "GET_INFLIGHT_FD": _get_inflight_fd,
    "SET_STATUS": _set_status,
    "RESET_OWNER": _reset,
    "RESET_DEVICE": _reset,
}
"""State changes of the front-end's requests, by request name."""

# --------------------------------------------------------------------------
# What replies establish (back-end replies on the main channel)
# --------------------------------------------------------------------------


def _got_features(state: ConversationState, msg: WireMessage, fields: Fields,
                  request_fields: Fields | None) -> list[checks.Problem]:  # fmt: skip
    state.features_offered = fields["features"]
    return []


def _got_protocol_features(state: ConversationState, msg: WireMessage, fields: Fields,
                           request_fields: Fields | None) -> list[checks.Problem]:  # fmt: skip
    state.protocol_offered = fields["features"]
    return []


def _got_queue_num(state: ConversationState, msg: WireMessage, fields: Fields,
                   request_fields: Fields | None) -> list[checks.Problem]:  # fmt: skip
    state.queue_num = fields["value"]
    if fields["value"] == 0:
        return [error("queue-num", "the back-end reports 0 queues")]
    return []


def _got_max_mem_slots(state: ConversationState, msg: WireMessage, fields: Fields,
                       request_fields: Fields | None) -> list[checks.Problem]:  # fmt: skip
    state.max_mem_slots = fields["value"]
    return []


def _got_vring_base(state: ConversationState, msg: WireMessage, fields: Fields,
                    request_fields: Fields | None) -> list[checks.Problem]:  # fmt: skip
    ring = state.ring(fields["index"])
    ring.last_base, ring.started = fields["num"], False
    state.inflight_requests = 0  # a device restart may ask for the area again
    if request_fields is not None and fields["index"] != request_fields["index"]:
        return [
            error(
                "reply-mismatch",
                f"reply for ring {fields['index']}, the "
                f"request asked for ring {request_fields['index']}",
            )
        ]
    return []


def _got_config(state: ConversationState, msg: WireMessage, fields: Fields,
                request_fields: Fields | None) -> list[checks.Problem]:  # fmt: skip
    if request_fields is not None and (
        fields["size"] != request_fields["size"] or msg.size != 12 + request_fields["size"]
    ):
        return [
            error(
                "config-size",
                f"reply of {fields['size']} config bytes, "
                f"{request_fields['size']} were asked for (QEMU rejects it)",
            )
        ]
    return []


def _got_postcopy_advise(state: ConversationState, msg: WireMessage, fields: Fields,
                         request_fields: Fields | None) -> list[checks.Problem]:  # fmt: skip
    state.postcopy = PostcopyPhase.ADVISED
    return []


def _got_status(state: ConversationState, msg: WireMessage, fields: Fields,
                request_fields: Fields | None) -> list[checks.Problem]:  # fmt: skip
    state.status = fields["status"]
    return []


_REPLY_EFFECTS = {
    "GET_FEATURES": _got_features,
    "GET_PROTOCOL_FEATURES": _got_protocol_features,
    "GET_QUEUE_NUM": _got_queue_num,
    "GET_MAX_MEM_SLOTS": _got_max_mem_slots,
    "GET_VRING_BASE": _got_vring_base,
    "GET_VRING_BASE_SKIP_DRAIN": _got_vring_base,
    "GET_CONFIG": _got_config,
    "POSTCOPY_ADVISE": _got_postcopy_advise,
    "GET_STATUS": _got_status,
}
"""What the back-end's replies establish (and the checks that need the request), by name."""


# --------------------------------------------------------------------------
# Tables the analysis reads per message
# --------------------------------------------------------------------------

_RING_STOPS = frozenset({"GET_VRING_BASE", "GET_VRING_BASE_SKIP_DRAIN"})
_REQUESTER = {channel: spec.requester(channel) for channel in spec.FRAMED_CHANNELS}
MAX_PENDING = 1024
"""Replies owed beyond this are not tracked (a peer must not make us allocate without bound)."""
_DECODED: dict[tuple[str, bytes, PayloadContext], Decoded] = {}
"""Decoded payloads by (layout, bytes, context): conversations repeat themselves."""
_DECODED_MAX = 8192
_PLAIN_REQUEST_FLAGS = frozenset({spec.VERSION, spec.VERSION | spec.FLAG_NEED_REPLY})
_FIXED_SIZES = {name: layout.size for name, layout in payloads.LAYOUTS.items()}


def decode_payload(layout: str, msg: WireMessage, ctx: PayloadContext) -> Decoded:
    """A message's payload read as ``layout``: what Analysis.decoded holds whenever the
    analysis has a layout (cached: callers never modify the fields)."""
    if not msg.complete:
        return Decoded(layout, None, "payload not kept whole")
    key = (layout, msg.payload, ctx)
    decoded = _DECODED.get(key)
    if decoded is None:
        if len(_DECODED) >= _DECODED_MAX:
            _DECODED.clear()
        decoded = _DECODED[key] = payloads.decode(layout, msg.payload, ctx)
    return decoded


@dataclass(frozen=True, slots=True)
class _RequestPlan:
    """A request's table row with what the analysis looks up for it, resolved once per
    row rather than once per message."""

    row: RequestSpec
    layout: str
    fixed_size: int | None
    """The payload's size when its layout has a fixed one."""
    takes_fds: bool
    """fds may ride with it (else the fd rule needs checking only when some came)."""
    may_owe_reply: bool
    """A reply may be owed without NEED_REPLY (its reply is not just an ack)."""
    check: checks.Check | None
    effect: Callable[[ConversationState, WireMessage, Fields], Effects] | None


def _plans(channel: Channel) -> dict[int, _RequestPlan]:
    effects = _REQUEST_EFFECTS if channel is Channel.MAIN else {}
    return {
        row.id: _RequestPlan(
            row,
            row.payload,
            _FIXED_SIZES[row.payload],
            row.fds is not Fds.NONE,
            row.reply is not Reply.ACK,
            checks.REQUEST_CHECKS[channel].get(row.name),
            effects.get(row.name),
        )
        for row in spec.REQUESTS[channel].values()
    }


_REQUEST_PLANS = {channel: _plans(channel) for channel in spec.FRAMED_CHANNELS}

# Enum members read for every message, as module globals: in Python 3.11 reading a member
# off its enum class (``Channel.MAIN``) is an unspecialised lookup, ten times a global's cost.
_MAIN, _BACKEND = Channel.MAIN, Channel.BACKEND
_REQUEST, _REPLY = Role.REQUEST, Role.REPLY
_NO_FDS = Fds.NONE
_ALWAYS, _IF_LOG_SHMFD, _POSTCOPY = Reply.ALWAYS, Reply.IF_LOG_SHMFD, Reply.POSTCOPY
_LISTENING = PostcopyPhase.LISTENING
_MEM_SLOT_ACK_REQUESTS = frozenset(
    (0, spec.lookup_request("ADD_MEM_REG")[1], spec.lookup_request("REM_MEM_REG")[1])  # type: ignore[index]
)
_PF_REPLY_ACK = ProtocolFeature.REPLY_ACK
_NEED_REPLY, _REPLY_FLAGS = spec.FLAG_NEED_REPLY, spec.REPLY_FLAGS
