"""Expectations on the front-end's behaviour, checked as messages arrive, reported at the end.

An expectation watches every message of the connection (front-end requests on the main
channel and the front-end's replies on the back-end channel) and says at the end what it
missed. They are plain objects, so a script can write its own::

    class NoReset(Expectation):
        description = "the front-end never resets the device"
        def observe(self, msg): ...
        def failures(self): return [...]
"""

from __future__ import annotations

from collections.abc import Callable

from mockbackend.messages import Message
from vhtrace.protocol.conversation import Role
from vhtrace.protocol.findings import Severity
from vhtrace.protocol.spec import Channel


class Expectation:
    """Base class: observe messages, then report failures (empty list = met)."""

    description = "expectation"

    def observe(self, msg: Message) -> None:
        """Called with each message received, in order."""

    def sent(self, seq: int, channel: Channel, name: str) -> None:
        """Called with each request the mock sends on the back-end channel."""

    def failures(self) -> list[str]:
        return []


class KickBeforeEnable(Expectation):
    """Every ring gets SET_VRING_KICK before SET_VRING_ENABLE 1 (since its last stop)."""

    description = "every ring gets SET_VRING_KICK before SET_VRING_ENABLE 1"

    def __init__(self) -> None:
        self.kicked: set[int] = set()
        self.problems: list[str] = []

    def observe(self, msg: Message) -> None:
        if msg.channel is not Channel.MAIN or msg.role is not Role.REQUEST or not msg.decoded:
            return
        index = msg.fields.get("index")
        if msg.name == "SET_VRING_KICK":
            self.kicked.add(index)
        elif msg.name == "GET_VRING_BASE":
            self.kicked.discard(index)
        elif msg.name == "SET_VRING_ENABLE" and msg.fields.get("num") == 1:
            enabled_unkicked = index not in self.kicked
            if enabled_unkicked:
                self.problems.append(f"#{msg.seq}: ring {index} enabled before its kick fd")

    def failures(self) -> list[str]:
        return self.problems


class Order(Expectation):
    """``first`` is received before ``then`` (each at least once)."""

    def __init__(self, first: str, then: str) -> None:
        self.first, self.then = first, then
        self.description = f"{first} before {then}"
        self.first_seq: int | None = None
        self.then_seq: int | None = None

    def observe(self, msg: Message) -> None:
        if msg.role is not Role.REQUEST:
            return
        if msg.name == self.first and self.first_seq is None:
            self.first_seq = msg.seq
        if msg.name == self.then and self.then_seq is None:
            self.then_seq = msg.seq

    def failures(self) -> list[str]:
        if self.first_seq is None:
            return [f"{self.first} never received"]
        if self.then_seq is None:
            return [f"{self.then} never received"]
        if self.then_seq < self.first_seq:
            return [f"{self.then} (#{self.then_seq}) came before {self.first} (#{self.first_seq})"]
        return []


class Received(Expectation):
    """A request arrives between ``at_least`` and ``at_most`` times."""

    def __init__(self, name: str, at_least: int = 1, at_most: int | None = None) -> None:
        self.name, self.at_least, self.at_most = name, at_least, at_most
        bound = f"{at_least}..{at_most if at_most is not None else 'n'}"
        self.description = f"{name} received {bound} times"
        self.count = 0

    def observe(self, msg: Message) -> None:
        if msg.role is Role.REQUEST and msg.name == self.name:
            self.count += 1

    def failures(self) -> list[str]:
        if self.count < self.at_least or (self.at_most is not None and self.count > self.at_most):
            return [f"{self.name} received {self.count} times, expected {self.description}"]
        return []


class Follows(Expectation):
    """Each ``trigger`` request (the front-end's, or a back-end channel request the mock
    sends) is followed by a ``then`` request from the front-end."""

    def __init__(self, trigger: str, then: str, channel: Channel | None = None) -> None:
        self.trigger, self.then, self.channel = trigger, then, channel
        self.description = f"{then} follows every {trigger}"
        self.waiting: list[int] = []

    def observe(self, msg: Message) -> None:
        if msg.role is not Role.REQUEST:
            return
        if msg.name == self.trigger and (self.channel is None or msg.channel is self.channel):
            self.waiting.append(msg.seq)
        elif msg.name == self.then:
            self.waiting.clear()

    def sent(self, seq: int, channel: Channel, name: str) -> None:
        if name == self.trigger and (self.channel is None or channel is self.channel):
            self.waiting.append(seq)

    def failures(self) -> list[str]:
        return [f"no {self.then} after {self.trigger} #{seq}" for seq in self.waiting]


class NoViolations(Expectation):
    """The front-end's messages carry no findings of ``severity`` (errors by default)."""

    def __init__(self, severity: Severity = Severity.ERROR, ignore: tuple[str, ...] = ()) -> None:
        self.severity, self.ignore = severity, ignore
        self.description = f"no {severity} findings on the front-end's messages"
        self.found: list[str] = []

    def observe(self, msg: Message) -> None:
        for finding in msg.findings:
            if finding.code in self.ignore:
                continue
            if self.severity is Severity.WARNING or finding.severity is Severity.ERROR:
                self.found.append(str(finding))

    def failures(self) -> list[str]:
        return self.found


class That(Expectation):
    """A predicate over every message seen, checked at the end."""

    def __init__(self, check: Callable[[list[Message]], bool], description: str) -> None:
        self.check, self.description = check, description
        self.seen: list[Message] = []

    def observe(self, msg: Message) -> None:
        self.seen.append(msg)

    def failures(self) -> list[str]:
        return [] if self.check(self.seen) else [f"not met: {self.description}"]


def kick_before_enable() -> Expectation:
    return KickBeforeEnable()


def order(first: str, then: str) -> Expectation:
    return Order(first, then)


def received(name: str, at_least: int = 1, at_most: int | None = None) -> Expectation:
    return Received(name, at_least, at_most)


def never(name: str) -> Expectation:
    return Received(name, 0, 0)


def no_violations(severity: Severity = Severity.ERROR, ignore: tuple[str, ...] = ()) -> Expectation:
    return NoViolations(severity, ignore)


def that(check: Callable[[list[Message]], bool], description: str) -> Expectation:
    return That(check, description)
