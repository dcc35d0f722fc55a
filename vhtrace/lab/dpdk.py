"""Drive DPDK's dpdk-testpmd as a vhost-user peer: virtio-user (front-end), vhost PMD (back-end).

testpmd is both ends of vhost-user with no guest: ``--vdev net_virtio_user0,path=SOCK``
makes it a front-end that shares its own (hugepage or memfd) memory, ``--vdev
net_vhost0,iface=SOCK`` a back-end built on DPDK's vhost library (the one OVS-DPDK
uses). Either side can listen or connect (virtio-user ``server=1``, vhost PMD
``client=1``).

testpmd runs interactively (``-i``) with its stdin a pipe: :meth:`Testpmd.start_forwarding`
types ``start`` (or ``start tx_first``, which injects a first burst so that two io-forwarding
testpmds loop packets between them), :meth:`Testpmd.port_stats` types ``show port stats
all`` and parses the answer. Its stdout is line-buffered through ``stdbuf`` so that the
answer reaches the log while it runs.

Memory: with ``hugepages=True`` (what DPDK users run) :func:`ensure_hugepages` reserves
2 MiB pages and mounts hugetlbfs when missing (root only); ``hugepages=False`` passes
``--no-huge`` (memfd-backed memory, which virtio-user can still share). Every instance
has its own ``--file-prefix`` so parallel testpmds do not collide.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self

from vhtrace.lab import programs
from vhtrace.lab.proc import LabError, LabProcess, ProcessView, check_socket_path, wait_until

ForwardMode = Literal["io", "mac", "macswap", "rxonly", "txonly", "flowgen", "csum"]

HUGEPAGE_KB = 2048
HUGEPAGES_SYSFS = Path(f"/sys/kernel/mm/hugepages/hugepages-{HUGEPAGE_KB}kB")
HUGETLBFS_MOUNT = Path("/dev/hugepages")
RUNTIME_DIR = Path("/var/run/dpdk")
PROMPT = "testpmd> "

_instance = itertools.count(1)


class TestpmdError(LabError):
    """testpmd did not start, did not answer, or its port did not come up."""


def _flag(value: bool) -> str:
    return "1" if value else "0"


@dataclass(frozen=True)
class VirtioUser:
    """``net_virtio_user0``: the vhost-user front-end, connecting to ``path`` (or listening on
    it with ``server``). None leaves an option at DPDK's default."""

    path: Path
    server: bool = False
    queues: int = 1
    packed_vq: bool = False
    in_order: bool | None = None
    mrg_rxbuf: bool | None = None
    queue_size: int | None = None

    @property
    def socket(self) -> Path:
        return check_socket_path(self.path)

    @property
    def listens(self) -> bool:
        return self.server

    def vdev(self) -> str:
        opts = [f"path={self.socket}", f"queues={self.queues}"]
        if self.server:
            opts.append("server=1")
        if self.packed_vq:
            opts.append("packed_vq=1")
        if self.in_order is not None:
            opts.append(f"in_order={_flag(self.in_order)}")
        if self.mrg_rxbuf is not None:
            opts.append(f"mrg_rxbuf={_flag(self.mrg_rxbuf)}")
        if self.queue_size is not None:
            opts.append(f"queue_size={int(self.queue_size)}")
        return "net_virtio_user0," + ",".join(opts)


@dataclass(frozen=True)
class VhostPmd:
    """``net_vhost0``: the vhost-user back-end, listening on ``iface`` (or, with ``client``,
    connecting to it and reconnecting when the front-end goes away)."""

    iface: Path
    client: bool = False
    queues: int = 1
    tso: bool | None = None

    @property
    def socket(self) -> Path:
        return check_socket_path(self.iface)

    @property
    def listens(self) -> bool:
        return not self.client

    def vdev(self) -> str:
        opts = [f"iface={self.socket}", f"queues={self.queues}"]
        if self.client:
            opts.append("client=1")
        if self.tso is not None:
            opts.append(f"tso={_flag(self.tso)}")
        return "net_vhost0," + ",".join(opts)


Port = VirtioUser | VhostPmd


@dataclass(frozen=True)
class PortStats:
    """One port's counters from ``show port stats all``."""

    rx_packets: int
    tx_packets: int
    rx_bytes: int
    tx_bytes: int


_STATS_BLOCK = re.compile(
    r"NIC statistics for port (\d+)\s+#+\s*"
    r"RX-packets:\s*(\d+)\s+RX-missed:\s*\d+\s+RX-bytes:\s*(\d+).*?"
    r"TX-packets:\s*(\d+)\s+TX-errors:\s*\d+\s+TX-bytes:\s*(\d+)",
    re.S,
)


def parse_port_stats(text: str) -> dict[int, PortStats]:
    """The last counters of each port printed in ``text`` (testpmd's stats blocks)."""
    found: dict[int, PortStats] = {}
    for match in _STATS_BLOCK.finditer(text):
        port, rx, rx_bytes, tx, tx_bytes = (int(g) for g in match.groups())
        found[port] = PortStats(rx, tx, rx_bytes, tx_bytes)
    return found


def hugetlbfs_mount() -> Path | None:
    """A mounted hugetlbfs of 2 MiB pages, from /proc/mounts."""
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "hugetlbfs":
            opts = fields[3].split(",")
            if not any(o.startswith("pagesize=") and o != "pagesize=2M" for o in opts):
                return Path(fields[1])
    return None


def ensure_hugepages(pages: int) -> Path:
    """At least ``pages`` free 2 MiB hugepages and a hugetlbfs mount; the mount point.

    Raises the kernel's pool by the shortfall and mounts hugetlbfs on /dev/hugepages when
    none is mounted (both need root); TestpmdError says what could not be done."""
    try:
        free = int((HUGEPAGES_SYSFS / "free_hugepages").read_text())
        total = int((HUGEPAGES_SYSFS / "nr_hugepages").read_text())
    except (OSError, ValueError) as exc:
        raise TestpmdError(f"no 2 MiB hugepage pool: {HUGEPAGES_SYSFS}: {exc}") from None
    if free < pages:
        try:
            (HUGEPAGES_SYSFS / "nr_hugepages").write_text(str(total + pages - free))
        except OSError as exc:
            raise TestpmdError(
                f"{free} free 2 MiB hugepages, {pages} needed, and raising "
                f"{HUGEPAGES_SYSFS}/nr_hugepages failed: {exc.strerror} (run as root, or "
                "use hugepages=False for --no-huge)"
            ) from None
        free = int((HUGEPAGES_SYSFS / "free_hugepages").read_text())
        if free < pages:
            raise TestpmdError(f"the kernel gave {free} free 2 MiB hugepages, {pages} needed")
    mount = hugetlbfs_mount()
    if mount is not None:
        return mount
    HUGETLBFS_MOUNT.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "nodev", str(HUGETLBFS_MOUNT)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise TestpmdError(
            f"no hugetlbfs mounted and mounting one on {HUGETLBFS_MOUNT} failed: "
            f"{result.stderr.strip() or result.returncode}"
        )
    return HUGETLBFS_MOUNT


def testpmd_command(
    port: Port,
    *,
    prefix: str,
    hugepages: bool = True,
    memory_mb: int = 128,
    forward_mode: ForwardMode = "io",
    mbufs: int = 4096,
    extra_eal: Sequence[str] = (),
    extra_app: Sequence[str] = (),
    program: Path | None = None,
) -> list[str]:
    """argv of an interactive testpmd with the one vhost-user port ``port``.

    Cores 0 and 1 (a main and a forwarding lcore; testpmd needs both); ``mbufs`` keeps
    the packet pool small enough for ``memory_mb``."""
    program = program or programs.testpmd()
    argv = [str(program), "-l", "0,1", "--no-pci", "-m", str(memory_mb), f"--file-prefix={prefix}"]
    if not hugepages:
        argv.append("--no-huge")
    if isinstance(port, VirtioUser):
        # One memory region per hugepage otherwise: more than vhost-user's 8.
        argv.append("--single-file-segments")
    argv += ["--vdev", port.vdev(), *map(str, extra_eal), "--"]
    argv += ["-i", "--no-mlockall", f"--total-num-mbufs={mbufs}", f"--forward-mode={forward_mode}"]
    if port.queues > 1:
        argv += [f"--rxq={port.queues}", f"--txq={port.queues}"]
    argv += [str(a) for a in extra_app]
    stdbuf = shutil.which("stdbuf")
    return [stdbuf, "-oL", *argv] if stdbuf else argv


class Testpmd(ProcessView):
    """An interactive dpdk-testpmd with one vhost-user port; a context manager that quits it.

    ``start()`` returns once testpmd prompts (its port is probed; a virtio-user client
    has connected and negotiated by then) and, for a listening port, once it listens."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self,
        port: Port,
        log_path: Path,
        *,
        name: str = "testpmd",
        hugepages: bool = True,
        memory_mb: int = 128,
        forward_mode: ForwardMode = "io",
        extra_eal: Sequence[str] = (),
        extra_app: Sequence[str] = (),
        program: Path | None = None,
    ) -> None:
        self.port = port
        self.socket = port.socket
        self.name = name
        self.hugepages = hugepages
        self.memory_mb = memory_mb
        self.log_path = Path(log_path)
        self.prefix = f"vht{os.getpid()}-{next(_instance)}-{name}"
        self.argv = testpmd_command(
            port,
            prefix=self.prefix,
            hugepages=hugepages,
            memory_mb=memory_mb,
            forward_mode=forward_mode,
            extra_eal=extra_eal,
            extra_app=extra_app,
            program=program,
        )
        # stderr straight to the log: its prompt is looked for there (LabProcess).
        self._proc = LabProcess(
            self.argv, self.log_path, name=name, stdin_pipe=True, fold_stderr=False
        )

    @property
    def is_frontend(self) -> bool:
        return isinstance(self.port, VirtioUser)

    def start(self, timeout: float = 60.0) -> Self:
        """Launch testpmd and wait for its prompt (and its socket, if it listens)."""
        self.launch(timeout)
        return self.wait_ready(timeout)

    def launch(self, timeout: float = 60.0) -> Self:
        """Start testpmd; for a listening port, wait until it listens.

        A listening virtio-user (``server=1``) waits for its back-end before it prompts:
        launch it, connect the back-end, then :meth:`wait_ready`."""
        if self.hugepages:
            # Each testpmd takes memory_mb of pages; a little more for its rounding.
            ensure_hugepages(self.memory_mb // 2 + 8)
        self._proc.start()
        if self.port.listens:
            try:
                self._proc.wait_listening(self.socket, timeout)
            except LabError as exc:
                self.stop()
                raise TestpmdError(str(exc)) from None
        return self

    def wait_ready(self, timeout: float = 60.0) -> Self:
        """Wait for testpmd's prompt: its port is probed and started."""
        try:
            self._wait_output(PROMPT, timeout)
        except TestpmdError:
            self.stop()
            raise
        return self

    def _wait_output(self, text: str, timeout: float, since: int = 0) -> str:
        """The log from byte ``since`` once it holds ``text``; TestpmdError if it never does."""
        wait_until(lambda: text in self.log_text()[since:] or not self.alive(), timeout)
        log = self.log_text()[since:]
        if text not in log:
            why = "exited" if not self.alive() else f"not seen after {timeout:g} s"
            raise TestpmdError(self._proc.describe_failure(f"{text!r} {why}"))
        return log

    def command(self, line: str, timeout: float = 20.0) -> str:
        """Type ``line`` at the prompt; what testpmd printed until its next prompt."""
        since = len(self.log_text())
        self._proc.send(line.rstrip("\n") + "\n")
        # testpmd echoes the line after the prompt already in the log, prints its answer,
        # then a new prompt: the answer is complete once that one appears.
        return self._wait_output(PROMPT, timeout, since)

    def start_forwarding(self, tx_first: bool = False) -> None:
        """``start`` forwarding; with ``tx_first`` send a first burst on every port."""
        self.command("start tx_first" if tx_first else "start")

    def stop_forwarding(self) -> str:
        """``stop`` forwarding; testpmd's forward statistics."""
        return self.command("stop")

    def port_stats(self, timeout: float = 20.0) -> dict[int, PortStats]:
        """Every port's counters now (``show port stats all``)."""
        stats = parse_port_stats(self.command("show port stats all", timeout))
        if not stats:
            raise TestpmdError(self._proc.describe_failure("no answer to 'show port stats all'"))
        return stats

    def stats(self) -> PortStats:
        """Port 0's counters (the vhost-user port)."""
        return self.port_stats()[0]

    def wait_packets(self, rx: int = 1, tx: int = 0, timeout: float = 30.0) -> PortStats:
        """Port 0's counters once it has received ``rx`` and sent ``tx`` packets."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if stats.rx_packets >= rx and stats.tx_packets >= tx:
                return stats
            if time.monotonic() > deadline:
                raise TestpmdError(self._proc.describe_failure(
                    f"port 0 counted rx={stats.rx_packets} tx={stats.tx_packets} after "
                    f"{timeout:g} s, expected rx>={rx} tx>={tx}"))  # fmt: skip
            time.sleep(0.5)

    def quit(self, timeout: float = 30.0) -> int:
        """``quit`` and wait for testpmd to close its port and exit; its exit status."""
        if self.alive():
            with contextlib.suppress(LabError):
                self._proc.send("quit\n")
        try:
            return self._proc.wait_exit(timeout)
        except LabError as exc:
            self._proc.stop()
            raise TestpmdError(str(exc)) from None

    def stop(self, timeout: float = 10.0) -> int | None:
        """Quit if still running (SIGTERM, then SIGKILL, if it does not)."""
        if self._proc.proc is None:
            return None
        if self.alive():
            try:
                rc = self.quit(timeout)
            except TestpmdError:
                pass
            else:
                self._remove_leftovers()
                return rc
        rc = self._proc.stop()
        self._remove_leftovers()
        return rc

    def kill(self) -> int | None:
        """SIGKILL at once, as a crash would: no goodbye on the socket."""
        rc = self._proc.stop(timeout=0)
        self._remove_leftovers()
        return rc

    def _remove_leftovers(self) -> None:
        """Its hugepage files and runtime directory (``--huge-unlink`` does not go with
        ``--single-file-segments``, and a killed testpmd leaves both behind)."""
        mount = hugetlbfs_mount() if self.hugepages else None
        if mount is not None:
            for leftover in mount.glob(f"{self.prefix}map_*"):
                leftover.unlink(missing_ok=True)
        shutil.rmtree(RUNTIME_DIR / self.prefix, ignore_errors=True)


# ------------------------------------------------------------------ two testpmds

DPDK_PACKETS = 500
"""Packets each testpmd must have received and sent before a DPDK scenario ends."""


def loop_packets(frontend: Testpmd, backend: Testpmd,
                 packets: int = DPDK_PACKETS) -> tuple[PortStats, PortStats]:  # fmt: skip
    """Both testpmds forwarding (the front-end injects a first burst), until each has
    received and sent ``packets``; their counters (front-end, back-end)."""
    backend.start_forwarding()
    frontend.start_forwarding(tx_first=True)
    return (
        frontend.wait_packets(rx=packets, tx=packets, timeout=60),
        backend.wait_packets(rx=packets, tx=packets, timeout=60),
    )
