"""Play the recorded back-end to a live front-end: ``vhtrace replay --serve``.

A mock back-end made from a trace: it listens (or, with ``--serve-connect``, connects
to a QEMU that listens), takes each connection as the next recorded session, matches
the front-end's requests with the recorded ones (in order, or ``--loose``), sends the
recorded replies with fds of the recorded kinds (a userfaultfd for POSTCOPY_ADVISE, a
memfd for GET_INFLIGHT_FD) and the recorded back-end-channel requests at their recorded
points. A request the trace does not have goes to the ``--unknown`` policy: ``fail``
(a divergence), ``ack`` (answered with a plausible success, see
:mod:`vhtrace.replay.answers`) or ``forward`` (answered by a real back-end that
shadows the whole conversation, see :mod:`vhtrace.replay.shadow`).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from vhtrace.protocol.conversation import Role
from vhtrace.protocol.spec import HEADER_SIZE, Channel, Side
from vhtrace.replay.answers import Answer, RecordedReply, answer
from vhtrace.replay.fds import FdFactory
from vhtrace.replay.options import Loaded, ReplayInputError, ReplayOptions, load
from vhtrace.replay.player import Player
from vhtrace.replay.report import ReplayResult
from vhtrace.replay.session import POLL, LoopOptions, SessionRunner, UnknownPolicy, UnknownRequest
from vhtrace.replay.shadow import Shadow
from vhtrace.wire import connect_unix, listen_unix


def recorded_replies(loaded: Loaded) -> dict[tuple[Channel, int], list[RecordedReply]]:
    """Every recorded reply of the back-end, by channel and request id, in order."""
    replies: dict[tuple[Channel, int], list[RecordedReply]] = defaultdict(list)
    for plan in loaded.plans:
        for step in plan.ours:
            if step.view.role == Role.REPLY:
                replies[(step.channel, step.view.request)].append(
                    RecordedReply(step.seq, step.raw[HEADER_SIZE:], step.fds)
                )
    return replies


def ack_policy(replies: dict[tuple[Channel, int], list[RecordedReply]]) -> UnknownPolicy:
    """--unknown ack: answer what the trace does not have with a plausible success."""

    def policy(request: UnknownRequest) -> Answer | None:
        if request.pending is None:
            return Answer(b"", (), "no reply owed: ignored")
        wire = request.wire
        return answer(request.pending, wire.payload, replies.get((wire.channel, wire.request), []))

    return policy


def serve_backend(
    trace: str | os.PathLike[str],
    path: str | os.PathLike[str],
    options: ReplayOptions | None = None,
    *,
    connect: bool = False,
    stop: threading.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> ReplayResult:
    """Serve a trace's back-end side on ``path`` (or connect there with ``connect``)."""
    options = options or ReplayOptions(timeout=None)
    stop = stop or threading.Event()
    result = ReplayResult(str(trace), Side.BACKEND.value, str(path))
    try:
        loaded = load(trace, Side.BACKEND, options)
    except ReplayInputError as exc:
        result.error = str(exc)
        return result
    result.notes += loaded.notes
    replies = recorded_replies(loaded)
    loop = LoopOptions(options.timeout, options.close_timeout, options.realtime)
    factory = FdFactory(options.memory)
    listener: socket.socket | None = None
    try:
        if not connect:
            try:
                listener = listen_unix(path)
            except OSError as exc:  # EndpointError names the path and the cause
                result.error = f"cannot listen: {exc}"
                return result
        if on_ready is not None:
            on_ready(str(path))
        for plan in loaded.plans:
            sock = _next_connection(path, listener, connect, options, stop)
            if sock is None:
                if not result.sessions:
                    if stop.is_set():
                        result.error = f"stopped before a front-end came to {path}"
                    else:
                        result.error = f"no front-end came to {path}"
                break
            shadow: Shadow | None = None
            policy: UnknownPolicy | None = None
            if options.unknown == "ack":
                policy = ack_policy(replies)
            elif options.unknown == "forward":
                assert options.forward is not None
                try:
                    shadow = Shadow.connect(options.forward, options.connect_timeout)
                except OSError as exc:
                    result.error = f"--forward {options.forward}: {exc}"
                    sock.close()
                    break
                policy = shadow.policy
            player = Player(plan, loaded.rules, loose=options.loose, keep_going=options.keep_going)
            runner = SessionRunner(
                plan,
                player,
                sock,
                factory=factory,
                options=loop,
                unknown=policy,
                stop=stop,
                tap=shadow.forward if shadow else None,
            )
            try:
                session = runner.run()
            finally:
                if shadow is not None:
                    shadow.close()
            result.sessions.append(session)
            if (session.diverged and not options.keep_going) or stop.is_set():
                break
    finally:
        factory.close()
        if listener is not None:
            listener.close()
            with contextlib.suppress(OSError):
                Path(path).unlink()
    return result


def _next_connection(
    path: str | os.PathLike[str],
    listener: socket.socket | None,
    connect: bool,
    options: ReplayOptions,
    stop: threading.Event,
) -> socket.socket | None:
    """The next front-end connection, or None (stopped, or nobody came)."""
    if connect:
        try:
            return connect_unix(path, options.connect_timeout)
        except OSError:
            return None
    assert listener is not None
    while not stop.is_set():
        readable, _, _ = select.select([listener], [], [], POLL)
        if readable:
            conn, _ = listener.accept()
            return conn
    return None
