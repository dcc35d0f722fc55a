"""Find the programs and the guest kernel of the real vhost-user stack on this machine.

Machines run Debian 12 or 13, so nothing here relies on a fixed path or version: each
program is looked up on PATH and in the few places Debian installs it, and the kernel is
the newest /boot/vmlinuz-* that has a matching /lib/modules directory. Every lookup can be
overridden with an environment variable (``VHTRACE_QEMU``, ``VHTRACE_QSD``,
``VHTRACE_VIRTIOFSD``, ``VHTRACE_QEMU_IMG``, ``VHTRACE_BUSYBOX``, ``VHTRACE_KERNEL``,
``VHTRACE_TESTPMD``) so a
developer can point the lab at a self-built QEMU.

:func:`missing` turns absent pieces into human-readable reasons, so a test can say
``pytest.skip(reason)`` and the reader knows which package to install.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: What :func:`missing` can check, and the hint shown when it is absent.
INSTALL_HINTS: dict[str, str] = {
    "qemu": "qemu-system-x86_64 not found (apt-get install qemu-system-x86)",
    "qsd": "qemu-storage-daemon not found (apt-get install qemu-system-common)",
    "virtiofsd": (
        "virtiofsd not found (apt-get install virtiofsd on Debian 13, "
        "qemu-system-common on Debian 12)"
    ),
    "qemu-img": "qemu-img not found (apt-get install qemu-utils)",
    "testpmd": "dpdk-testpmd not found (apt-get install dpdk-dev)",
    "ovs-dpdk": (
        "Open vSwitch with DPDK not found: ovs-vswitchd-dpdk, ovsdb-server, ovs-vsctl, "
        "ovs-ofctl (apt-get install openvswitch-switch-dpdk)"
    ),
    "busybox": "a static busybox not found (apt-get install busybox-static)",
    "kernel": (
        "no guest kernel: no readable /boot/vmlinuz-* with a matching /lib/modules/<version> "
        "(apt-get install linux-image-amd64)"
    ),
    "hugepages": (
        "no 2 MiB hugepages for DPDK: run as root (the lab reserves them and mounts "
        "hugetlbfs), or reserve 300 in /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages "
        "and mount hugetlbfs"
    ),
    "userfaultfd": (
        "userfaultfd unavailable for postcopy: run as root or set vm.unprivileged_userfaultfd=1"
    ),
}

#: Everything a guest-booting test needs, in the order reasons are reported.
ALL_NEEDS: tuple[str, ...] = ("qemu", "qsd", "virtiofsd", "qemu-img", "busybox", "kernel")


@dataclass(frozen=True)
class Kernel:
    """A guest kernel image and the module tree built for it."""

    version: str
    image: Path
    modules_dir: Path


def _env_path(var: str) -> Path | None:
    value = os.environ.get(var)
    return Path(value) if value else None


def _executable(path: Path | None) -> Path | None:
    if path is not None and path.is_file() and os.access(path, os.X_OK):
        return path
    return None


def _first_program(env_var: str, names: Iterable[str], paths: Iterable[str] = ()) -> Path | None:
    override = _env_path(env_var)
    if override is not None:
        return _executable(override)
    for name in names:
        found = shutil.which(name)
        if found:
            return Path(found)
    for candidate in paths:
        hit = _executable(Path(candidate))
        if hit is not None:
            return hit
    return None


def find_qemu() -> Path | None:
    """The x86_64 system emulator: the real vhost-user front-end."""
    return _first_program("VHTRACE_QEMU", ["qemu-system-x86_64"], ["/usr/bin/qemu-system-x86_64"])


def find_qsd() -> Path | None:
    """qemu-storage-daemon: the vhost-user-blk back-end (libvhost-user inside)."""
    return _first_program("VHTRACE_QSD", ["qemu-storage-daemon"], ["/usr/bin/qemu-storage-daemon"])


def find_virtiofsd() -> Path | None:
    """virtiofsd: C one in /usr/lib/qemu on Debian 12, Rust one in /usr/libexec on Debian 13."""
    return _first_program(
        "VHTRACE_VIRTIOFSD",
        ["virtiofsd"],
        ["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd", "/usr/lib/virtiofsd"],
    )


def find_qemu_img() -> Path | None:
    """qemu-img, to create disk images in any format QSD can export."""
    return _first_program("VHTRACE_QEMU_IMG", ["qemu-img"], ["/usr/bin/qemu-img"])


def find_testpmd() -> Path | None:
    """dpdk-testpmd: DPDK's virtio-user front-end and vhost PMD back-end in one program."""
    return _first_program("VHTRACE_TESTPMD", ["dpdk-testpmd"], ["/usr/bin/dpdk-testpmd"])


def find_ovs_dpdk() -> Path | None:
    """Debian's DPDK build of ovs-vswitchd (openvswitch-switch-dpdk), with the OVS tools."""
    vswitchd = _first_program(
        "VHTRACE_OVS_VSWITCHD",
        ["ovs-vswitchd-dpdk"],
        ["/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk"],
    )
    tools = all(shutil.which(t) for t in ("ovsdb-server", "ovsdb-tool", "ovs-vsctl", "ovs-ofctl"))
    return vswitchd if tools else None


def find_busybox() -> Path | None:
    """A statically linked busybox: the whole guest userland of the initramfs."""
    override = _env_path("VHTRACE_BUSYBOX")
    candidates = [override] if override else []
    candidates += [Path("/bin/busybox"), Path("/usr/bin/busybox")]
    which = shutil.which("busybox")
    if which:
        candidates.append(Path(which))
    for candidate in candidates:
        hit = _executable(candidate)
        if hit is not None and _is_static(hit):
            return hit
        if override is not None:
            return None
    return None


def _is_static(path: Path) -> bool:
    """A dynamically linked busybox would need libc in the initramfs: refuse it."""
    try:
        with path.open("rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    # A dynamic ELF carries the interpreter path in a PT_INTERP segment near the start.
    return head.startswith(b"\x7fELF") and b"/ld-linux" not in head and b"ld-musl" not in head


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.\-+~]", version))


def find_kernel() -> Kernel | None:
    """The newest readable /boot/vmlinuz-* whose /lib/modules/<version> directory exists."""
    override = _env_path("VHTRACE_KERNEL")
    if override is not None:
        version = override.name.removeprefix("vmlinuz-")
        modules = Path("/lib/modules") / version
        if os.access(override, os.R_OK) and modules.is_dir():
            return Kernel(version, override, modules)
        return None
    found: list[Kernel] = []
    for image in Path("/boot").glob("vmlinuz-*"):
        version = image.name.removeprefix("vmlinuz-")
        modules = Path("/lib/modules") / version
        if image.is_file() and os.access(image, os.R_OK) and modules.is_dir():
            found.append(Kernel(version, image, modules))
    if not found:
        return None
    return max(found, key=lambda k: _version_key(k.version))


def userfaultfd_available() -> bool:
    """Postcopy needs userfaultfd: root, or vm.unprivileged_userfaultfd=1."""
    if os.geteuid() == 0:
        return True
    try:
        return Path("/proc/sys/vm/unprivileged_userfaultfd").read_text().strip() == "1"
    except OSError:
        return False


def hugepages_available() -> bool:
    """DPDK's memory: root can reserve 2 MiB hugepages; else enough must be free already."""
    if os.geteuid() == 0:
        return True
    try:
        free = int(Path("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages").read_text())
    except (OSError, ValueError):
        return False
    return free >= 300


_FINDERS = {
    "qemu": find_qemu,
    "qsd": find_qsd,
    "virtiofsd": find_virtiofsd,
    "qemu-img": find_qemu_img,
    "busybox": find_busybox,
    "testpmd": find_testpmd,
    "ovs-dpdk": find_ovs_dpdk,
    "kernel": find_kernel,
    "userfaultfd": userfaultfd_available,
    "hugepages": hugepages_available,
}


def missing(*needs: str) -> list[str]:
    """Reasons why the named pieces (default: all of ALL_NEEDS) are unusable; empty if none.

    Names: qemu, qsd, virtiofsd, qemu-img, busybox, testpmd, ovs-dpdk, kernel, userfaultfd,
    hugepages.
    """
    wanted = needs or ALL_NEEDS
    unknown = [n for n in wanted if n not in _FINDERS]
    if unknown:
        raise ValueError(f"unknown lab requirement(s) {unknown}; known: {sorted(_FINDERS)}")
    return [INSTALL_HINTS[n] for n in wanted if not _FINDERS[n]()]


class LabUnavailable(RuntimeError):
    """Raised by :func:`require` when a piece of the real stack is absent."""


def require(*needs: str) -> None:
    """Raise LabUnavailable listing every reason from :func:`missing`."""
    reasons = missing(*needs)
    if reasons:
        raise LabUnavailable("; ".join(reasons))


def _need(finder, name: str):
    found = finder()
    if not found:
        raise LabUnavailable(INSTALL_HINTS[name])
    return found


def qemu() -> Path:
    """Path of qemu-system-x86_64, or LabUnavailable with an install hint."""
    return _need(find_qemu, "qemu")


def qsd() -> Path:
    """Path of qemu-storage-daemon, or LabUnavailable with an install hint."""
    return _need(find_qsd, "qsd")


def virtiofsd() -> Path:
    """Path of virtiofsd, or LabUnavailable with an install hint."""
    return _need(find_virtiofsd, "virtiofsd")


def qemu_img() -> Path:
    """Path of qemu-img, or LabUnavailable with an install hint."""
    return _need(find_qemu_img, "qemu-img")


def testpmd() -> Path:
    """Path of dpdk-testpmd, or LabUnavailable with an install hint."""
    return _need(find_testpmd, "testpmd")


def ovs_dpdk() -> Path:
    """Path of ovs-vswitchd-dpdk, or LabUnavailable with an install hint."""
    return _need(find_ovs_dpdk, "ovs-dpdk")


def busybox() -> Path:
    """Path of a static busybox, or LabUnavailable with an install hint."""
    return _need(find_busybox, "busybox")


def kernel() -> Kernel:
    """The guest kernel, or LabUnavailable with an install hint."""
    return _need(find_kernel, "kernel")


@functools.cache
def program_version(program: Path) -> tuple[int, ...]:
    """Numeric version of a QEMU-family program from ``--version`` ((0,) if unknown).

    Option names change between QEMU releases (e.g. chardev ``reconnect`` became
    ``reconnect-ms`` in 9.2), so command builders ask this instead of assuming 7.2.
    """
    try:
        out = subprocess.run(
            [str(program), "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return (0,)
    match = re.search(r"version\s+(\d+(?:\.\d+)*)", out)
    return tuple(int(p) for p in match.group(1).split(".")) if match else (0,)
