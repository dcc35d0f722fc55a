"""The in-flight area: sealed when the mock makes it, refusing access past a shrunk end, and
what a restarted back-end resumes from."""

from __future__ import annotations

import os
import struct

import pytest

from mockbackend.inflight import InflightArea
from mockbackend.memory import MemoryShrunk, sealed_against_shrinking
from tests.mockbackend.test_memory import memfd


def test_the_mocks_own_inflight_area_is_sealed() -> None:
    area = InflightArea.create(1, 16)
    try:
        assert sealed_against_shrinking(area.fd) and area.sealed
        with pytest.raises(PermissionError):
            os.ftruncate(area.fd, 0)
    finally:
        area.close()


def test_an_unsealed_inflight_area_refuses_access_past_a_shrunk_end() -> None:
    fd = memfd(0x1000, seal=False)
    reported: list[tuple[str, str]] = []
    area = InflightArea(fd, 0x1000, 0, 1, 16, lambda code, text: reported.append((code, text)))
    try:
        [queue] = area.queues
        assert queue.resume(0) is None  # fresh: the version is written through the fd
        assert os.pread(fd, 2, 8) == b"\1\0"
        queue.get(3)
        assert queue.desc(3)[0] == 1
        os.ftruncate(fd, 8)
        with pytest.raises(MemoryShrunk, match="holds 0x8 bytes, expected at least 0x1000"):
            queue.get(4)
        with pytest.raises(MemoryShrunk):
            queue.desc(3)
        assert os.fstat(fd).st_size == 8, "a refused write grew the area"
        assert [code for code, _ in reported] == ["inflight-shrunk"]
    finally:
        area.close()  # closes fd


# ----------------------------------------------------------------------------
# A hostile area
# ----------------------------------------------------------------------------


def test_inflight_resume_ignores_a_hostile_last_batch_head() -> None:
    area = InflightArea.create(1, 8)
    try:
        inflight = area.queue(0)
        assert inflight is not None
        inflight.resume(0)
        struct.pack_into("<HH", inflight.view, 12, 0xFFFF, 5)  # last_batch_head, used_idx
        plan = inflight.resume(7)
        assert plan is not None and plan.resubmit == []  # bad-inputs #16: no OOB write
    finally:
        area.close()


def test_a_fresh_area_per_queue_and_the_marks_of_a_request() -> None:
    area = InflightArea.create(2, 8)
    try:
        assert area.queue(2) is None
        queue = area.queue(1)
        assert queue is not None and queue.resume(0) is None  # fresh: nothing to resume
        assert queue.version == 1
        queue.get(5)
        assert queue.desc(5)[0] == 1  # in flight
        queue.pre_put(5)
        queue.post_put(5, 1)
        assert queue.desc(5)[0] == 0 and queue.used_idx == 1
    finally:
        area.close()
