"""vhtrace record between real QEMU and real qemu-storage-daemon, a guest doing real I/O.

The proxy must be invisible: the guest reads the image (same md5), writes to it (the
bytes land), and powers off; and the trace must hold the whole session with the right
fd kinds. Expected values come from data generated here, never written down.
"""

from __future__ import annotations

import hashlib

import pytest

from tests.support import scenarios
from tests.support.tracecheck import Trace
from vhtrace.lab import Workspace


@pytest.mark.lab_needs("qemu", "qsd", "qemu-img", "busybox", "kernel")
def test_blk_guest_io_through_the_recorder(lab: Workspace) -> None:
    outcome = scenarios.blk_io(lab)
    markers, notes = outcome.markers, outcome.notes
    assert markers is not None and outcome.image is not None and outcome.recorder is not None
    pattern, offset = notes["pattern"], notes["offset"]
    assert isinstance(pattern, bytes) and isinstance(offset, int)

    # The guest did not notice the proxy.
    assert markers["md5"] == notes["image_md5"]
    assert markers["pattern_readback_md5"] == hashlib.md5(pattern).hexdigest()
    assert outcome.image.read_bytes()[offset : offset + len(pattern)] == pattern
    assert "1 session" in outcome.recorder.log_text()  # the one-line summary on SIGINT

    trace = Trace.read(outcome.trace)
    assert trace.problem is None, trace.problem
    assert (outcome.trace.stat().st_mode & 0o777) == 0o600
    starts = trace.events("session-start")
    assert len(starts) == 1
    assert starts[0].info.get("device") == "blk", starts[0].info
    assert starts[0].info["backend"].get("program") == "qemu-storage-daemon"
    assert starts[0].info["frontend"].get("program", "").startswith("qemu-system")
    assert trace.events("session-end")

    # The whole session: negotiation, memory, rings started and stopped.
    for name in ("GET_FEATURES", "GET_PROTOCOL_FEATURES", "SET_FEATURES", "SET_VRING_NUM",
                 "SET_VRING_ADDR", "SET_VRING_BASE", "SET_VRING_KICK", "SET_VRING_CALL",
                 "GET_VRING_BASE"):  # fmt: skip
        assert trace.named(name), f"no {name} in the trace"
    assert trace.named("GET_FEATURES", role="reply")
    assert trace.named("GET_VRING_BASE", role="reply")

    # fd kinds: memory regions are memfds, kick/call are eventfds, the back-end channel a socket.
    region_msgs = trace.named("ADD_MEM_REG") or trace.named("SET_MEM_TABLE")
    assert region_msgs
    assert all(meta["kind"] == "memfd" for m in region_msgs for meta in m.record.fds)
    for name in ("SET_VRING_KICK", "SET_VRING_CALL"):
        fds = [meta for m in trace.named(name) for meta in m.record.fds]
        assert fds and all(meta["kind"] == "eventfd" for meta in fds), (name, fds)
    backend_req = trace.named("SET_BACKEND_REQ_FD")
    assert backend_req and backend_req[0].record.fds[0]["kind"] == "socket"
    assert backend_req[0].record.fds[0].get("interposed") == "backend"

    # The config space named: the capacity qemu-storage-daemon reported is the image's size.
    config = trace.named("GET_CONFIG", role="reply")
    assert config, "no GET_CONFIG reply"
    named = config[0].analysis.fields["device_config"]
    assert named["capacity"] * 512 == outcome.image.stat().st_size
    assert named["blk_size"] == 512 and named["num_queues"] >= 1

    # A real session from real QEMU and a real back-end: no protocol errors.
    assert [str(f) for f in trace.findings("error")] == []
