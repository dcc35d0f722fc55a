"""The recorder: what it writes of a message and its fds, and what its failing does.

A recorder whose disk fills up keeps relaying: a real ENOSPC, on a 64 KiB tmpfs. The trace
outgrows the tmpfs mid-session, as a trace outgrows a disk: the recorder dies on ENOSPC,
and the relay must go on byte for byte, release what it queued for the recorder (no fd
growth), and say from which message on nothing was recorded.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.record.harness import Recording
from vhtrace.protocol.messages import build
from vhtrace.record.handoff import Relayed
from vhtrace.record.recorder import NOT_DESCRIBED, Recorder
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import MessageRecord
from vhtrace.trace.writer import TraceWriter, make_header


@contextlib.contextmanager
def small_disk(where: Path) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs",
                              str(where)], capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def proxy_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_disk_that_fills_up_never_stops_the_relay_nor_leaks_fds(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as disk:
        rec = Recording(tmp_path, "--memory", "none", trace=disk / "t.vht")
        fe, be = rec.session()
        counts = []
        for number in range(1, 2001):
            if number % 2:  # incompressible bytes: the trace outgrows 64 KiB
                frame = build("SET_CONFIG", {"offset": 0, "size": 256, "flags": 0,
                                             "region": os.urandom(256)})  # fmt: skip
                fe.send(frame)
            else:
                kick = os.eventfd(0)
                frame = build("SET_VRING_KICK", {"index": 0})
                fe.send_raw(frame.raw, (kick,))
                os.close(kick)
            got = be.read()
            assert got.raw == frame.raw, f"message #{number} changed in the relay"
            for fd in got.fds:
                os.close(fd)
            if number in (1000, 2000):
                counts.append(proxy_fds(rec.proc.pid))
        assert counts[1] <= counts[0] + 4, f"the proxy's fds grew after the disk filled: {counts}"
        code, out, err = rec.finish()
    said = err + out
    assert "No space left on device" in said, said
    assert "nothing recorded from message #" in said, said
    assert code == 1, f"a recording that failed exits 1 (docs/cli.md); {said}"


def recorded(tmp_path: Path, *handed: tuple[MessageRecord, list[int]]) -> list[MessageRecord]:
    """What a Recorder writes of messages handed to it with these fd copies."""
    writer = TraceWriter(str(tmp_path / "r.vht"), make_header())
    recorder = Recorder(writer)
    for record, fds in handed:
        recorder.handle(Relayed(record, len(fds)), fds)
    recorder.finish()
    with TraceReader(tmp_path / "r.vht") as reader:
        return [r for r in reader if isinstance(r, MessageRecord)]


def test_each_fd_copy_is_described_and_closed(tmp_path: Path) -> None:
    kick = os.eventfd(0)
    copy = os.dup(kick)
    raw = build("SET_VRING_KICK", {"index": 0}).raw
    [message] = recorded(tmp_path, (MessageRecord(1, 1, 1, 1, "main", "frontend", raw, ({},), 0),
                                    [copy]))  # fmt: skip
    assert message.fds[0]["kind"] == "eventfd"
    assert message.fds[0]["ino"] == os.fstat(kick).st_ino
    with pytest.raises(OSError):
        os.fstat(copy)  # the recorder closed its copy
    os.close(kick)


def test_a_message_whose_fd_copies_never_came_still_counts_its_fds(tmp_path: Path) -> None:
    """The relay shed them (short of fds): the notes say how many the message carried."""
    raw = build("SET_MEM_TABLE", {"regions": []}).raw
    notes = ({}, {"interposed": "backend"})
    [message] = recorded(tmp_path, (MessageRecord(1, 1, 1, 1, "main", "frontend", raw, notes, 0),
                                    []))  # fmt: skip
    assert [m["kind"] for m in message.fds] == ["other", "other"]
    assert message.fds[0]["error"] == NOT_DESCRIBED["error"]
    assert message.fds[1]["interposed"] == "backend", "its note is kept"
