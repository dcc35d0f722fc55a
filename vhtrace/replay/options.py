"""Replay options, and reading a trace into plans and rules (the part both sides share)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from vhtrace.analysis import analyser_for, device_of
from vhtrace.protocol.spec import Side
from vhtrace.replay.memsource import MemorySource
from vhtrace.replay.plan import SessionPlan, plan_sessions
from vhtrace.replay.rules import RuleError, Rules, build_rules
from vhtrace.trace.reader import TraceError, TraceReader

UNKNOWN_POLICIES = ("fail", "ack", "forward")


class ReplayInputError(Exception):
    """The trace or the options cannot be replayed (exit code 2)."""


@dataclass(frozen=True)
class ReplayOptions:
    """How to replay; the defaults are the CLI's."""

    ignore: tuple[str, ...] = ()
    """``[REQUEST.]FIELD`` differences that do not count (``--ignore``)."""
    mask_features: tuple[str, ...] = ()
    """Feature bits left out of comparisons (``--mask-features``)."""
    default_ignores: bool = True
    """Ignore what differs between any two runs (addresses, ring positions)."""
    until: int | None = None
    """Stop after this recorded message number."""
    sessions: tuple[int, ...] | None = None
    """Replay only these sessions of the trace."""
    realtime: bool = False
    """Keep the recorded gaps between our messages."""
    timeout: float | None = 5.0
    """Longest wait for an expected message; None waits for ever (serving a front-end)."""
    close_timeout: float = 2.0
    connect_timeout: float = 10.0
    keep_going: bool = False
    """After a content mismatch, go on (report every difference) instead of stopping."""
    loose: bool = False
    """Match the front-end's requests by request and payload, not by position (serving)."""
    unknown: str = "fail"
    """Serving: what to do with a request the trace does not have: fail, ack, forward."""
    forward: str | None = None
    """Serving with ``unknown='forward'``: the real back-end's socket."""
    device: str | None = None
    """Device type naming virtio bits (default: the trace's)."""
    memory: MemorySource | None = field(default=None, compare=False)


@dataclass
class Loaded:
    header: dict
    plans: list[SessionPlan]
    rules: Rules
    notes: list[str]


def load(trace: str | os.PathLike[str], play: Side, options: ReplayOptions) -> Loaded:
    """Read a trace into the plans of the side to play; ReplayInputError if it cannot be."""
    if options.unknown not in UNKNOWN_POLICIES:
        raise ReplayInputError(f"--unknown {options.unknown}: one of {', '.join(UNKNOWN_POLICIES)}")
    if options.unknown == "forward" and not options.forward:
        raise ReplayInputError("--unknown forward needs --forward BACKEND.sock")
    notes: list[str] = []
    try:
        with TraceReader(Path(trace)) as reader:
            items = analyser_for(reader.header, options.device).run(reader)
            plans = plan_sessions(items, play, until=options.until, sessions=options.sessions)
            header = reader.header
            if reader.problem is not None:
                notes.append(f"the trace is damaged ({reader.problem}): replaying what it holds")
    except TraceError as exc:
        raise ReplayInputError(str(exc)) from None
    if not plans:
        what = "no messages"
        if options.sessions is not None:
            what += f" in session {', '.join(map(str, options.sessions))}"
        if options.until is not None:
            what += f" up to #{options.until}"
        raise ReplayInputError(f"{trace}: {what} to replay")
    try:
        rules = build_rules(
            options.ignore,
            options.mask_features,
            device=device_of(header, options.device),
            defaults=options.default_ignores,
        )
    except RuleError as exc:
        raise ReplayInputError(str(exc)) from None
    return Loaded(header, plans, rules, notes)
