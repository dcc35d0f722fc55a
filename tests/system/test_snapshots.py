"""Shared-memory snapshots of a real session: QEMU, qemu-storage-daemon, a Linux guest.

The guest writes a random pattern to the end of its disk and reads it back last;
the snapshot taken when the back-end answers GET_VRING_BASE must then show the
ring as the back-end left it (indices that agree with the reply) and the pattern
in the buffers the descriptors of the last requests point to. Recorded with the
default (``--memory=rings``) and with ``--memory=full``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.support import scenarios
from tests.support.tracecheck import Trace
from vhtrace.cli.main import main
from vhtrace.lab import Workspace
from vhtrace.memory.pages import PAGE_SIZE
from vhtrace.memory.plan import decode_ring
from vhtrace.memory.tracedata import SnapshotMemory, read_pages, read_snapshots
from vhtrace.trace.reader import TraceReader


def pattern_pages_in_buffers(trace: Path, number: int, pattern: bytes) -> dict[int, int]:
    """{pattern page index: gpa} of pattern pages a descriptor of snapshot ``number`` points at."""
    pages = {pattern[i : i + PAGE_SIZE]: i // PAGE_SIZE for i in range(0, len(pattern), PAGE_SIZE)}
    (snapshot,) = read_snapshots(TraceReader(trace), lambda n: n == number).snapshots
    store = read_pages(TraceReader(trace), snapshot.hashes())
    memory = SnapshotMemory(snapshot.extents, store)
    found: dict[int, int] = {}
    for config in snapshot.info["rings"]:
        view = decode_ring(config, memory)
        assert view.split is not None
        for _, ident, _ in view.split.recent_used(view.split.num):
            chain = view.split_chain(ident, memory)
            for desc in chain.buffers if chain else ():
                data = memory.read(desc.addr, desc.len) if desc.len == PAGE_SIZE else None
                if data in pages:
                    found[pages[data]] = desc.addr
    return found


@pytest.mark.lab_needs("qemu", "qsd", "qemu-img", "busybox", "kernel")
@pytest.mark.parametrize("memory", ["rings", "full"])
def test_the_pattern_read_last_is_in_the_buffers_at_ring_stop(
    lab: Workspace, memory: str, capsys: pytest.CaptureFixture[str]
) -> None:
    outcome = scenarios.blk_readback(lab, record=("--memory", memory))
    assert outcome.markers is not None and outcome.recorder is not None
    pattern = outcome.notes["pattern"]
    assert isinstance(pattern, bytes)
    assert outcome.markers["readback_md5"] == hashlib.md5(pattern).hexdigest()
    trace = Trace.read(outcome.trace)
    assert trace.problem is None, trace.problem
    assert trace.header["version"] == 2 and trace.header["options"]["memory"] == memory
    assert [str(f) for f in trace.findings("error")] == []

    # The snapshots: one per ring start and stop (QEMU starts the device twice: the
    # firmware's driver, then Linux's).
    scan = read_snapshots(TraceReader(outcome.trace))
    triggers = [s.record.trigger for s in scan.snapshots]
    assert triggers == ["start", "stop", "start", "stop"], triggers
    last = scan.snapshots[-1]
    assert last.problems == [] and list(last.info["problems"]) == []
    assert last.info["mode"] == memory

    # Ring indices agree with what the back-end said in its GET_VRING_BASE reply.
    reply = trace.named("GET_VRING_BASE", role="reply")[-1]
    assert last.record.seq == reply.record.seq
    stopped_at = reply.analysis.fields["num"]
    capsys.readouterr()
    assert main(["rings", str(outcome.trace), "--at", str(last.number), "--json"]) == 0
    (ring,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert ring["backend_base"] == stopped_at and ring["backend_base_from"] == "GET_VRING_BASE"
    assert ring["avail_idx"] == ring["used_idx"] == stopped_at, ring
    assert ring["in_flight"] == []

    # The pattern is in the buffers of the last requests (the guest frees the indirect
    # tables after completion: a table's middle descriptor may be overwritten, so not
    # every page is necessarily still pointed at).
    found = pattern_pages_in_buffers(outcome.trace, last.number, pattern)
    assert len(found) >= len(pattern) // PAGE_SIZE // 2, f"{len(found)} pattern pages found"

    # What `vhtrace memory` prints of such a buffer is the pattern.
    index, gpa = sorted(found.items())[0]
    out = lab.path("page.bin")
    assert main(["memory", str(outcome.trace), "--at", str(last.number), "--gpa", str(gpa),
                 "--len", str(PAGE_SIZE), "--out", str(out)]) == 0  # fmt: skip
    assert out.read_bytes() == pattern[index * PAGE_SIZE : (index + 1) * PAGE_SIZE]
    assert main(["show", str(outcome.trace)]) == 0
