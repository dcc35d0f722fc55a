"""Memory that shrinks under the back-end (issue 17, point 12): a front-end ftruncates a memfd
it already passed (guest RAM, or SET_LOG_BASE's log) and kicks a ring.

Touching a mapped page past the end of its file is a SIGBUS, which would kill the process,
so the mock runs in a subprocess here: a signal fails the test instead of killing pytest.
The front-end is this test, over the real unix socket, with real memfds and eventfds.
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mockbackend.memory import GuestMemory, MemoryShrunk, sealed_against_shrinking
from mockbackend.testing import GUEST_SIZE, UADDR, Driver, kick, wait_used
from vhtrace import wire
from vhtrace.protocol import payloads, spec
from vhtrace.protocol.messages import build
from vhtrace.wire import connect_unix

F_ADD_SEALS = 1033
F_SEAL_SHRINK = 0x0002


class SocketFrontend:
    """A hostile front-end speaking to a mockbackend process over its unix socket."""

    def __init__(self, path: Path) -> None:
        self.sock = connect_unix(path, 30)
        self.sock.settimeout(10)
        self.reader = wire.MessageReader(self.sock)
        self.mem_fd = os.memfd_create("guest", os.MFD_CLOEXEC)
        os.ftruncate(self.mem_fd, GUEST_SIZE)
        self.ram = mmap.mmap(self.mem_fd, GUEST_SIZE)
        self.fds: list[int] = [self.mem_fd]

    def send(self, name: str, fields: dict | None = None, **kw: object) -> None:
        wire.send_frame(self.sock, build(name, fields, **kw))  # type: ignore[arg-type]

    def ask(self, name: str, fields: dict | None = None, *, layout: str | None = None, **kw):
        self.send(name, fields, **kw)
        frame = self.reader.read()
        assert frame is not None, f"the back-end closed the connection instead of answering {name}"
        wire.close_fds(frame.fds)
        row = spec.request_spec(spec.Channel.MAIN, frame.request)
        assert row is not None
        chosen = layout or ("ack" if kw.get("need_reply") else row.reply_payload)
        decoded = payloads.decode(chosen, frame.payload)
        assert decoded.fields is not None, decoded.error
        return decoded.fields

    def start(self) -> None:
        features = self.ask("GET_FEATURES")["features"]
        offered = self.ask("GET_PROTOCOL_FEATURES")["features"]
        self.send("SET_PROTOCOL_FEATURES", {"features": offered})
        self.send("SET_OWNER")
        self.send("SET_FEATURES", {"features": features})
        region = {
            "guest_phys_addr": 0,
            "memory_size": GUEST_SIZE,
            "userspace_addr": UADDR,
            "mmap_offset": 0,
        }
        reply = self.ask(
            "SET_MEM_TABLE",
            {"nregions": 1, "regions": [region]},
            fds=(self.mem_fd,),
            need_reply=True,
        )
        assert reply == {"value": 0}

    def ring(self, driver: Driver) -> int:
        """Configure ring 0 for ``driver`` without kicking it; the kick eventfd."""
        kick_fd = os.eventfd(0, os.EFD_CLOEXEC)
        call_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.fds += [kick_fd, call_fd]
        self.send("SET_VRING_NUM", {"index": 0, "num": driver.size})
        self.send("SET_VRING_BASE", {"index": 0, "next_avail": 0})
        self.send(
            "SET_VRING_ADDR",
            {
                "index": 0,
                "flags": 0,
                "desc_user_addr": UADDR + driver.desc,
                "used_user_addr": UADDR + driver.used,
                "avail_user_addr": UADDR + driver.avail,
                "log_guest_addr": 0,
            },
        )
        self.send("SET_VRING_CALL", {"index": 0}, fds=(call_fd,))
        self.send("SET_VRING_KICK", {"index": 0}, fds=(kick_fd,))
        assert self.ask("SET_VRING_ENABLE", {"index": 0, "num": 1}, need_reply=True) == {"value": 0}
        return kick_fd

    def close(self) -> None:
        self.sock.close()
        self.ram.close()
        wire.close_fds(self.fds)


def run_mock(tmp_path: Path) -> tuple[subprocess.Popen[str], Path, Path]:
    sock, report = tmp_path / "m.sock", tmp_path / "report.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mockbackend.cli",
            "--socket",
            str(sock),
            "--device",
            "rng",
            "--report",
            str(report),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, sock, report


def said(proc: subprocess.Popen[str], text: str, timeout: float = 20) -> str:
    """The mock's stderr up to the line with ``text``: a kick has no reply, so this is
    how a test knows the mock handled it before hanging up."""
    seen: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if text in line:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert any(text in line for line in seen), f"mockbackend never said {text!r}: {seen}"
    return "".join(seen)


def finish(proc: subprocess.Popen[str], report: Path, earlier: str = "") -> tuple[str, list[dict]]:
    """Wait for the mock to end its one session; its stderr (``earlier``: what was read of
    it already) and its report's violations."""
    try:
        _, stderr = proc.communicate(timeout=20)
        stderr = earlier + stderr
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
        pytest.fail(f"mockbackend did not end after the session closed; stderr:\n{stderr}")
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        pytest.fail(f"mockbackend was killed by {name}; expected exit 0; stderr:\n{stderr}")
    assert proc.returncode == 0, f"expected exit 0, got {proc.returncode}; stderr:\n{stderr}"
    [session] = json.loads(report.read_text())
    return stderr, session["violations"]


def one_request(driver: Driver, length: int = 64) -> None:
    """One rng request: a writable buffer of ``length`` bytes, made available."""
    driver.make_available(driver.chain([(driver.buffer(length), length, True)]))


@pytest.mark.parametrize(
    ("new_size", "access"),
    [(0x8000, "gpa 0x20002+0x2"), (0x40000, "gpa 0x100000+0x40")],
    ids=["ring-past-the-end", "buffer-past-the-end"],
)
def test_guest_memory_shrunk_after_set_mem_table_is_reported(
    tmp_path: Path, new_size: int, access: str
) -> None:
    proc, path, report = run_mock(tmp_path)
    fe = SocketFrontend(path)
    try:
        fe.start()
        driver = Driver(fe.ram)  # rings at 0x10000-0x30fff, buffers from 0x100000
        kick_fd = fe.ring(driver)
        buffer = driver.buffer(64)
        if new_size > driver.used + 0x1000:  # the ring survives: fill it after the shrink,
            os.ftruncate(fe.mem_fd, new_size)  # so that only the shrunk memory is served
            driver.make_available(driver.chain([(buffer, 64, True)]))
        else:  # the ring is gone: fill it first (and touch our mapping no more)
            driver.make_available(driver.chain([(buffer, 64, True)]))
            os.ftruncate(fe.mem_fd, new_size)
        kick(kick_fd)
        earlier = said(proc, "shrank after it was sent")  # the kick was handled
        # the connection still works (the ring is broken, not the session)
        assert fe.ask("GET_FEATURES")["features"] >> spec.VIRTIO_F_PROTOCOL_FEATURES & 1
    finally:
        fe.close()
    stderr, violations = finish(proc, report, earlier)
    shrunk = [v for v in violations if v["code"] == "memory-shrunk"]
    assert len(shrunk) == 1, f"expected one memory-shrunk violation, got {violations}"
    text = shrunk[0]["text"]
    assert "region gpa 0x0-0x400000" in text, text
    assert f"holds {new_size:#x} bytes" in text and f"at least {GUEST_SIZE:#x}" in text, text
    assert f"access at {access} refused" in text, text
    assert "shrank after it was sent" in stderr, stderr


def test_log_shrunk_after_set_log_base_is_reported_and_requests_still_served(
    tmp_path: Path,
) -> None:
    proc, path, report = run_mock(tmp_path)
    fe = SocketFrontend(path)
    log_size = GUEST_SIZE // 0x1000 // 8
    log_fd = os.memfd_create("log", os.MFD_CLOEXEC)
    fe.fds.append(log_fd)
    try:
        fe.start()
        os.ftruncate(log_fd, log_size)
        reply = fe.ask(
            "SET_LOG_BASE",
            {"mmap_size": log_size, "mmap_offset": 0},
            fds=(log_fd,),
            layout="log_reply",
        )
        assert reply == {"value": 0}
        driver = Driver(fe.ram)
        kick_fd = fe.ring(driver)
        one_request(driver)
        kick(kick_fd)
        wait_used(driver, 1)  # logged: bits for the buffer's and the used ring's pages
        assert os.pread(log_fd, log_size, 0) != bytes(log_size)
        os.ftruncate(log_fd, 0)
        one_request(driver)
        kick(kick_fd)
        wait_used(driver, 2)  # served all the same: the memory itself is intact
        assert fe.ask("GET_FEATURES")["features"] >> spec.VIRTIO_F_PROTOCOL_FEATURES & 1
        assert os.fstat(log_fd).st_size == 0, "the mock grew the log back"
    finally:
        fe.close()
    stderr, violations = finish(proc, report)
    shrunk = [v for v in violations if v["code"] == "log-shrunk"]
    assert len(shrunk) == 1, f"expected one log-shrunk violation, got {violations}"
    text = shrunk[0]["text"]
    assert "holds 0x0 bytes" in text and f"at least {log_size:#x}" in text, text
    assert "SET_LOG_BASE fd shrank" in stderr, stderr


def test_inflight_area_shrunk_after_set_inflight_fd_is_reported(tmp_path: Path) -> None:
    proc, path, report = run_mock(tmp_path)
    fe = SocketFrontend(path)
    area_fd = os.memfd_create("inflight", os.MFD_CLOEXEC)  # the front-end's own, unsealed
    fe.fds.append(area_fd)
    try:
        fe.start()
        os.ftruncate(area_fd, 0x1000)
        fields = {"mmap_size": 0x1000, "mmap_offset": 0, "num_queues": 1, "queue_size": 16}
        assert fe.ask("SET_INFLIGHT_FD", fields, fds=(area_fd,), need_reply=True) == {"value": 0}
        driver = Driver(fe.ram)
        kick_fd = fe.ring(driver)  # the area is read here (fresh: version set)
        os.ftruncate(area_fd, 0)
        one_request(driver)
        kick(kick_fd)  # popping the chain marks it in flight: past the end now
        earlier = said(proc, "SET_INFLIGHT_FD area shrank")  # the kick was handled
        assert fe.ask("GET_FEATURES")["features"] >> spec.VIRTIO_F_PROTOCOL_FEATURES & 1
        assert os.fstat(area_fd).st_size == 0, "the mock grew the area back"
    finally:
        fe.close()
    stderr, violations = finish(proc, report, earlier)
    shrunk = [v for v in violations if v["code"] == "inflight-shrunk"]
    assert len(shrunk) == 1, f"expected one inflight-shrunk violation, got {violations}"
    assert "holds 0x0 bytes, expected at least 0x1000" in shrunk[0]["text"], shrunk[0]
    assert "SET_INFLIGHT_FD area shrank" in stderr, stderr


# -- in-process: the two access paths agree -------------------------------------------


def memfd(size: int, seal: bool) -> int:
    fd = os.memfd_create("guest", os.MFD_CLOEXEC | (os.MFD_ALLOW_SEALING if seal else 0))
    os.ftruncate(fd, size)
    if seal:
        fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK)
    return fd


def test_a_sealed_memfd_takes_the_mapping_and_cannot_shrink() -> None:
    fd = memfd(0x4000, seal=True)
    assert sealed_against_shrinking(fd)
    mem = GuestMemory()
    try:
        region = mem.add(fd, 0, 0x4000, UADDR, 0)
        assert region.sealed
        mem.write(0x1FFE, b"abcd")
        assert mem.read(0x1FFE, 4) == b"abcd" == os.pread(fd, 4, 0x1FFE)
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 0x1000)
    finally:
        mem.clear()
        os.close(fd)


def test_unsealed_regions_refuse_access_past_a_shrunk_end() -> None:
    fd = memfd(0x4000, seal=False)
    assert not sealed_against_shrinking(fd)
    with open(os.devnull, "rb") as not_a_memfd:
        assert not sealed_against_shrinking(not_a_memfd.fileno())
    reported: list[tuple[str, str]] = []
    mem = GuestMemory(on_violation=lambda code, text: reported.append((code, text)))
    try:
        mem.add(fd, 0, 0x2000, UADDR, 0)
        mem.add(fd, 0x2000, 0x2000, UADDR + 0x2000, 0x2000)
        mem.write(0x1FFE, b"abcd")  # across both regions
        assert mem.read(0x1FFE, 4) == b"abcd" == os.pread(fd, 4, 0x1FFE)
        os.ftruncate(fd, 0x1000)
        with pytest.raises(MemoryShrunk, match="holds 0x1000 bytes, expected at least 0x2000"):
            mem.read(0x1FFE, 4)
        with pytest.raises(MemoryShrunk, match=r"access at gpa 0x1800\+0x1 refused"):
            mem.write(0x1800, b"x")
        with pytest.raises(MemoryShrunk):
            mem.views(0x1000, 0x10)
        assert os.fstat(fd).st_size == 0x1000, "a refused write grew the file"
        assert mem.read(0xFFE, 2) == b"\0\0"  # what is left still reads
        assert [code for code, _ in reported] == ["memory-shrunk"]  # once per region
    finally:
        mem.clear()
        os.close(fd)
