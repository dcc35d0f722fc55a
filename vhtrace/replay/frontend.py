"""Play the recorded front-end against a live back-end: ``vhtrace replay --backend``.

Each recorded session is one connection to the back-end's socket, in order. The
back-end sees QEMU's exact conversation (same bytes, fds of the same kinds and sizes);
its replies and back-end-channel requests are compared with the recorded ones. Guest
memory writes and ring kicks the trace holds (a fuzz reproducer's ring mutation,
:mod:`vhtrace.replay.guestwrites`) are made after the message they follow.
"""

from __future__ import annotations

import os
import threading

from vhtrace.protocol.spec import Side
from vhtrace.replay.guestwrites import GuestMemoryFds, read_actions
from vhtrace.replay.memsource import SnapshotSource
from vhtrace.replay.options import ReplayInputError, ReplayOptions, load
from vhtrace.replay.plan import Step
from vhtrace.replay.player import Player
from vhtrace.replay.report import ReplayResult
from vhtrace.replay.session import LoopOptions, SessionRunner
from vhtrace.wire import connect_unix


def replay_frontend(
    trace: str | os.PathLike[str],
    backend: str | os.PathLike[str],
    options: ReplayOptions | None = None,
    *,
    stop: threading.Event | None = None,
) -> ReplayResult:
    """Replay a trace's front-end side against the back-end listening at ``backend``."""
    options = options or ReplayOptions()
    result = ReplayResult(str(trace), Side.FRONTEND.value, str(backend))
    try:
        loaded = load(trace, Side.FRONTEND, options)
    except ReplayInputError as exc:
        result.error = str(exc)
        return result
    result.notes += loaded.notes
    loop = LoopOptions(options.timeout, options.close_timeout, options.realtime, wait_owed=True)
    factory = GuestMemoryFds(options.memory or SnapshotSource.of_trace(trace))
    actions = read_actions(trace)
    if actions:
        count = sum(map(len, actions.values()))
        result.notes.append(f"{count} guest memory write(s) and ring kick(s) made as recorded")

    def after_send(step: Step) -> None:
        for action in actions.get(step.seq, ()):
            if not factory.make_action(action):
                result.notes.append(f"after #{step.seq}: could not make {action.event()[0]}")

    try:
        for plan in loaded.plans:
            try:
                sock = connect_unix(backend, options.connect_timeout)
            except OSError as exc:
                if not result.sessions:
                    result.error = f"cannot reach the back-end: {exc}"
                else:
                    result.notes.append(f"session {plan.session}: cannot reach the back-end: {exc}")
                break
            player = Player(plan, loaded.rules, loose=options.loose, keep_going=options.keep_going)
            runner = SessionRunner(plan, player, sock, factory=factory, options=loop, stop=stop,
                                   after_send=after_send)  # fmt: skip
            session = runner.run()
            result.sessions.append(session)
            if session.diverged and not options.keep_going:
                break
            if stop is not None and stop.is_set():
                break
    finally:
        factory.close()
    return result
