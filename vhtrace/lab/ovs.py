"""Open vSwitch with DPDK (Debian's openvswitch-switch-dpdk) as a vhost-user back-end.

OVS-DPDK serves vhost-user ports through DPDK's vhost library, as the vhost PMD does, but
inside a switch: a private ovsdb-server and ``ovs-vswitchd-dpdk`` run in a scratch
directory (their own database, sockets and logs; nothing of the system's OVS is touched),
one netdev bridge holds one vhost-user port, and an OpenFlow rule sends every packet back
out of the port it came in on, so a front-end that sends gets its packets back.

``dpdkvhostuser`` ports listen (on ``<dir>/<port>``: OVS_RUNDIR, the default vhost-sock-dir), a
``dpdkvhostuserclient`` port connects to the front-end's socket (virtio-user ``server=1``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self

from vhtrace.lab import programs
from vhtrace.lab.dpdk import ensure_hugepages
from vhtrace.lab.proc import LabError, LabProcess, check_socket_path, is_listening, wait_until

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
MEMORY_MB = 256


class OvsError(LabError):
    """OVS did not start, or a command to it failed."""


class OvsDpdk:
    """A private OVS-DPDK with bridge ``br0`` and one vhost-user port; stops on exit."""

    def __init__(self, directory: Path, log_dir: Path, *, port: str = "vhu0",
                 client_of: Path | None = None, name: str = "ovs") -> None:  # fmt: skip
        self.dir = Path(directory)
        self.log_dir = Path(log_dir)
        self.port = port
        self.client_of = check_socket_path(client_of) if client_of else None
        self.name = name
        self.socket = check_socket_path(self.dir / port)
        """Where a listening (dpdkvhostuser) port listens."""
        self.db = self.dir / "db.sock"
        self._ovsdb: LabProcess | None = None
        self._vswitchd: LabProcess | None = None

    def _run(self, *argv: str, timeout: float = 30.0) -> str:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise OvsError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def vsctl(self, *args: str) -> str:
        return self._run("ovs-vsctl", f"--db=unix:{self.db}", "--timeout=30", *args)

    def start(self, timeout: float = 60.0) -> Self:
        """Database, switch, bridge, port and the loop-back flow; the port ready."""
        vswitchd = programs.ovs_dpdk()
        ensure_hugepages(MEMORY_MB // 2 + 8)
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "conf.db"
        conf.unlink(missing_ok=True)
        self._run("ovsdb-tool", "create", str(conf), str(SCHEMA))
        ovsdb = ["ovsdb-server", f"--remote=punix:{self.db}", f"--unixctl={self.dir}/ovsdb.ctl"]
        self._ovsdb = LabProcess([*ovsdb, str(conf)], self.log_dir / f"{self.name}-ovsdb.log",
                                 name=f"{self.name}-ovsdb")  # fmt: skip
        self._ovsdb.start()
        self._ovsdb.wait_listening(self.db, timeout)
        self.vsctl("--no-wait", "init")
        self.vsctl("--no-wait", "set", "Open_vSwitch", ".", "other_config:dpdk-init=true",
                   f"other_config:dpdk-socket-mem={MEMORY_MB}",
                   f"other_config:dpdk-socket-limit={MEMORY_MB}",
                   "other_config:dpdk-lcore-mask=0x1", "other_config:pmd-cpu-mask=0x2",
                   f"other_config:dpdk-extra=--no-pci --file-prefix=vht-{self.name}")  # fmt: skip
        self._vswitchd = LabProcess(
            [str(vswitchd), f"unix:{self.db}", f"--unixctl={self.dir}/vswitchd.ctl"],
            self.log_dir / f"{self.name}-vswitchd.log", name=f"{self.name}-vswitchd",
            env={"OVS_RUNDIR": str(self.dir), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})  # fmt: skip
        self._vswitchd.start()
        self.vsctl("add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev")
        if self.client_of is None:
            self.vsctl("add-port", "br0", self.port, "--", "set", "Interface", self.port,
                       "type=dpdkvhostuser")  # fmt: skip
            if not wait_until(lambda: is_listening(self.socket), timeout):
                raise OvsError(self._vswitchd.describe_failure(f"no {self.socket}"))
        else:
            self.vsctl("add-port", "br0", self.port, "--", "set", "Interface", self.port,
                       "type=dpdkvhostuserclient",
                       f"options:vhost-server-path={self.client_of}")  # fmt: skip
        mgmt = f"unix:{self.dir}/br0.mgmt"
        self._run("ovs-ofctl", "del-flows", mgmt)
        self._run("ovs-ofctl", "add-flow", mgmt, f"in_port={self.port},actions=in_port")
        return self

    def log_text(self) -> str:
        return self._vswitchd.log_text() if self._vswitchd else ""

    def stop(self) -> None:
        """Stop the switch and its database (SIGTERM, then SIGKILL)."""
        for proc in (self._vswitchd, self._ovsdb):
            if proc is not None:
                proc.stop()
        shutil.rmtree(Path("/var/run/dpdk") / f"vht-{self.name}", ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
