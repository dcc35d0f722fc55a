"""The scripting API: declare the device, override requests, hook messages, inject faults.

A :class:`Script` is a passive description; :class:`mockbackend.server.MockBackend` runs
it against one connection at a time. Everything a handler or hook receives is the
connection's :class:`mockbackend.context.Context` (called ``ctx``) and the
:class:`~mockbackend.messages.Message`::

    script = Script(BlkDevice("disk.img"))
    script.protocol_features |= 1 << ProtocolFeature.STATUS

    @script.on("GET_CONFIG")                # replace the default handling
    def config(ctx, msg):
        answer = ctx.default(msg)           # what the mock would have sent
        return answer

    @script.after("SET_VRING_ENABLE")       # hooks run before/after the handling
    def started(ctx, msg, reply):
        if msg.fields["num"] == 1:
            ctx.backend.send("CONFIG_CHANGE_MSG")

    script.fault(WrongFlags(0x1), on="GET_VRING_BASE")
    script.expect(kick_before_enable())

A script file given to the CLI defines ``configure(script)``.
"""

from __future__ import annotations

import os
import runpy
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mockbackend.context import AfterHook, BeforeHook, Handler
from mockbackend.devices.base import Device
from mockbackend.errors import describe_exception
from mockbackend.expect import Expectation
from mockbackend.faults import Armed, Fault, UnknownRequest
from vhtrace.protocol import spec
from vhtrace.protocol.spec import ProtocolFeature

__all__ = [
    "AfterHook",
    "BeforeHook",
    "Handler",
    "Script",
    "ScriptError",
    "describe_exception",
    "load_script_file",
]

PF = ProtocolFeature
DEFAULT_PROTOCOL_FEATURES = (
    1 << PF.MQ
    | 1 << PF.LOG_SHMFD
    | 1 << PF.REPLY_ACK
    | 1 << PF.BACKEND_REQ
    | 1 << PF.CONFIG
    | 1 << PF.BACKEND_SEND_FD
    | 1 << PF.INFLIGHT_SHMFD
    | 1 << PF.RESET_DEVICE
    | 1 << PF.CONFIGURE_MEM_SLOTS
)
"""What qemu-storage-daemon's libvhost-user offers, less PAGEFAULT (see :meth:`Script.postcopy`)."""

MAX_MEM_SLOTS = 32
"""libvhost-user's VHOST_USER_MAX_RAM_SLOTS."""


def _key(name: str) -> str:
    """Canonical request name (aliases and C names accepted)."""
    if name == "*":
        return name
    found = spec.lookup_request(name)
    if found is None:
        raise UnknownRequest(name)
    row = spec.request_spec(*found)
    assert row is not None
    return row.name


class Script:
    """Device declaration, handler overrides, hooks, faults and expectations."""

    def __init__(
        self,
        device: Device | None = None,
        *,
        features: int | None = None,
        protocol_features: int = DEFAULT_PROTOCOL_FEATURES,
        config: bytes | None = None,
        queues: int | None = None,
    ) -> None:
        self.device = device
        self._features = features
        self.protocol_features = protocol_features
        """Offered in GET_PROTOCOL_FEATURES."""
        self.config = config
        """Config space bytes; None means the device's own."""
        self._queues = queues
        self.max_mem_slots = MAX_MEM_SLOTS
        self.handlers: dict[str, Handler] = {}
        self.before_hooks: dict[str, list[BeforeHook]] = defaultdict(list)
        self.after_hooks: dict[str, list[AfterHook]] = defaultdict(list)
        self.faults: list[Armed] = []
        self.expectations: list[Expectation] = []
        self.state: dict[str, Any] = {}
        """Free space for scripts to keep things between hooks."""

    # -- the device's identity ---------------------------------------------------

    @property
    def features(self) -> int:
        """Virtio features offered in GET_FEATURES (PROTOCOL_FEATURES included)."""
        base = self._features
        if base is None:
            base = self.device.features if self.device is not None else 0
        return base | 1 << spec.VIRTIO_F_PROTOCOL_FEATURES

    @features.setter
    def features(self, value: int) -> None:
        self._features = value

    @property
    def queues(self) -> int:
        """Queue count (GET_QUEUE_NUM and the rings the mock accepts)."""
        if self._queues is not None:
            return self._queues
        return self.device.num_queues if self.device is not None else 1

    @queues.setter
    def queues(self, value: int) -> None:
        self._queues = value

    def config_space(self) -> bytes:
        if self.config is not None:
            return self.config
        return self.device.config() if self.device is not None else b""

    def postcopy(self, enable: bool = True) -> Script:
        """Offer PAGEFAULT and, because QEMU 7.2 breaks postcopy with it, drop
        CONFIGURE_MEM_SLOTS (QEMU then uses SET_MEM_TABLE)."""
        if enable:
            self.protocol_features |= 1 << PF.PAGEFAULT
            self.protocol_features &= ~(1 << PF.CONFIGURE_MEM_SLOTS)
        else:
            self.protocol_features &= ~(1 << PF.PAGEFAULT)
        return self

    # -- overriding and hooking --------------------------------------------------

    def on(self, name: str) -> Callable[[Handler], Handler]:
        """Decorator: handle request ``name`` with this function instead of the default."""
        key = _key(name)

        def register(handler: Handler) -> Handler:
            self.handlers[key] = handler
            return handler

        return register

    def before(self, name: str = "*") -> Callable[[BeforeHook], BeforeHook]:
        """Decorator: call ``hook(ctx, msg)`` before handling ``name`` (``*``: every message)."""
        key = _key(name)

        def register(hook: BeforeHook) -> BeforeHook:
            self.before_hooks[key].append(hook)
            return hook

        return register

    def after(self, name: str = "*") -> Callable[[AfterHook], AfterHook]:
        """Decorator: call ``hook(ctx, msg, reply)`` after ``name`` was handled and answered."""
        key = _key(name)

        def register(hook: AfterHook) -> AfterHook:
            self.after_hooks[key].append(hook)
            return hook

        return register

    def fault(
        self, fault: Fault, *, on: str | None = None, nth: int = 1, at: int | None = None
    ) -> Armed:
        """Inject ``fault`` on the ``nth`` request ``on`` (``*``: any), or at message ``at``."""
        if (on is None) == (at is None):
            raise ValueError("give exactly one of on= (a request name) or at= (a message number)")
        armed = Armed(fault, _key(on) if on is not None else None, nth, at)
        self.faults.append(armed)
        return armed

    def expect(self, expectation: Expectation) -> Expectation:
        """Check ``expectation`` over the connection; failures are reported at the end."""
        self.expectations.append(expectation)
        return expectation

    # -- lookups used by the connection loop -----------------------------------------

    def hooks_before(self, name: str) -> list[BeforeHook]:
        return [*self.before_hooks.get("*", ()), *self.before_hooks.get(name, ())]

    def hooks_after(self, name: str) -> list[AfterHook]:
        return [*self.after_hooks.get("*", ()), *self.after_hooks.get(name, ())]


class ScriptError(Exception):
    """A script file that does not load, in one line: its file, the line and the error."""


def load_script_file(path: Path | str, script: Script) -> Script:
    """Run a script file's ``configure(script)`` (or use its module-level ``script``).

    Raises :class:`ScriptError` (one line naming the file, line and error) when the file
    cannot be read, does not compile, raises, or defines neither."""
    try:
        namespace = runpy.run_path(str(path), run_name="mockbackend_script")
        configure = namespace.get("configure")
        if callable(configure):
            result = configure(script)
            return result if isinstance(result, Script) else script
    except OSError as exc:
        if exc.filename is not None and os.path.abspath(exc.filename) == os.path.abspath(path):
            raise ScriptError(f"{path}: {exc.strerror}") from None
        raise ScriptError(describe_exception(exc, path)) from None
    except Exception as exc:
        raise ScriptError(describe_exception(exc, path)) from None
    found = namespace.get("script")
    if isinstance(found, Script):
        if found.device is None:
            found.device = script.device
        return found
    raise ScriptError(f"{path}: defines neither configure(script) nor a Script named 'script'")
