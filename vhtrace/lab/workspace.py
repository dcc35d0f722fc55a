"""A per-test scratch area that builds lab pieces and cleans all of them up.

Unix socket paths must fit in 107 bytes, and pytest's tmp_path often does not, so sockets
live in a short private directory under /tmp while images and logs stay in the (kept,
inspectable) data directory. Every process the workspace creates is stopped on close,
even when a test fails half-way, so no QEMU outlives its test.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from vhtrace.lab import guest
from vhtrace.lab.backends import Backend, StorageDaemon, Virtiofsd
from vhtrace.lab.dpdk import Port, Testpmd
from vhtrace.lab.guest import Initramfs
from vhtrace.lab.ovs import OvsDpdk
from vhtrace.lab.qemu import Qemu, QemuConfig, VhostUserDevice
from vhtrace.lab.recording import RecordingProxy


class Workspace:
    """Scratch directories plus factories for QEMU, QSD and virtiofsd that it will stop."""

    def __init__(self, data_dir: Path, cache_dir: Path, socket_dir: Path | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir = Path(cache_dir)
        self._own_socket_dir = socket_dir is None
        self.socket_dir = (
            Path(tempfile.mkdtemp(prefix="vht-", dir="/tmp")) if socket_dir is None else socket_dir
        )
        self._started: list[Qemu | Backend | RecordingProxy | Testpmd | OvsDpdk] = []

    def path(self, name: str) -> Path:
        """A file in the data directory (images, logs, shared dirs)."""
        return self.data_dir / name

    def sock(self, name: str) -> Path:
        """A short unix socket path ``<socket_dir>/<name>.sock``."""
        return self.socket_dir / f"{name}.sock"

    def initramfs(
        self,
        script: str,
        *,
        devices: Iterable[str] = guest.ALL_DEVICES,
        files: Mapping[str, bytes] | None = None,
    ) -> Initramfs:
        """Build (or reuse from the cache) an initramfs running ``script``."""
        return guest.build_initramfs(self.cache_dir, script, devices=devices, files=files)

    def qemu(
        self,
        initramfs: Initramfs,
        devices: Sequence[VhostUserDevice] = (),
        *,
        name: str = "qemu",
        qmp: bool = False,
        incoming_defer: bool = False,
        **config: Any,
    ) -> Qemu:
        """A started QEMU booting ``initramfs`` (log ``<name>.log``, QMP ``<name>-qmp.sock``)."""
        cfg = QemuConfig(
            kernel=initramfs.kernel.image,
            initrd=initramfs.path,
            devices=tuple(devices),
            qmp=self.sock(f"{name}-qmp") if qmp else None,
            incoming_defer=incoming_defer,
            **config,
        )
        vm = Qemu(cfg, self.path(f"{name}.log"), name=name)
        self._started.append(vm)
        return vm.start()

    def qsd(
        self, image: Path, *, name: str = "qsd", socket: Path | None = None, **options: Any
    ) -> StorageDaemon:
        """A started, listening qemu-storage-daemon exporting ``image`` on ``<name>.sock``."""
        daemon = StorageDaemon(
            image, socket or self.sock(name), self.path(f"{name}.log"), name=name, **options
        )
        self._started.append(daemon)
        return daemon.start()

    def virtiofsd(
        self,
        shared_dir: Path,
        *,
        name: str = "virtiofsd",
        socket: Path | None = None,
        **options: Any,
    ) -> Virtiofsd:
        """A started, listening virtiofsd sharing ``shared_dir`` on ``<name>.sock``."""
        daemon = Virtiofsd(
            shared_dir, socket or self.sock(name), self.path(f"{name}.log"), name=name, **options
        )
        self._started.append(daemon)
        return daemon.start()

    def testpmd(self, port: Port, *, name: str = "testpmd", start: bool = True,
                **options: Any) -> Testpmd:  # fmt: skip
        """A dpdk-testpmd with the vhost-user ``port`` (virtio-user or vhost PMD), log
        ``<name>.log``; started (prompting, listening if it listens) unless ``start=False``."""
        pmd = Testpmd(port, self.path(f"{name}.log"), name=name, **options)
        self._started.append(pmd)
        return pmd.start() if start else pmd

    def ovs(self, *, name: str = "ovs", client_of: Path | None = None) -> OvsDpdk:
        """A started private OVS-DPDK with one vhost-user port that loops packets back;
        it listens on ``.socket`` unless ``client_of`` (a listening front-end) is given."""
        switch = OvsDpdk(self.socket_dir / name, self.data_dir, client_of=client_of, name=name)
        self._started.append(switch)
        return switch.start()

    def mockbackend(
        self,
        *args: str | Path,
        name: str = "mockbackend",
        socket: Path | None = None,
        connect: bool = False,
    ) -> Backend:
        """A started ``mockbackend --socket <name>.sock ARGS`` (the project's own back-end).

        With ``connect`` it is a client of a listening QEMU (or recorder) at ``socket``
        and is only launched, not waited for."""
        path = socket or self.sock(name)
        argv = [sys.executable, "-m", "mockbackend.cli", "--socket", str(path), *map(str, args)]
        if connect:
            argv.append("--connect")
        daemon = Backend(argv, path, self.path(f"{name}.log"), name=name)
        self._started.append(daemon)
        if connect:
            daemon.launch()
            return daemon
        return daemon.start()

    def record(
        self,
        frontend: Path,
        backend: Path,
        *,
        name: str = "record",
        trace: Path | None = None,
        backend_connects: bool = False,
        extra_args: Sequence[str] = (),
    ) -> RecordingProxy:
        """A started ``vhtrace record`` between ``frontend`` and ``backend`` sockets.

        The trace goes to ``<name>.vht`` in the data directory unless ``trace`` says."""
        proxy = RecordingProxy(
            frontend,
            backend,
            trace or self.path(f"{name}.vht"),
            self.path(f"{name}.log"),
            backend_connects=backend_connects,
            extra_args=tuple(extra_args),
            name=name,
        )
        self._started.append(proxy)
        return proxy.start()

    def close(self) -> None:
        """Stop every process started here (newest first) and remove the socket directory."""
        while self._started:
            self._started.pop().stop()
        if self._own_socket_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
