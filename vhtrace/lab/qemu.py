"""Build and run a QEMU command line that boots the test guest with vhost-user devices.

QEMU is the real vhost-user front-end. Each device names the unix socket of *QEMU's*
chardev only; which process sits at the other end (the back-end itself, or a recording
proxy in front of it) is the caller's business, so the two paths are independent.

The machine is fixed to what works on our hosts: TCG (a KVM guest hangs here), q35, and
guest RAM in a shared memfd so the back-end can map it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Self

from vhtrace.lab import programs
from vhtrace.lab.guest import Markers, parse_markers
from vhtrace.lab.proc import LabError, LabProcess, ProcessView, check_socket_path, is_listening

DeviceKind = Literal["blk", "fs", "net"]

DEFAULT_APPEND = "console=ttyS0 panic=-1 quiet"


class QemuError(LabError):
    """QEMU failed, timed out, or the guest did not report success."""


def _opts(pairs: Mapping[str, object]) -> str:
    """QEMU -opt syntax; commas inside values are doubled as QEMU requires."""
    return ",".join(f"{k}={str(v).replace(',', ',,')}" for k, v in pairs.items())


@dataclass(frozen=True)
class VhostUserDevice:
    """One vhost-user device of the guest, reached through QEMU's chardev ``socket``.

    ``server=True`` makes QEMU listen on the socket (``server=on,wait=off``) and wait for
    the back-end to connect; otherwise QEMU connects to a listening back-end, and with
    ``reconnect`` (seconds) keeps reconnecting when it goes away.
    """

    kind: DeviceKind
    socket: Path
    server: bool = False
    reconnect: int | None = None
    num_queues: int | None = None
    tag: str = "share"
    chardev_options: Mapping[str, object] = field(default_factory=dict)
    device_options: Mapping[str, object] = field(default_factory=dict)

    def qemu_args(self, index: int, qemu_version: tuple[int, ...] = (7, 2)) -> list[str]:
        """The -chardev/-netdev/-device arguments for this device as number ``index``."""
        if self.kind not in ("blk", "fs", "net"):
            raise ValueError(f"unknown vhost-user device kind {self.kind!r}")
        chardev_id = f"vhu{index}"
        chardev: dict[str, object] = {"path": check_socket_path(self.socket)}
        if self.server:
            if self.reconnect:
                raise ValueError("reconnect applies to a client chardev, not server=True")
            chardev.update(server="on", wait="off")
        elif self.reconnect:
            # QEMU 9.2 deprecated reconnect (seconds) in favour of reconnect-ms.
            if qemu_version >= (9, 2):
                chardev["reconnect-ms"] = self.reconnect * 1000
            else:
                chardev["reconnect"] = self.reconnect
        chardev.update(self.chardev_options)
        args = ["-chardev", f"socket,id={chardev_id},{_opts(chardev)}"]

        device: dict[str, object]
        if self.kind == "blk":
            device = {"chardev": chardev_id}
            if self.num_queues:
                device["num-queues"] = self.num_queues
            driver = "vhost-user-blk-pci"
        elif self.kind == "fs":
            device = {"chardev": chardev_id, "tag": self.tag}
            if self.num_queues:
                device["num-request-queues"] = self.num_queues
            driver = "vhost-user-fs-pci"
        else:
            netdev: dict[str, object] = {"id": f"net{index}", "chardev": chardev_id}
            device = {"netdev": f"net{index}"}
            if self.num_queues and self.num_queues > 1:
                netdev["queues"] = self.num_queues
                device.update(mq="on", vectors=2 * self.num_queues + 2)
            else:
                # QEMU 7.2 segfaults in msix_set_vector_notifiers with vhost-user net under
                # TCG; without MSI-X vectors the device works (found with mockbackend).
                device["vectors"] = 0
            args += ["-netdev", f"vhost-user,{_opts(netdev)}"]
            driver = "virtio-net-pci"
        device.update(self.device_options)
        args += ["-device", f"{driver},id=dev{index},{_opts(device)}"]
        return args


@dataclass(frozen=True)
class QemuConfig:
    """Everything that goes on the QEMU command line."""

    kernel: Path
    initrd: Path
    devices: Sequence[VhostUserDevice] = ()
    memory_mb: int = 256
    smp: int = 1
    append: str = DEFAULT_APPEND
    qmp: Path | None = None
    incoming_defer: bool = False
    extra_args: Sequence[str] = ()
    program: Path | None = None


def build_command(config: QemuConfig) -> list[str]:
    """The argv for ``config`` (without starting anything)."""
    program = config.program or programs.qemu()
    version = programs.program_version(program)
    mem = config.memory_mb
    argv = [
        str(program),
        "-accel",
        "tcg",
        "-machine",
        "q35,memory-backend=mem",
        "-m",
        str(mem),
        "-smp",
        str(config.smp),
        "-object",
        f"memory-backend-memfd,id=mem,size={mem}M,share=on",
        "-nographic",
        "-no-reboot",
        "-nic",
        "none",
        "-kernel",
        str(config.kernel),
        "-initrd",
        str(config.initrd),
        "-append",
        config.append,
    ]
    for index, device in enumerate(config.devices):
        argv += device.qemu_args(index, version)
    if config.qmp is not None:
        argv += ["-qmp", f"unix:{check_socket_path(config.qmp)},server=on,wait=off"]
    if config.incoming_defer:
        argv += ["-incoming", "defer"]
    argv += [str(a) for a in config.extra_args]
    return argv


class Qemu(ProcessView):
    """A running QEMU whose serial console (and stderr) is captured in ``log_path``.

    Use as a context manager: leaving it kills QEMU's whole process group.
    """

    def __init__(
        self,
        config: QemuConfig,
        log_path: Path,
        *,
        name: str = "qemu",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.argv = build_command(config)
        self._proc = LabProcess(self.argv, log_path, name=name, env=env)
        self.log_path = Path(log_path)
        self.name = name
        self.started_at: float | None = None
        self._markers = Markers()
        self._scanned = 0
        self._partial = b""

    def start(self, timeout: float = 30.0) -> Self:
        """Launch QEMU and wait until it listens on its QMP socket and server chardevs.

        So a caller may connect to any socket QEMU listens on as soon as this returns.
        """
        self.started_at = time.monotonic()
        self._proc.start()
        listening = [d.socket for d in self.config.devices if d.server]
        if self.config.qmp is not None:
            listening.append(self.config.qmp)
        deadline = time.monotonic() + timeout
        for path in listening:
            while not is_listening(path):
                if not self._proc.alive():
                    raise self.error(f"exited before listening on {path}")
                if time.monotonic() > deadline:
                    raise self.error(f"not listening on {path} after {timeout:g} s")
                time.sleep(0.02)
        return self

    def markers(self) -> Markers:
        """``VHT:`` markers the guest has printed so far (complete lines only).

        The log is scanned incrementally, so this stays cheap even when QEMU floods it
        (the postcopy destination of QEMU 7.2 prints an error line in a loop).
        """
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._scanned)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        self._scanned += len(chunk)
        data = self._partial + chunk
        complete, _, self._partial = data.rpartition(b"\n")
        if complete:
            self._markers.items += parse_markers(complete.decode(errors="replace")).items
        return Markers(list(self._markers.items))

    def error(self, what: str, lines: int = 40) -> QemuError:
        """A QemuError for ``what`` quoting the last ``lines`` lines of the log."""
        return QemuError(self._proc.describe_failure(what, lines))

    def wait(self, timeout: float) -> int:
        """Wait for QEMU to exit and return its status; QemuError with the log on timeout."""
        try:
            return self._proc.wait_exit(timeout)
        except LabError as exc:
            raise QemuError(str(exc)) from None

    def wait_for(self, condition: Callable[[Markers], bool], timeout: float, what: str) -> Markers:
        """Wait until ``condition(markers)`` holds; the markers then.

        QemuError (quoting the log) if QEMU exits first or ``timeout`` passes; ``what``
        describes the awaited state for that message.
        """
        deadline = time.monotonic() + timeout
        while True:
            markers = self.markers()
            if condition(markers):
                return markers
            if not self.alive():
                markers = self.markers()  # output written just before exiting
                if condition(markers):
                    return markers
                raise self.error(f"exited before {what}")
            if time.monotonic() > deadline:
                raise self.error(f"no {what} within {timeout:g} s")
            time.sleep(0.1)

    def wait_marker(self, key: str, timeout: float, value: str | None = None) -> str | None:
        """Wait until the guest prints marker ``key`` (with ``value`` if given); its value."""
        if value is None:
            markers = self.wait_for(lambda m: key in m, timeout, f"VHT:{key} from the guest")
            return markers[key]
        self.wait_for(lambda m: value in m.all(key), timeout, f"VHT:{key}={value} from the guest")
        return value

    def finish(self, timeout: float = 120.0) -> Markers:
        """Wait for the guest to power off and check it succeeded; its markers.

        Success means: QEMU exited with status 0, the guest printed ``VHT:done`` and its
        snippet exited 0 (``VHT:rc=0``). Anything else raises QemuError quoting the log.
        """
        rc = self.wait(timeout)
        markers = self.markers()
        if rc != 0:
            raise self.error(f"QEMU exited with status {rc}")
        if not markers.done:
            raise self.error("guest never printed VHT:done (kernel panic or early stop?)")
        if markers.get("rc") != "0":
            raise self.error(f"guest snippet failed with status {markers.get('rc')}")
        return markers


def realize_only_command(socket_path: str = "{sock}", device: str = "blk") -> list[str]:
    """QEMU with one vhost-user device on ``socket_path``, paused (-S): it realizes the
    device (GET_FEATURES, GET_PROTOCOL_FEATURES, GET_CONFIG, ...) and runs no guest. What
    ``vhtrace fuzz --frontend-cmd`` starts each iteration ({sock}: the fuzzer's socket)."""
    return [
        str(programs.qemu()), "-accel", "tcg", "-machine", "q35,memory-backend=mem",
        "-m", "256", "-object", "memory-backend-memfd,id=mem,size=256M,share=on",
        "-nodefaults", "-display", "none", "-S",
        "-chardev", f"socket,id=c0,path={socket_path}",
        "-device", f"vhost-user-{device}-pci,chardev=c0",
    ]  # fmt: skip


def firmware_guest_command(
    socket_path: str = "{sock}", qmp_path: str = "{qmp}", device: str = "blk"
) -> list[str]:
    """QEMU with one vhost-user device on ``socket_path``, running its firmware as the guest.

    No kernel: SeaBIOS's virtio-blk driver brings the device up within a second of the
    start (features, memory table, ring setup and a kick for the boot sector's read), so
    the conversation goes past realize without a 9-second Linux boot. The QMP monitor on
    ``qmp_path`` stops and resumes the VM (ring stop: GET_VRING_BASE; restart) and tells
    whether QEMU still answers. What ``vhtrace fuzz --frontend-cmd`` starts in guest mode."""
    return [
        str(programs.qemu()), "-accel", "tcg", "-machine", "q35,memory-backend=mem",
        "-m", "256", "-object", "memory-backend-memfd,id=mem,size=256M,share=on",
        "-nodefaults", "-vga", "std", "-display", "none", "-no-reboot",
        "-qmp", f"unix:{qmp_path},server=on,wait=off",
        "-chardev", f"socket,id=c0,path={socket_path}",
        "-device", f"vhost-user-{device}-pci,chardev=c0,bootindex=1",
    ]  # fmt: skip


def run_guest(config: QemuConfig, log_path: Path, timeout: float = 120.0) -> Markers:
    """Boot a guest to completion and return its markers (QemuError if it fails)."""
    with Qemu(config, log_path) as vm:
        return vm.finish(timeout)


__all__ = [
    "DEFAULT_APPEND",
    "DeviceKind",
    "Qemu",
    "QemuConfig",
    "QemuError",
    "VhostUserDevice",
    "build_command",
    "firmware_guest_command",
    "realize_only_command",
    "run_guest",
]
