"""The interop matrix: every front-end x back-end pair of this machine, run for real.

Rows are pairs (QEMU or DPDK virtio-user in front; qemu-storage-daemon, virtiofsd, the
DPDK vhost PMD, OVS-DPDK or mockbackend behind), columns are how vhtrace sits between:

* **direct**: the two talk straight to each other; the data path checked (the guest's
  disk md5, files through virtio-fs, packets counted on both sides);
* **record**: the same through ``vhtrace record``; the data path checked again and the
  trace read back with no error finding (or only the known ones, named);
* **replay**: the recorded front-end played against a fresh back-end
  (``vhtrace replay --backend``), exit 0;
* **mock**: the recorded back-end served to a fresh front-end (``vhtrace replay
  --serve``: vhtrace mocks the back-end from its trace), exit 0.

A cell is ``ok``, ``FAIL`` (what went wrong), ``n/a`` (why the pair does not exist) or
``skip`` (what is missing here). ``python -m vhtrace.lab.interop`` (or
``scripts/interop-matrix``) runs them all and prints the table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

from vhtrace.lab import guest, images, programs
from vhtrace.lab.dpdk import DPDK_PACKETS, Testpmd, VhostPmd, VirtioUser, loop_packets
from vhtrace.lab.proc import is_listening, wait_until
from vhtrace.lab.qemu import VhostUserDevice
from vhtrace.lab.workspace import Workspace

MODES = ("direct", "record", "replay", "mock")
FRONTENDS = ("QEMU", "virtio-user")
BACKENDS = ("qemu-storage-daemon", "virtiofsd", "vhost PMD", "OVS-DPDK", "mockbackend")
MiB = 1 << 20
VHTRACE = [sys.executable, "-m", "vhtrace.cli.main"]


@dataclass(frozen=True)
class Cell:
    status: str
    """ok, FAIL, n/a or skip."""
    detail: str = ""

    def text(self) -> str:
        return f"{self.status} ({self.detail})" if self.detail else self.status


class CellFailed(Exception):
    """A cell's check did not hold; the message says what was seen."""


def check(condition: object, what: str) -> None:
    if not condition:
        raise CellFailed(what)


# --------------------------------------------------------------------------- helpers


def trace_errors(trace: Path) -> list[str]:
    """The error findings of a trace (``vhtrace show --json``, as a user would read it)."""
    done = subprocess.run([*VHTRACE, "show", str(trace), "--json"], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    check(done.returncode in (0, 1), f"show: {done.stderr.strip()}")
    errors = []
    for line in done.stdout.splitlines():
        item = json.loads(line)
        for finding in item.get("findings") or []:
            if finding.get("severity") == "error":
                errors.append(f"#{item.get('seq')} {finding.get('text')}")
        if item.get("type") == "finding" and item.get("severity") == "error":
            errors.append(str(item.get("text")))
    return errors


def replay(trace: Path, *args: str, timeout: float = 120) -> tuple[int, str]:
    """``vhtrace replay TRACE ARGS --json``: exit code and the first divergence's headline."""
    done = subprocess.run([*VHTRACE, "replay", str(trace), "--json", *args],
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        return done.returncode, (done.stderr.strip() or "no report").splitlines()[-1]
    divergences = report.get("divergences") or []
    return done.returncode, divergences[0].get("headline", "") if divergences else ""


def replay_result(code: int, headline: str) -> Cell:
    if code == 0:
        return Cell("ok")
    return Cell("FAIL", f"exit {code}: {headline}")


def replay_against(trace: Path, backend: Path) -> Cell:
    return replay_result(*replay(trace, "--backend", str(backend)))


class Served:
    """``vhtrace replay TRACE --serve SOCK`` in the background."""

    def __init__(self, trace: Path, sock: Path, *args: str) -> None:
        self.sock = sock
        self.proc = subprocess.Popen([*VHTRACE, "replay", str(trace), "--serve", str(sock),
                                      "--json", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip
        up = wait_until(lambda: is_listening(sock) or self.proc.poll() is not None, 30)
        check(up and self.proc.poll() is None, "the served back-end never listened")

    def result(self, timeout: float = 60) -> Cell:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return Cell("FAIL", f"replay --serve still running after {timeout:g} s")
        try:
            report = json.loads(out)
        except json.JSONDecodeError:
            return Cell("FAIL", (err.strip() or "no report").splitlines()[-1])
        divergences = report.get("divergences") or []
        return replay_result(self.proc.returncode,
                             divergences[0].get("headline", "") if divergences else "")  # fmt: skip

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def only_known_errors(errors: list[str], known: tuple[str, ...] = ()) -> Cell:
    unknown = [e for e in errors if not any(k in e for k in known)]
    if unknown:
        return Cell("FAIL", f"{len(unknown)} error findings, first: {unknown[0]}")
    return Cell("ok", f"{len(errors)} known error findings" if errors else "")


class Stoppable(Protocol):
    socket: Path

    def stop(self) -> object: ...


def net_backend(lab: Workspace, kind: str, name: str, live: list[Stoppable]) -> Stoppable:
    """A fresh net back-end (``pmd``, ``ovs`` or ``mock``) on its own socket, the ones
    started before for this row stopped first (two OVS-DPDKs do not share the machine)."""
    while live:
        live.pop().stop()
    started: Stoppable
    if kind == "pmd":
        started = lab.testpmd(VhostPmd(lab.sock(name)), name=name)
    elif kind == "ovs":
        started = lab.ovs(name=name)
    else:
        started = lab.mockbackend("--device", "net", name=name)
    live.append(started)
    return started


# --------------------------------------------------------------------------- QEMU rows


def _boot(lab: Workspace, script: str, kind: str, sock: Path, name: str, **device: object):
    initrd = lab.initramfs(script, devices=(kind,))
    with lab.qemu(initrd, [VhostUserDevice(kind, sock, **device)], name=name) as vm:  # type: ignore[arg-type]
        return vm.finish(timeout=240)


SERVED_PROBED = {"blk": r"\[vda\] \d+ 512-byte logical blocks"}
"""What a guest of a served back-end shows once its driver set the device up."""


def _serve_to_qemu(lab: Workspace, trace: Path, kind: str, **device: object) -> Cell:
    """Serve a recorded back-end to a fresh QEMU whose guest only probes the device.

    The served back-end has no data plane: a blk guest is stopped (SIGTERM) once its
    driver printed the disk size; the others power off after the probe."""
    served = Served(trace, lab.sock(f"served-{kind}"))
    try:
        # A blk guest would read its partition table: wait for the disk, no more. The
        # others power off as the recorded guest did (QEMU stopped by SIGTERM does not
        # disable a vhost-user-net ring before GET_VRING_BASE; a guest's power-off does).
        script = "sleep 1\nvht probed\n" if kind != "blk" else "sleep 60\n"
        initrd = lab.initramfs(script, devices=(kind,))
        # edd=off: no boot-time BIOS disk probe, which would wait for disk I/O.
        devices = [VhostUserDevice(kind, served.sock, **device)]  # type: ignore[arg-type]
        vm = lab.qemu(initrd, devices, name=f"qemu-served-{kind}",
                      append="console=ttyS0 panic=-1 edd=off")  # fmt: skip
        if kind != "blk":
            vm.finish(timeout=180)
        else:
            pattern = re.compile(SERVED_PROBED[kind])
            seen = wait_until(lambda: bool(pattern.search(vm.log_text())) or not vm.alive(), 180)
            check(seen and vm.alive(), f"the guest never set the {kind} device up")
            time.sleep(2)  # DRIVER_OK starts the rings (SET_VRING_*) right after
            vm.stop()
        return served.result()
    finally:
        served.kill()


def qemu_blk(lab: Workspace, cells: dict[str, Cell], backend: str) -> None:
    """QEMU vhost-user-blk with qemu-storage-daemon or ``mockbackend --device blk``."""
    size = 16 * MiB
    image = images.create_image(lab.path("disk.img"), size)
    md5 = images.fill_random(image, 4242)

    def start_backend(name: str) -> Path:
        if backend == "qsd":
            return lab.qsd(image, name=name).socket
        return lab.mockbackend("--device", "blk", "--disk", image, name=name).socket

    markers = _boot(lab, guest.read_disk_md5(), "blk", start_backend("be-direct"), "qemu-direct")
    check(markers["md5"] == md5, f"guest md5 {markers['md5']}, disk {md5}")
    cells["direct"] = Cell("ok", "guest md5 of the disk matches")
    proxy = lab.record(lab.sock("front"), start_backend("be-record"), name="blk")
    markers = _boot(lab, guest.read_disk_md5(), "blk", proxy.frontend, "qemu-record")
    proxy.interrupt()
    check(markers["md5"] == md5, f"guest md5 {markers['md5']} through record, disk {md5}")
    cells["record"] = only_known_errors(trace_errors(proxy.trace))
    cells["replay"] = replay_result(
        *replay(proxy.trace, "--backend", str(start_backend("be-replay")))
    )
    cells["mock"] = _serve_to_qemu(lab, proxy.trace, "blk")


def qemu_fs(lab: Workspace, cells: dict[str, Cell]) -> None:
    """QEMU vhost-user-fs with virtiofsd: the guest reads a host file and writes one."""
    share = lab.path("share")
    share.mkdir(exist_ok=True)
    content = b"interop\n" + images.random_bytes(300, 1)
    (share / "host.bin").write_bytes(content)
    script = guest.virtiofs_roundtrip("host.bin", "guest.bin", b"from the guest\n", tag="share")
    expected = hashlib.md5(content).hexdigest()
    vfs = lab.virtiofsd(share, name="vfs-direct")
    markers = _boot(lab, script, "fs", vfs.socket, "qemu-direct", tag="share")
    check(markers["fs_read_md5"] == expected, f"guest read md5 {markers['fs_read_md5']}")
    cells["direct"] = Cell("ok", "guest reads and writes the share")
    vfs = lab.virtiofsd(share, name="vfs-record")
    proxy = lab.record(lab.sock("front"), vfs.socket, name="fs", extra_args=("--once",))
    markers = _boot(lab, script, "fs", proxy.frontend, "qemu-record", tag="share")
    proxy.wait(30)
    check(markers["fs_read_md5"] == expected, "guest read md5 through record")
    cells["record"] = only_known_errors(trace_errors(proxy.trace))
    vfs = lab.virtiofsd(share, name="vfs-replay")
    cells["replay"] = replay_result(*replay(proxy.trace, "--backend", str(vfs.socket)))
    cells["mock"] = _serve_to_qemu(lab, proxy.trace, "fs", tag="share")


NET_GUEST = """
_dev=$(ls /sys/class/net | grep -v lo | head -n 1)
ip link set "$_dev" up
ip addr add 10.99.0.1/24 dev "$_dev"
ping -c 3 -W 1 10.99.0.2 > /dev/null 2>&1 || true
vht tx "$(cat /sys/class/net/$_dev/statistics/tx_packets)"
vht rx "$(cat /sys/class/net/$_dev/statistics/rx_packets)"
"""


def qemu_net(lab: Workspace, cells: dict[str, Cell], backend: str) -> None:
    """QEMU vhost-user-net with the vhost PMD, OVS-DPDK or ``mockbackend --device net``;
    the guest pings, the back-end loops its frames back."""
    options = {"device_options": {"romfile": ""}}
    counters: dict[str, Testpmd] = {}
    live: list[Stoppable] = []

    def start_backend(name: str) -> Path:
        started = net_backend(lab, backend, name, live)
        if isinstance(started, Testpmd):
            started.start_forwarding()
            counters[name] = started
        return started.socket

    def checked(markers, name: str, how: str) -> None:
        tx, rx = int(markers["tx"] or 0), int(markers["rx"] or 0)
        check(tx > 0 and rx > 0, f"guest tx={tx} rx={rx} {how}")
        if name in counters:
            stats = counters[name].stats()
            check(stats.rx_packets >= tx, f"PMD counted {stats.rx_packets}, guest sent {tx}")

    markers = _boot(lab, NET_GUEST, "net", start_backend("be-direct"), "qemu-direct", **options)
    checked(markers, "be-direct", "direct")
    cells["direct"] = Cell("ok", f"guest sent {markers['tx']}, got {markers['rx']} back")
    proxy = lab.record(lab.sock("front"), start_backend("be-record"), name="net")
    markers = _boot(lab, NET_GUEST, "net", proxy.frontend, "qemu-record", **options)
    proxy.interrupt()
    checked(markers, "be-record", "through record")
    cells["record"] = only_known_errors(trace_errors(proxy.trace))
    cells["replay"] = replay_result(
        *replay(proxy.trace, "--backend", str(start_backend("be-replay")))
    )
    cells["mock"] = _serve_to_qemu(lab, proxy.trace, "net", **options)


# --------------------------------------------------------------------------- virtio-user rows


VIRTIO_USER_KNOWN: tuple[str, ...] = ()


def virtio_user_net(lab: Workspace, cells: dict[str, Cell], backend: str) -> None:
    """DPDK virtio-user with the vhost PMD, OVS-DPDK or ``mockbackend --device net``:
    packets counted by virtio-user (and by the PMD), looped back by the back-end."""
    pmds: dict[str, Testpmd] = {}
    live: list[Stoppable] = []

    def start_backend(name: str) -> Path:
        started = net_backend(lab, backend, name, live)
        if isinstance(started, Testpmd):
            pmds[name] = started
        return started.socket

    def run(sock: Path, name: str, be_name: str) -> str:
        frontend = lab.testpmd(VirtioUser(sock), name=name)
        if be_name in pmds:
            fe, be = loop_packets(frontend, pmds[be_name])
            seen = f"virtio-user rx {fe.rx_packets} tx {fe.tx_packets}, PMD rx {be.rx_packets}"
        else:
            frontend.start_forwarding(tx_first=True)
            fe = frontend.wait_packets(rx=DPDK_PACKETS, tx=DPDK_PACKETS, timeout=90)
            seen = f"virtio-user rx {fe.rx_packets} tx {fe.tx_packets}, looped back"
        code = frontend.quit()
        check(code == 0, f"virtio-user quit with exit status {code}")
        return seen

    cells["direct"] = Cell("ok", run(start_backend("be-direct"), "vu-direct", "be-direct"))
    proxy = lab.record(lab.sock("front"), start_backend("be-record"), name="vu")
    seen = run(proxy.frontend, "vu-record", "be-record")
    proxy.interrupt()
    cell = only_known_errors(trace_errors(proxy.trace), VIRTIO_USER_KNOWN)
    cells["record"] = Cell(cell.status, cell.detail or seen)
    cells["replay"] = replay_result(
        *replay(proxy.trace, "--backend", str(start_backend("be-replay")))
    )
    served = Served(proxy.trace, lab.sock("served"))
    try:
        again = lab.testpmd(VirtioUser(served.sock), name="vu-served")
        again.quit()
        cells["mock"] = served.result()
    finally:
        served.kill()


# --------------------------------------------------------------------------- the matrix

NOT_NET = "virtio-user is a virtio-net driver; {} serves {}"


Row = Callable[[Workspace, dict[str, Cell]], None]
"""Runs a pair's cells in order, filling the dict as each one is done."""


def _na(why: str) -> Row:
    return lambda lab, cells: cells.update({mode: Cell("n/a", why) for mode in MODES})


QEMU_GUEST = ("qemu", "busybox", "kernel")
DPDK = ("testpmd", "hugepages")
ROWS: dict[tuple[str, str], tuple[tuple[str, ...], Row]] = {
    ("QEMU", "qemu-storage-daemon"): ((*QEMU_GUEST, "qsd", "qemu-img"),
                                      partial(qemu_blk, backend="qsd")),
    ("QEMU", "virtiofsd"): ((*QEMU_GUEST, "virtiofsd"), qemu_fs),
    ("QEMU", "vhost PMD"): ((*QEMU_GUEST, "testpmd"), partial(qemu_net, backend="pmd")),
    ("QEMU", "OVS-DPDK"): ((*QEMU_GUEST, "ovs-dpdk", "hugepages"),
                          partial(qemu_net, backend="ovs")),
    ("QEMU", "mockbackend"): ((*QEMU_GUEST, "qemu-img"), partial(qemu_blk, backend="mock")),
    ("virtio-user", "qemu-storage-daemon"): ((), _na(NOT_NET.format("qemu-storage-daemon", "blk"))),
    ("virtio-user", "virtiofsd"): ((), _na(NOT_NET.format("virtiofsd", "fs"))),
    ("virtio-user", "vhost PMD"): (DPDK, partial(virtio_user_net, backend="pmd")),
    ("virtio-user", "OVS-DPDK"): ((*DPDK, "ovs-dpdk"), partial(virtio_user_net, backend="ovs")),
    ("virtio-user", "mockbackend"): (DPDK, partial(virtio_user_net, backend="mock")),
}  # fmt: skip
"""Each pair: what it needs (vhtrace.lab.programs names) and the function running its row."""


def run_row(frontend: str, backend: str, keep: Path | None = None) -> dict[str, Cell]:
    """Run one pair's cells in a fresh workspace; every cell filled, whatever happens."""
    needs, row = ROWS[(frontend, backend)]
    missing = programs.missing(*needs) if needs else []
    if missing:
        return {mode: Cell("skip", "; ".join(missing)) for mode in MODES}
    data = keep or Path(tempfile.mkdtemp(prefix="vht-interop-"))
    slug = re.sub(r"[^a-z0-9]+", "-", f"{frontend}-{backend}".lower())
    cells: dict[str, Cell] = {}
    try:
        with Workspace(data / slug, data / "cache") as lab:
            row(lab, cells)
    except Exception as exc:  # a failed check, or a lab program that did not start
        first = (str(exc).strip() or type(exc).__name__).splitlines()[0][:200]
        done = len(cells)
        for mode in MODES:
            cells.setdefault(mode, Cell("FAIL", first) if len(cells) == done else
                             Cell("FAIL", "not run: an earlier cell failed"))  # fmt: skip
    finally:
        if keep is None:
            shutil.rmtree(data, ignore_errors=True)
    return {mode: cells.get(mode, Cell("FAIL", "not run")) for mode in MODES}


def render(results: dict[tuple[str, str], dict[str, Cell]], markdown: bool) -> str:
    """The table (a row per pair, a column per mode), each cell's detail as a numbered
    note under it, the same note numbered once."""
    notes: dict[str, int] = {}

    def cell(c: Cell) -> str:
        if not c.detail:
            return c.status
        number = notes.setdefault(c.detail, len(notes) + 1)
        return f"{c.status} [{number}]"

    header = ["front-end", "back-end", *MODES]
    rows = [[f, b, *(cell(results[(f, b)][m]) for m in MODES)] for (f, b) in results]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                 for r in [header, *rows]]  # fmt: skip
    lines.append("")
    lines += [f"[{n}] {detail}" + ("  " if markdown else "") for detail, n in notes.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the interop matrix on this machine and print it (exit 1 if a cell failed)."""
    parser = argparse.ArgumentParser(prog="scripts/interop-matrix", description=main.__doc__)
    parser.add_argument("--markdown", action="store_true", help="a Markdown table (docs)")
    parser.add_argument("--frontend", action="append", choices=FRONTENDS)
    parser.add_argument("--backend", action="append", choices=BACKENDS)
    parser.add_argument("--keep", type=Path, help="keep logs and traces in this directory")
    args = parser.parse_args(argv)
    results: dict[tuple[str, str], dict[str, Cell]] = {}
    for frontend, backend in ROWS:
        if (args.frontend and frontend not in args.frontend) or (
            args.backend and backend not in args.backend
        ):
            continue
        started = time.monotonic()
        results[(frontend, backend)] = cells = run_row(frontend, backend, args.keep)
        summary = ", ".join(f"{m} {c.status}" for m, c in cells.items())
        print(f"{frontend} x {backend}: {summary} ({time.monotonic() - started:.0f} s)",
              file=sys.stderr)  # fmt: skip
    print(render(results, args.markdown))
    failed = any(c.status == "FAIL" for cells in results.values() for c in cells.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
