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

from mockbackend.faults import UnknownRequest
from mockbackend.messages import Message
from vhtrace.protocol import spec
from vhtrace.protocol.conversation import Role
from vhtrace.protocol.findings import Severity
from vhtrace.protocol.spec import Channel


def _known(name: str) -> str:
    """``name`` unchanged if it is a request name; UnknownRequest (did you mean) if not."""
    if spec.lookup_request(name) is None:
        raise UnknownRequest(name)
    return name


class Expectation:
    """Base class: observe messages, then report failures (empty list = met)."""

    description = "expectation"

    def observe(self, msg: Message) -> None:
        """Called with each message received, in order."""

    def sent(self, seq: int, channel: Channel, name: str) -> None:
        """Called with each request the mock sends on the back-end channel."""

    def failures(self) -> list[str]:
        return []

    def sentences(self) -> list[str]:
        """The report's lines: each failure prefixed with the description."""
        return [f"{self.description}: {text}" for text in self.failures()]


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
        self.first, self.then = _known(first), _known(then)
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


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


def count_phrase(at_least: int, at_most: int | None) -> str:
    """``0 times``, ``once``, ``at least 1 time``... for a count between two bounds."""
    if at_most is None:
        return f"at least {at_least} time{'' if at_least == 1 else 's'}"
    if at_least == at_most:
        return _times(at_least)
    if at_least == 0:
        return f"at most {_times(at_most)}"
    return f"{at_least} to {at_most} times"


MAX_SEQS_SHOWN = 5


class Received(Expectation):
    """A request arrives between ``at_least`` and ``at_most`` times."""

    def __init__(self, name: str, at_least: int = 1, at_most: int | None = None) -> None:
        if at_least < 0 or (at_most is not None and at_most < at_least):
            raise ValueError(
                f"received({name!r}): expected 0 <= at_least <= at_most, "
                f"got at_least={at_least}, at_most={at_most}"
            )
        self.name, self.at_least, self.at_most = _known(name), at_least, at_most
        self.description = f"{name} received {count_phrase(at_least, at_most)}"
        self.seqs: list[int] = []

    @property
    def count(self) -> int:
        return len(self.seqs)

    def observe(self, msg: Message) -> None:
        if msg.role is Role.REQUEST and msg.name == self.name:
            self.seqs.append(msg.seq)

    def failures(self) -> list[str]:
        count = self.count
        if count < self.at_least or (self.at_most is not None and count > self.at_most):
            shown = ", ".join(f"#{seq}" for seq in self.seqs[:MAX_SEQS_SHOWN])
            if count > MAX_SEQS_SHOWN:
                shown += ", ..."
            where = f" ({shown})" if shown else ""
            expected = count_phrase(self.at_least, self.at_most)
            return [f"expected {self.name} {expected}, received {count}{where}"]
        return []

    def sentences(self) -> list[str]:
        return self.failures()  # already one whole sentence


class Follows(Expectation):
    """Each ``trigger`` request (the front-end's, or a back-end channel request the mock
    sends) is followed by a ``then`` request from the front-end."""

    def __init__(self, trigger: str, then: str, channel: Channel | None = None) -> None:
        self.trigger, self.then, self.channel = _known(trigger), _known(then), channel
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
