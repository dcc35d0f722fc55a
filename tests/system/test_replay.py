"""vhtrace replay with the real stack: recorded QEMU against qemu-storage-daemon, and a
recorded qemu-storage-daemon served to real QEMU.

Expected values come from the traces and from what the test sets up (the export's
options), never written down: the divergence a read-only export causes is found by
asking which feature bit names RO, the capacity the guest must see is read from the
recorded GET_CONFIG reply.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.support import scenarios
from tests.support.tracecheck import Trace
from vhtrace.lab import VhostUserDevice, Workspace, images
from vhtrace.lab.proc import is_listening
from vhtrace.protocol import spec
from vhtrace.protocol.spec import DeviceType
from vhtrace.replay import ReplayOptions, replay_frontend
from vhtrace.replay.report import Status, render_text

ROOT = Path(__file__).resolve().parents[2]
BLK_TRACE = ROOT / "traces" / "qemu-qsd-blk.vht"
POSTCOPY_TRACE = ROOT / "traces" / "qemu-qsd-postcopy-dst.vht"
VHTRACE = [sys.executable, "-m", "vhtrace.cli.main"]
MiB = 1 << 20
QSD_NEEDS = ("qsd", "qemu-img")


def recorded_capacity(trace: Path) -> int:
    """Sectors of the disk in the recorded GET_CONFIG reply (virtio-blk config offset 0)."""
    [reply] = Trace.read(trace).named("GET_CONFIG", role="reply")
    fields = reply.analysis.fields
    assert fields is not None
    return struct.unpack_from("<Q", fields["region"])[0]


def image_for(lab: Workspace, trace: Path, name: str = "disk.img") -> Path:
    """An image of the size the trace's disk had (the capacity is in GET_CONFIG)."""
    return images.create_image(lab.path(name), recorded_capacity(trace) * 512)


def replay_cli(trace: Path, backend: Path, *args: str) -> tuple[int, dict]:
    done = subprocess.run(
        [*VHTRACE, "replay", str(trace), "--backend", str(backend), "--json", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout)


def explain(result) -> str:
    return "\n".join(render_text(result, verbose=True))


@pytest.mark.lab_needs(*QSD_NEEDS)
def test_shipped_trace_replays_against_a_fresh_qsd(lab: Workspace) -> None:
    qsd = lab.qsd(image_for(lab, BLK_TRACE))
    result = replay_frontend(BLK_TRACE, qsd.socket)
    assert result.exit_code == 0, explain(result)
    [session] = result.sessions
    replies = Trace.read(BLK_TRACE).messages
    expected = [m.record.seq for m in replies if m.record.sender == "backend"]
    assert [c.seq for c in session.checks if c.status is Status.OK] == expected
    # the rings never ran: the ring positions differ from the recording, and are excused
    ignored = [d for c in session.checks for d in c.ignored]
    assert ignored and all("ring position" in (d.ignored or "") for d in ignored)
    assert qsd.alive()


@pytest.mark.lab_needs("qemu", "qsd", "qemu-img", "busybox", "kernel")
def test_fresh_recording_replays_against_a_fresh_qsd(lab: Workspace) -> None:
    outcome = scenarios.blk_io(lab)
    assert outcome.image is not None
    qsd = lab.qsd(outcome.image, name="qsd-replay")
    code, report = replay_cli(outcome.trace, qsd.socket, "--verbose")
    assert code == 0, json.dumps(report["divergences"], indent=2)
    [session] = report["sessions"]
    assert session["sent"] + session["received"] == len(Trace.read(outcome.trace).messages)


@pytest.mark.lab_needs(*QSD_NEEDS)
def test_read_only_export_diverges_at_the_features_reply(lab: Workspace) -> None:
    qsd = lab.qsd(image_for(lab, BLK_TRACE), name="qsd-ro", writable=False)
    code, report = replay_cli(BLK_TRACE, qsd.socket)
    assert code == 1
    [divergence] = report["divergences"]
    first_reply = Trace.read(BLK_TRACE).named("GET_FEATURES", role="reply")[0]
    assert divergence["seq"] == first_reply.record.seq
    assert divergence["where"] == f"#{first_reply.record.seq} GET_FEATURES reply"
    [diff] = divergence["differences"]
    ro = next(b for b, n in spec.DEVICE_VIRTIO_FEATURES[DeviceType.BLK].items() if n == "RO")
    assert diff["field"] == "features"
    assert int(diff["live"], 16) == int(diff["recorded"], 16) | 1 << ro
    assert diff["note"] == f"live sets RO (bit {ro}), which the recording has not"
    # and the text report says the same for a human
    done = subprocess.run(
        [*VHTRACE, "replay", str(BLK_TRACE), "--backend", str(qsd.socket)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert f"diverged at #{first_reply.record.seq} GET_FEATURES reply: features differs" in (
        done.stdout
    )


@pytest.mark.lab_needs(*QSD_NEEDS)
def test_two_queues_diverge_at_the_queue_count(lab: Workspace) -> None:
    qsd = lab.qsd(image_for(lab, BLK_TRACE), name="qsd-mq", num_queues=2)
    code, report = replay_cli(BLK_TRACE, qsd.socket)
    assert code == 1
    [divergence] = report["divergences"]
    [reply] = Trace.read(BLK_TRACE).named("GET_QUEUE_NUM", role="reply")
    assert divergence["seq"] == reply.record.seq
    recorded = reply.analysis.fields["value"]  # type: ignore[index]
    assert divergence["differences"] == [{"field": "value", "recorded": str(recorded), "live": "2"}]


@pytest.mark.lab_needs(*QSD_NEEDS)
def test_postcopy_trace_reproduces_the_back_end_closing(lab: Workspace) -> None:
    """The recorded postcopy destination ends with qemu-storage-daemon hanging up on
    QEMU's ack (QEMU 7.2 + CONFIGURE_MEM_SLOTS); replay brings it about again."""
    qsd = lab.qsd(image_for(lab, POSTCOPY_TRACE), name="qsd-postcopy", locking=False)
    result = replay_frontend(POSTCOPY_TRACE, qsd.socket, ReplayOptions(close_timeout=10))
    assert result.exit_code == 0, explain(result)
    [session] = result.sessions
    [advise] = [c for c in session.checks if "POSTCOPY_ADVISE reply" in c.label]
    assert advise.status is Status.OK  # with a userfaultfd, as recorded
    assert session.checks[-1].label == "end of session"
    assert session.checks[-1].status is Status.OK
    # ...because it rejected the ack, as in the recording (vu_panic ends the connection)
    qsd.wait_for_log("VHOST_USER_ADD_MEM_REG received 0 fds")


@pytest.mark.lab_needs("qemu", "busybox", "kernel")
def test_serve_a_recorded_back_end_to_real_qemu(lab: Workspace) -> None:
    """QEMU boots against the recorded qemu-storage-daemon: device initialisation goes
    through (the guest kernel sees the recorded disk size), QEMU logs no vhost error,
    and every front-end message matches the recording."""
    sock = lab.sock("served")
    server = subprocess.Popen(
        [*VHTRACE, "replay", str(BLK_TRACE), "--serve", str(sock), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not is_listening(sock):
            assert server.poll() is None, server.communicate()
            assert time.monotonic() < deadline, "the served back-end never listened"
            time.sleep(0.05)
        initrd = lab.initramfs("wait_dev /dev/vda\n", devices=("blk",))
        # edd=off: the kernel's boot-time BIOS disk probe would wait for I/O on the disk,
        # and the served back-end plays the control plane only (no data plane).
        vm = lab.qemu(
            initrd, [VhostUserDevice("blk", sock)], append="console=ttyS0 panic=-1 edd=off"
        )
        sectors = recorded_capacity(BLK_TRACE)
        seen = re.compile(rf"\[vda\] {sectors} 512-byte logical blocks")
        deadline = time.monotonic() + 90
        while not seen.search(vm.log_text()):
            assert vm.alive(), vm.log_text()[-3000:]
            assert time.monotonic() < deadline, vm.log_text()[-3000:]
            time.sleep(0.2)
        time.sleep(2)  # the driver's DRIVER_OK starts the rings (SET_VRING_*) right after
        vm.stop()  # QEMU stops the device on SIGTERM, as it did at the recorded power-off
        out, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    qemu_errors = [
        line
        for line in vm.log_text().splitlines()
        if line.startswith("qemu-system") and "terminating on signal" not in line
    ]
    assert qemu_errors == []
    report = json.loads(out)
    assert server.returncode == 0, json.dumps(report["divergences"], indent=2) + err
    [session] = report["sessions"]
    frontend = [m for m in Trace.read(BLK_TRACE).messages if m.record.sender == "frontend"]
    assert session["received"] == len(frontend)
    assert {c["status"] for c in session["checks"]} == {"ok"}


USER_TESTS = """
import os
from pathlib import Path

import pytest

from vhtrace.lab import StorageDaemon


@pytest.fixture
def qsd(tmp_path):
    daemon = StorageDaemon(Path(os.environ["IMAGE"]), Path(os.environ["SOCK"]),
                           tmp_path / "qsd.log", writable=os.environ["WRITABLE"] == "1",
                           locking=False)
    with daemon:
        yield daemon


@pytest.mark.vhtrace(device="blk")
def test_qsd(vhtrace_replay, qsd):
    run = vhtrace_replay(qsd.socket)
    print("RECORDED" if run.recorded else "REPLAYED")
"""


@pytest.mark.lab_needs("qemu", "qsd", "qemu-img", "busybox", "kernel")
def test_pytest_plugin_records_once_then_replays(lab: Workspace, tmp_path: Path) -> None:
    """--vhtrace-record-mode=once records with real QEMU; the default mode replays in CI;
    a changed back-end fails the test with the divergence."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_user.py").write_text(textwrap.dedent(USER_TESTS))
    image = images.create_image(lab.path("user.img"), 32 * MiB)
    env = {
        **os.environ,
        "IMAGE": str(image),
        "SOCK": str(lab.sock("user-qsd")),
        "WRITABLE": "1",
        "VHTRACE_LAB_CACHE": str(lab.cache_dir),
    }

    def pytest_run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "-q",
                "-s",
                "test_user.py",
                *args,
            ],
            cwd=project,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=300,
        )

    trace = project / "traces" / "test_user" / "test_qsd.vht"
    missing = pytest_run()
    assert "1 failed" in missing.stdout and "--vhtrace-record-mode=once" in missing.stdout
    recorded = pytest_run("--vhtrace-record-mode=once")
    assert "RECORDED" in recorded.stdout and "1 passed" in recorded.stdout, recorded.stdout
    assert trace.exists() and Trace.read(trace).named("SET_VRING_KICK")
    replayed = pytest_run()
    assert "REPLAYED" in replayed.stdout and "1 passed" in replayed.stdout, replayed.stdout
    read_only = pytest_run(WRITABLE="0")
    assert "1 failed" in read_only.stdout
    assert "GET_FEATURES reply: features differs" in read_only.stdout
