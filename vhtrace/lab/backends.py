"""Start the real vhost-user back-ends: qemu-storage-daemon (blk) and virtiofsd (fs).

Each back-end listens on its *own* socket path, independent of QEMU's chardev path, so a
recording proxy can sit between the two. A back-end counts as started only once it is
listening; if it dies or takes too long, the error quotes its output.

virtiofsd comes in two flavours with different command lines: the C one shipped inside
qemu-system-common up to QEMU 7.2 (Debian 12) and the Rust one packaged separately
(Debian 13). :func:`virtiofsd_flavor` tells them apart by their ``--help``.
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, Self

from vhtrace.lab import programs
from vhtrace.lab.proc import (
    LabError,
    LabProcess,
    ProcessView,
    check_socket_path,
    remove_stale_socket,
)


class BackendError(LabError):
    """A back-end did not start, or stopped badly."""


def _qemu_value(value: object) -> str:
    return str(value).replace(",", ",,")


class Backend(ProcessView):
    """A back-end program listening on ``socket``; a context manager that stops it."""

    def __init__(
        self,
        argv: Sequence[str],
        socket: Path,
        log_path: Path,
        *,
        name: str,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.socket = check_socket_path(socket)
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.name = name
        self._proc = LabProcess(self.argv, self.log_path, name=name, env=env)

    def launch(self) -> Self:
        """Launch the program without waiting (a client that connects by itself)."""
        self._proc.start()
        return self

    def start(self, timeout: float = 15.0) -> Self:
        """Launch the program and wait until it listens on its socket."""
        remove_stale_socket(self.socket)
        self._proc.start()
        try:
            self._proc.wait_listening(self.socket, timeout)
        except LabError as exc:
            self._proc.stop()
            raise BackendError(str(exc)) from None
        return self

    def wait(self, timeout: float) -> int:
        """Wait for the back-end to exit on its own (virtiofsd does when QEMU leaves)."""
        try:
            return self._proc.wait_exit(timeout)
        except LabError as exc:
            raise BackendError(str(exc)) from None


# --------------------------------------------------------------------------- blk


def qsd_command(
    image: Path,
    socket: Path,
    *,
    fmt: str = "raw",
    writable: bool = True,
    num_queues: int | None = None,
    locking: bool = True,
    qmp: Path | None = None,
    extra_args: Sequence[str] = (),
    program: Path | None = None,
) -> list[str]:
    """argv of a qemu-storage-daemon exporting ``image`` as vhost-user-blk on ``socket``.

    ``locking=False`` lets two daemons open the same image, as postcopy migration between
    two QEMUs on one host needs.
    """
    program = program or programs.qsd()
    file_node = {
        "driver": "file",
        "node-name": "file0",
        "filename": Path(image).absolute(),
    }
    if not locking:
        file_node["locking"] = "off"
    argv = [
        str(program),
        "--blockdev",
        ",".join(f"{k}={_qemu_value(v)}" for k, v in file_node.items()),
    ]
    top = "file0"
    if fmt != "raw":
        argv += ["--blockdev", f"driver={_qemu_value(fmt)},node-name=fmt0,file=file0"]
        top = "fmt0"
    export = (
        f"type=vhost-user-blk,id=exp0,node-name={top},addr.type=unix,"
        f"addr.path={_qemu_value(check_socket_path(socket))},writable={'on' if writable else 'off'}"
    )
    if num_queues:
        export += f",num-queues={int(num_queues)}"
    argv += ["--export", export]
    if qmp is not None:
        argv += [
            "--chardev",
            f"socket,id=qmp0,path={_qemu_value(check_socket_path(qmp))},server=on,wait=off",
            "--monitor",
            "chardev=qmp0",
        ]
    return argv + [str(a) for a in extra_args]


class StorageDaemon(Backend):
    """qemu-storage-daemon with one vhost-user-blk export (see :func:`qsd_command`)."""

    def __init__(
        self,
        image: Path,
        socket: Path,
        log_path: Path,
        *,
        fmt: str = "raw",
        writable: bool = True,
        num_queues: int | None = None,
        locking: bool = True,
        qmp: Path | None = None,
        extra_args: Sequence[str] = (),
        program: Path | None = None,
        name: str = "qemu-storage-daemon",
    ) -> None:
        argv = qsd_command(
            image,
            socket,
            fmt=fmt,
            writable=writable,
            num_queues=num_queues,
            locking=locking,
            qmp=qmp,
            extra_args=extra_args,
            program=program,
        )
        super().__init__(argv, socket, log_path, name=name)
        self.image = Path(image)
        self.qmp = qmp


# --------------------------------------------------------------------------- fs

VirtiofsdFlavor = Literal["c", "rust"]


@functools.cache
def virtiofsd_flavor(program: Path) -> VirtiofsdFlavor:
    """'rust' for the rust-vmm virtiofsd (``--shared-dir``), 'c' for QEMU's (``-o source``)."""
    try:
        result = subprocess.run(
            [str(program), "--help"], capture_output=True, text=True, timeout=10
        )
        text = result.stdout + result.stderr
    except (OSError, subprocess.TimeoutExpired):
        text = ""
    if "--shared-dir" in text:
        return "rust"
    if "source=" in text or "-o " in text:
        return "c"
    return "c" if "/lib/qemu/" in str(program) else "rust"


def virtiofsd_command(
    shared_dir: Path,
    socket: Path,
    *,
    cache: Literal["none", "auto", "always"] = "none",
    sandbox: str | None = None,
    extra_args: Sequence[str] = (),
    program: Path | None = None,
) -> list[str]:
    """argv of a virtiofsd sharing ``shared_dir`` on ``socket``, for either flavour.

    ``cache`` uses the C names; 'none' becomes the Rust ``--cache never``. ``sandbox``
    (namespace, chroot, none) is passed through when given.
    """
    program = program or programs.virtiofsd()
    sock = str(check_socket_path(socket))
    source = str(Path(shared_dir).absolute())
    if virtiofsd_flavor(program) == "rust":
        rust_cache = {"none": "never", "auto": "auto", "always": "always"}[cache]
        argv = [str(program), "--socket-path", sock, "--shared-dir", source, "--cache", rust_cache]
        if sandbox:
            argv += ["--sandbox", sandbox]
    else:
        argv = [
            str(program),
            f"--socket-path={sock}",
            "-o",
            f"source={source}",
            "-o",
            f"cache={cache}",
        ]
        if sandbox:
            argv += ["-o", f"sandbox={sandbox}"]
    return argv + [str(a) for a in extra_args]


class Virtiofsd(Backend):
    """virtiofsd sharing a host directory; it exits by itself when QEMU disconnects."""

    def __init__(
        self,
        shared_dir: Path,
        socket: Path,
        log_path: Path,
        *,
        cache: Literal["none", "auto", "always"] = "none",
        sandbox: str | None = None,
        extra_args: Sequence[str] = (),
        program: Path | None = None,
        name: str = "virtiofsd",
    ) -> None:
        program = program or programs.virtiofsd()
        argv = virtiofsd_command(
            shared_dir, socket, cache=cache, sandbox=sandbox, extra_args=extra_args, program=program
        )
        super().__init__(argv, socket, log_path, name=name)
        self.shared_dir = Path(shared_dir)
        self.flavor: VirtiofsdFlavor = virtiofsd_flavor(program)
