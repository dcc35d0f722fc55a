"""Fault injection: what a buggy back-end looks like to the front-end, on purpose.

A fault is attached to a trigger (a request name and its n-th occurrence, or the n-th
message of the connection) with :meth:`mockbackend.script.Script.fault`. Reply faults
change the reply that would have been sent (QEMU checks each of these and fails the
device with its own error message); connection faults act instead of handling.

    Delay(2.0)                 reply late
    Drop()                     never reply
    WrongFlags(0x1)            reply flags != 0x5 (QEMU: "Failed to read msg header")
    WrongSize(4)               reply payload of another size
    WrongRequest("GET_STATUS") reply with another request id (QEMU: "Received unexpected msg type")
    ExtraFds(2) / MissingFds() fds the reply should not / should carry
    Close()                    close the connection when the trigger arrives
    Garbage(b"...")            send bytes that are no message (instead of the reply)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from vhtrace.protocol import spec
from vhtrace.protocol.framing import Frame
from vhtrace.protocol.suggest import did_you_mean


class UnknownRequest(KeyError):
    """A request name that is none (a script's ``on=``, ``WrongRequest``, ``expect``)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown request {self.name!r}{did_you_mean(self.name)}"


def request_id(name: str) -> int:
    """The main channel request id of ``name`` (aliases and C names accepted)."""
    found = spec.lookup_request(name)
    if found is None:
        raise UnknownRequest(name)
    return found[1]


class Fault:
    """Base class. ``describe`` names it in reports."""

    def describe(self) -> str:
        return type(self).__name__

    def mutate(self, frame: Frame) -> Frame:
        """The reply frame this fault sends instead of ``frame``."""
        return frame


@dataclass(frozen=True)
class Delay(Fault):
    seconds: float

    def describe(self) -> str:
        return f"Delay({self.seconds:g} s)"


@dataclass(frozen=True)
class Drop(Fault):
    """Do not send the reply (the front-end waits, then fails or hangs)."""


@dataclass(frozen=True)
class WrongFlags(Fault):
    flags: int = spec.VERSION

    def mutate(self, frame: Frame) -> Frame:
        return replace(frame, flags=self.flags)

    def describe(self) -> str:
        return f"WrongFlags(0x{self.flags:x})"


@dataclass(frozen=True)
class WrongSize(Fault):
    """Send a payload of ``size`` bytes (the real one cut, or padded with zeros)."""

    size: int

    def mutate(self, frame: Frame) -> Frame:
        payload = frame.payload[: self.size].ljust(self.size, b"\0")
        return replace(frame, size=self.size, payload=payload)

    def describe(self) -> str:
        return f"WrongSize({self.size})"


@dataclass(frozen=True)
class WrongRequest(Fault):
    """Reply with another request id (by name or number)."""

    request: int | str

    def __post_init__(self) -> None:
        if isinstance(self.request, str):
            request_id(self.request)  # a misspelt name fails when the script loads

    def mutate(self, frame: Frame) -> Frame:
        request = self.request
        if isinstance(request, str):
            request = request_id(request)
        return replace(frame, request=request)

    def describe(self) -> str:
        return f"WrongRequest({self.request})"


@dataclass(frozen=True)
class ExtraFds(Fault):
    """Attach ``count`` more fds (of /dev/null) than the reply should carry."""

    count: int = 1

    def mutate(self, frame: Frame) -> Frame:
        extra = tuple(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in range(self.count))
        return replace(frame, fds=frame.fds + extra)

    def describe(self) -> str:
        return f"ExtraFds({self.count})"


@dataclass(frozen=True)
class MissingFds(Fault):
    """Send the reply without the fds it should carry."""

    def mutate(self, frame: Frame) -> Frame:
        return replace(frame, fds=())


@dataclass(frozen=True)
class Close(Fault):
    """Close the connection instead of handling the triggering message."""


@dataclass(frozen=True)
class Garbage(Fault):
    """Send ``data`` (not a message) instead of the reply, or before it."""

    data: bytes = b"\xde\xad\xbe\xef" * 8
    then_reply: bool = False

    def describe(self) -> str:
        return f"Garbage({len(self.data)} bytes)"


@dataclass
class Armed:
    """A fault and when it fires: on the ``nth`` ``request``, or at the front-end's
    ``at``-th message on the main socket (1-based)."""

    fault: Fault
    request: str | None = None
    nth: int = 1
    at: int | None = None
    seen: int = 0
    fired: bool = False

    def matches(self, number: int, name: str) -> bool:
        """Count this message (the ``number``-th received); True when the fault fires now."""
        if self.fired:
            return False
        if self.at is not None:
            hit = number == self.at
        elif self.request is not None and (self.request == name or self.request == "*"):
            self.seen += 1
            hit = self.seen == self.nth
        else:
            hit = False
        self.fired = hit
        return hit

    def describe(self) -> str:
        where = f"message #{self.at}" if self.at is not None else f"{self.request} #{self.nth}"
        return f"{self.fault.describe()} at {where}"


def affects_reply(fault: Fault) -> bool:
    return not isinstance(fault, Close)
