"""The sockets of a recording proxy: listening, connecting, and who is on the other end."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import socket
import stat
import struct
from typing import Any

SUN_PATH_MAX = 107
"""The longest unix socket path in bytes: sun_path holds 108, the last one a NUL."""


class EndpointError(Exception):
    """A socket path that cannot be used (in use, not a socket, no permission)."""


def check_path_length(path: str, what: str = "") -> None:
    """Raise EndpointError for a path too long for sun_path (the kernel would refuse it)."""
    length = len(os.fsencode(path))
    if length > SUN_PATH_MAX:
        where = f"{what} " if what else ""
        raise EndpointError(
            f"{where}{path}: socket path is {length} bytes; expected at most {SUN_PATH_MAX} "
            "(the size of sun_path); use a shorter or relative path"
        )


def listen_unix(path: str, mode: int = 0o600, backlog: int = 16) -> socket.socket:
    """A non-blocking listening socket at ``path``, created with ``mode`` (default 0600).

    A stale socket file (nobody listening) is replaced; a live one is an error. Who
    listens is read off /proc/net/unix first, so that the check does not connect to a
    live recorder (which would see a connection come and go)."""
    check_path_length(path)
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise EndpointError(f"{path}: exists and is not a socket")
        if listening_in_procfs(path):
            raise EndpointError(f"{path}: something is already listening there")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale: nobody accepts on it
        else:
            raise EndpointError(f"{path}: something is already listening there")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old_umask = os.umask(0o177)  # no window where the socket is open to others
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise EndpointError(f"{path}: cannot listen: {exc.strerror or exc}") from exc
    finally:
        os.umask(old_umask)
    os.chmod(path, mode)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


_SO_ACCEPTCON = 0x10000


def listening_in_procfs(path: str) -> bool:
    """True if /proc/net/unix lists a listening socket bound to ``path`` (as given or absolute).

    A socket bound by a relative path from another directory is not recognised here: the
    caller's connect probe catches it."""
    names = {path, os.path.abspath(path)}
    try:
        with open("/proc/net/unix") as table:
            next(table, None)
            for line in table:
                fields = line.split(None, 7)
                if (len(fields) == 8 and fields[7].rstrip("\n") in names
                        and int(fields[3], 16) & _SO_ACCEPTCON):  # fmt: skip
                    return True
    except (OSError, ValueError):
        pass
    return False


RETRY_ERRNOS = {errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN}


def try_connect(path: str) -> socket.socket | None:
    """Connect now, or None if nobody listens yet (retry later); other errors raise."""
    check_path_length(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        if exc.errno in RETRY_ERRNOS:
            return None
        raise EndpointError(f"{path}: cannot connect: {exc.strerror or exc}") from exc
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
