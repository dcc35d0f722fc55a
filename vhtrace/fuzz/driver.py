"""Play one case against the running back-end: the replay's session loop, fuzz player inside.

Each session of the case is one connection (``connect_unix``), run by the replay's
:class:`~vhtrace.replay.session.SessionRunner` with a
:class:`~vhtrace.fuzz.player.FuzzPlayer`: fds are re-created by the replay's
:class:`~vhtrace.replay.fds.FdFactory` (memfds filled from the trace's snapshots), the
back-end channel is served by the runner, and the back-end's requests on it are
answered as a front-end would (``vhtrace.replay.answers``). What went out and came back
is kept in a :class:`Transcript`, which a reproducer is written from.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from vhtrace import fdinfo
from vhtrace.fuzz.case import Case, step_of
from vhtrace.fuzz.oracle import Run, SessionRun
from vhtrace.fuzz.player import Ending, FuzzPlayer
from vhtrace.fuzz.rings import RingAttack
from vhtrace.fuzz.target import Target
from vhtrace.protocol import spec
from vhtrace.protocol.conversation import WireMessage
from vhtrace.protocol.framing import pack_header, unpack_header
from vhtrace.protocol.spec import HEADER_SIZE, MAX_PAYLOAD, Channel, Side
from vhtrace.replay.answers import Answer, answer
from vhtrace.replay.guestwrites import GuestAction, GuestMemoryFds
from vhtrace.replay.memsource import MemorySource, NoSnapshots
from vhtrace.replay.plan import SessionPlan
from vhtrace.replay.session import LoopOptions, SessionRunner, UnknownRequest
from vhtrace.wire import connect_unix

SETTLE = 0.002
"""After the back-end hung up: how long to wait for it to turn out dead (a crash). A
program that dies closes its sockets as it exits, so this is short; a death noticed only
later is put down to this case by the campaign (``Campaign._died_between``)."""


KICK_SETTLE = 0.002
"""After a ring attack's kick, before the case goes on: the back-end's loop gets to the kick
first (else whether it walks the chain before the next message or the hang-up is a race:
qemu-storage-daemon walked it in 7 to 54 of 60 cases of one seed)."""
DEATH_GRACE = 0.5
"""A back-end that failed the probe: how long it may take to turn out dead."""
PROBE = pack_header(spec.lookup_request("GET_FEATURES")[1], spec.VERSION, 0)
"""GET_FEATURES: every back-end answers it, at any point of a conversation."""


@dataclass
class Sent:
    mono_ns: int
    session: int
    channel: Channel
    sender: Side
    raw: bytes
    fds: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class MemoryFill:
    """Bytes that fd ``fd`` of transcript message ``message`` held when it was passed."""

    message: int
    fd: int
    offset: int
    data: bytes


@dataclass
class Transcript:
    """Every message of a run, both ways, in order: what a reproducer trace holds."""

    messages: list[Sent] = field(default_factory=list)
    actions: list[GuestAction] = field(default_factory=list)
    """Ring attacks made, as guest actions naming transcript message numbers (from 1)."""
    fills: list[MemoryFill] = field(default_factory=list)
    """What the memfds held when they were passed (from the source trace's snapshots)."""
    endings: dict[int, str] = field(default_factory=dict)
    """Session number -> how it ended (``frontend closed``/``backend closed``)."""


@dataclass(frozen=True)
class DriveOptions:
    timeout: float = 2.0
    """How long a reply may take before the back-end counts as hung."""
    connect_timeout: float = 2.0
    probe: bool = True
    """After the case, check with a GET_FEATURES on a new connection that the back-end
    survived it (see :func:`probe`); off for back-ends that serve one connection."""


class _FillLog:
    """A memory source that remembers what it gave, for the reproducer to say it."""

    def __init__(self, memory: MemorySource) -> None:
        self.memory = memory
        self.given: list[tuple[int, int, bytes]] = []
        """(fd index, file offset, bytes) since the last :meth:`RingFds.take_fills`."""

    def contents(self, seq, index, meta, fields):  # type: ignore[no-untyped-def]
        pieces = list(self.memory.contents(seq, index, meta, fields) or ())
        self.given += [(index, offset, data) for offset, data in pieces]
        return pieces


class RingFds(GuestMemoryFds):
    """The replay's fd factory with what a ring attack needs (the regions and their
    memfds, a copy of each eventfd), applying attacks as guest actions, which the
    reproducer carries so that replay makes them again (``replay.guestwrites``). What it
    filled memfds with is kept too (:meth:`take_fills`): a finding can depend on it."""

    def __init__(self, memory: MemorySource | None) -> None:
        self._fill_log = _FillLog(memory or NoSnapshots())
        super().__init__(self._fill_log)

    def take_fills(self, message: int) -> list[MemoryFill]:
        """The fills made since the last call, as those of transcript message ``message``."""
        given, self._fill_log.given = self._fill_log.given, []
        return [MemoryFill(message, index, offset, data) for index, offset, data in given]

    def apply(self, attack: RingAttack, after: int, numbers: dict[int, int]) -> list[GuestAction]:
        """Write the attack into guest memory and kick the ring; the actions made (none if
        it cannot aim), naming messages by ``numbers`` (recorded -> transcript number).
        Writes are said by memfd and offset: the gpa is ours (the recorded region table),
        the reproducer's messages carry the mutated one."""
        setup = attack.setup
        avail = self.gpa_of(setup.avail_uaddr)
        table = self.gpa_of(setup.desc_uaddr)
        if avail is None or table is None or setup.kick_seq not in self.eventfds:
            return []
        where = self.where(avail, 4 + 2 * setup.num)
        if where is None or self.where(table, 16 * setup.num) is None:
            return []
        (idx,) = struct.unpack("<H", os.pread(where[0], 2, where[1] + 2))
        writes = [*attack.writes]
        writes += [(table + 16 * slot, data) for slot, data in attack.desc_writes
                   if slot < setup.num]  # fmt: skip
        writes.append((avail + 4 + 2 * (idx % setup.num), struct.pack("<H", attack.head & 0xFFFF)))
        writes.append((avail + 2, struct.pack("<H", (idx + attack.bump) & 0xFFFF)))
        actions = []
        for gpa, data in writes:
            found = self.where(gpa, len(data))
            if found is None:
                continue
            fd, offset = found
            os.pwrite(fd, data, offset)
            # named by a message of this run that passed the memfd (numbers has those sent)
            sent = [(numbers[seq], index) for seq, index in self.passed_as(fd) if seq in numbers]
            if sent:
                actions.append(GuestAction(after, data=data, memfd=sent[-1], offset=offset))
        self.make_action(GuestAction(after, kick=setup.kick_seq))
        time.sleep(KICK_SETTLE)
        return [*actions, GuestAction(after, kick=numbers.get(setup.kick_seq, 0))]


def answer_backend_request(request: UnknownRequest) -> Answer | None:
    """A back-end-channel request: answered as a front-end would (an ack, a plausible reply)."""
    if request.pending is None:
        return Answer(b"", (), "no reply owed")
    return answer(request.pending, request.wire.payload, ())


def run_case(
    target: Target,
    case: Case,
    memory: MemorySource | None,
    options: DriveOptions,
    transcript: Transcript | None = None,
) -> Run:
    """Send ``case`` to the running target; what happened, for the oracles."""
    sessions: list[SessionRun] = []
    factory = RingFds(memory)
    attacks = {a.setup.enable_seq: a for a in case.attacks}
    numbers: dict[int, int] = {}
    """Recorded message number -> its number in the transcript."""
    loop = LoopOptions(options.timeout, 0.0)
    try:
        for number, messages in enumerate(case.sessions, 1):
            try:
                sock = _connect(target, options.connect_timeout)
            except OSError:
                sessions.append(SessionRun(str(Ending.SEND_FAILED)))
                break
            steps = [step_of(m, number, i) for i, m in enumerate(messages)]
            factory.take_fills(0)  # a failed send's fills are nobody's
            last = messages[-1] if messages else None
            cut = last is not None and len(last.raw) != HEADER_SIZE + last.size

            def on_sent(step, number=number):
                if transcript is not None:
                    transcript.messages.append(
                        Sent(
                            time.monotonic_ns(),
                            number,
                            step.channel,
                            Side.FRONTEND,
                            step.raw,
                            tuple(step.fds),
                        )
                    )
                    if step.seq:
                        numbers[step.seq] = len(transcript.messages)
                    transcript.fills += factory.take_fills(len(transcript.messages))
                attack = attacks.pop(step.seq, None) if step.seq else None
                if attack is not None:
                    after = numbers.get(step.seq, 0)
                    made = factory.apply(attack, after, numbers)
                    if transcript is not None:
                        transcript.actions += made

            player = FuzzPlayer(number, steps, on_sent=on_sent, cut_last=cut)
            plan = SessionPlan(number, Side.FRONTEND, steps)
            tap = None
            if transcript is not None:

                def tap(channel: Channel, wire: WireMessage, fds: tuple[int, ...], n=number):
                    raw = _raw(wire)
                    metas = tuple(fdinfo.describe(fd) for fd in fds)
                    transcript.messages.append(
                        Sent(time.monotonic_ns(), n, channel, Side.BACKEND, raw, metas)
                    )

            runner = SessionRunner(
                plan,
                player,  # type: ignore[arg-type]
                sock,
                factory=factory,
                options=loop,
                unknown=answer_backend_request,
                tap=tap,
            )
            player.conversation = runner.conversation
            result = runner.run()
            ending = player.ending or Ending.DONE
            if transcript is not None:
                closed = "backend" if ending in (Ending.CLOSED, Ending.SEND_FAILED) else "frontend"
                transcript.endings[number] = f"{closed} closed"
            sessions.append(
                SessionRun(
                    str(ending),
                    player.last_sent.view.name if player.last_sent else None,
                    player.waited_for,
                    list(result.findings),
                    player.sent_count,
                    player.received_count,
                )
            )
            if ending in (Ending.CLOSED, Ending.SEND_FAILED, Ending.HANG):
                if not target.alive() or ending is Ending.HANG:
                    break
                if target.exit_status(SETTLE) is not None:
                    break
    finally:
        factory.close()
    if sessions and sessions[-1].ending in ("closed", "send-failed"):
        target.exit_status(SETTLE)
    survived = sessions and sessions[-1].ending != "hang" and target.alive()
    if options.probe and survived and not probe(target, options.timeout):
        target.exit_status(DEATH_GRACE)
    return Run(sessions, target.exit_status(), target.new_output())


def probe(target: Target, timeout: float) -> bool:
    """Whether the back-end answers a GET_FEATURES on a new connection.

    A back-end takes the next connection once it is done with the last one, so an answer
    means every message of the case was processed and survived; a program that died of
    the last message (after we hung up: nothing was owed) fails the probe instead."""
    try:
        sock = _connect(target, timeout)
    except OSError:
        return False
    with sock:
        sock.settimeout(timeout)
        try:
            sock.sendall(PROBE)
            header = _read_exactly(sock, HEADER_SIZE)
            # the whole reply: closing with unread bytes would reset the peer's end
            if header is None or _read_exactly(sock, unpack_header(header)[2]) is None:
                return False
        except OSError:
            return False
    return True


def _connect(target: Target, timeout: float) -> socket.socket:
    """Connect to the target's socket; give up at once if the program is dead."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect_unix(target.socket, 0)
        except OSError:
            if not target.alive() or time.monotonic() >= deadline:
                raise
            time.sleep(0.002)


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    got = b""
    while len(got) < min(size, MAX_PAYLOAD):
        chunk = sock.recv(size - len(got))
        if not chunk:
            return None
        got += chunk
    return got


def _raw(wire: WireMessage) -> bytes:
    return pack_header(wire.request, wire.flags, wire.size) + wire.payload
