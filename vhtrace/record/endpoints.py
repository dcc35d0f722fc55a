"""The sockets of a recording proxy: listening, connecting (the transport's policy,
:mod:`vhtrace.wire`), and who is on the other end."""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import struct
from typing import Any

from vhtrace import wire
from vhtrace.wire import EndpointError, check_path_length

__all__ = ["EndpointError", "check_path_length", "listen_unix", "try_connect"]


def listen_unix(path: str, mode: int = 0o600, backlog: int = 16) -> socket.socket:
    """The transport's listening socket (:func:`vhtrace.wire.listen_unix`: a stale socket
    replaced, a live one refused without connecting to it), non-blocking for the relay."""
    sock = wire.listen_unix(path, mode, backlog)
    sock.setblocking(False)
    return sock


def try_connect(path: str) -> socket.socket | None:
    """Connect now, non-blocking, or None if nobody listens yet (retry later)."""
    sock = wire.try_connect(path)
    if sock is not None:
        sock.setblocking(False)
    return sock


_UCRED = struct.Struct("iII")

DEVICE_OF_QEMU_DEVICE = {
    "vhost-user-blk": "blk",
    "vhost-user-fs": "fs",
    "vhost-user-scsi": "scsi",
    "vhost-user-gpu": "gpu",
    "vhost-user-input": "input",
    "vhost-user-rng": "rng",
    "vhost-user-vsock": "vsock",
    "vhost-user-i2c": "i2c",
    "vhost-user-gpio": "gpio",
    "vhost-user-snd": "sound",
    "vhost-user-scmi": "scmi",
}


def peer_process(sock: socket.socket) -> dict[str, Any]:
    """pid, uid and program of the process at the other end (SO_PEERCRED, /proc)."""
    try:
        pid, uid, _gid = _UCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
    except OSError:
        return {}
    info: dict[str, Any] = {"pid": pid, "uid": uid}
    with contextlib.suppress(OSError):
        info["program"] = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    return info


def process_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return [part.decode(errors="replace") for part in file.read(65536).split(b"\0") if part]
    except OSError:
        return []


def _options(text: str) -> dict[str, str]:
    values = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        values[key] = value
    return values


def qemu_device_of_pid(pid: int, socket_path: str) -> str | None:
    """The device type of the QEMU process ``pid`` on ``socket_path``, if it is QEMU."""
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        cwd = "/"
    return qemu_device_for_socket(process_cmdline(pid), socket_path, cwd)


def qemu_device_for_socket(cmdline: list[str], socket_path: str, cwd: str = "/") -> str | None:
    """The vhost-user device type QEMU attached to ``socket_path`` (from its command line).

    Finds ``-chardev socket,id=X,path=P`` then ``-device vhost-user-blk-pci,chardev=X``
    (or ``-netdev vhost-user,chardev=X``): that names the device whose feature bits
    the trace shows."""
    real = os.path.realpath(socket_path)
    chardevs = set()
    for flag, value in itertools.pairwise(cmdline):
        if flag in ("-chardev", "--chardev"):
            opts = _options(value)
            path = opts.get("path")
            if path and os.path.realpath(os.path.join(cwd, path)) == real:
                chardevs.add(opts.get("id"))
    for flag, value in itertools.pairwise(cmdline):
        opts = _options(value)
        if opts.get("chardev") not in chardevs:
            continue
        if flag in ("-netdev", "--netdev") and value.startswith("vhost-user"):
            return "net"
        if flag in ("-device", "--device"):
            driver = value.split(",", 1)[0]
            for prefix, device in DEVICE_OF_QEMU_DEVICE.items():
                if driver.startswith(prefix):
                    return device
    return None
