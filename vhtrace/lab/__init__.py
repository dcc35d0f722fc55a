"""Drive the real vhost-user stack of this machine: QEMU, its back-ends and a tiny guest.

For the pytest plugin's record mode (a product feature: it boots QEMU against the
back-end under test), the interop matrix, and the repo's system tests, demo and
benchmarks, whose scenarios live repo-side in ``tests/support/``, not in the package.
A test typically builds an initramfs
whose /init runs a shell snippet (:mod:`~vhtrace.lab.guest`), starts a back-end
(:mod:`~vhtrace.lab.backends`), boots QEMU against it under TCG (:mod:`~vhtrace.lab.qemu`)
and reads back the ``VHT:key=value`` markers the guest printed. QEMU's chardev socket and
the back-end's socket are separate paths, so a recording proxy can be put in between.
:mod:`~vhtrace.lab.qmp` speaks QMP (``tests/support/migration.py`` drives postcopy with it).
:mod:`~vhtrace.lab.dpdk` drives dpdk-testpmd as either peer (virtio-user, vhost PMD), no
guest needed.

Programs are found by looking (Debian 12 or 13); :func:`missing` says in words what is
absent, for ``pytest.skip``. Standard library only.
"""

from vhtrace.lab.backends import Backend, BackendError, StorageDaemon, Virtiofsd, virtiofsd_flavor
from vhtrace.lab.dpdk import PortStats, Testpmd, TestpmdError, VhostPmd, VirtioUser
from vhtrace.lab.guest import (
    Initramfs,
    Markers,
    build_initramfs,
    parse_markers,
    read_disk_md5,
    tick_loop,
    virtiofs_roundtrip,
    write_pattern,
)
from vhtrace.lab.proc import LabError
from vhtrace.lab.programs import Kernel, LabUnavailable, missing, require
from vhtrace.lab.qemu import Qemu, QemuConfig, QemuError, VhostUserDevice, build_command
from vhtrace.lab.qmp import QmpClient, QmpError
from vhtrace.lab.workspace import Workspace

__all__ = [
    "Backend",
    "BackendError",
    "Initramfs",
    "Kernel",
    "LabError",
    "LabUnavailable",
    "Markers",
    "PortStats",
    "Qemu",
    "QemuConfig",
    "QemuError",
    "QmpClient",
    "QmpError",
    "StorageDaemon",
    "Testpmd",
    "TestpmdError",
    "VhostPmd",
    "VhostUserDevice",
    "VirtioUser",
    "Virtiofsd",
    "Workspace",
    "build_command",
    "build_initramfs",
    "missing",
    "parse_markers",
    "read_disk_md5",
    "require",
    "tick_loop",
    "virtiofs_roundtrip",
    "virtiofsd_flavor",
    "write_pattern",
]
