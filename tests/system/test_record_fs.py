"""vhtrace record between real QEMU and virtiofsd: a guest mounts virtio-fs and uses it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.support import scenarios
from tests.support.tracecheck import Trace
from vhtrace.lab import Workspace


@pytest.mark.lab_needs("qemu", "virtiofsd", "busybox", "kernel")
def test_virtiofs_through_the_recorder(lab: Workspace) -> None:
    outcome = scenarios.virtiofs_io(lab)  # with --once: the recorder ends with the session
    markers, notes = outcome.markers, outcome.notes
    assert markers is not None and outcome.recorder is not None
    assert outcome.recorder.process.returncode == 0
    host_content, guest_content = notes["host_content"], notes["guest_content"]
    assert isinstance(host_content, bytes) and isinstance(guest_content, bytes)
    share = notes["share"]
    assert isinstance(share, Path)

    assert markers["fs_read_md5"] == hashlib.md5(host_content).hexdigest()
    assert (share / "guest.bin").read_bytes() == guest_content

    trace = Trace.read(outcome.trace)
    assert trace.problem is None, trace.problem
    start = trace.events("session-start")[0]
    assert start.info.get("device") == "fs"
    assert "virtiofsd" in start.info["backend"].get("program", "")
    assert trace.named("SET_MEM_TABLE") or trace.named("ADD_MEM_REG")
    kicks = trace.named("SET_VRING_KICK")
    assert len(kicks) >= 2, "virtio-fs has a hiprio and at least one request queue"
    assert {m.analysis.fields["index"] for m in kicks} >= {0, 1}
    assert [str(f) for f in trace.findings("error")] == []
