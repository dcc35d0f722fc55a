"""The reader streams: its memory does not grow with the trace, and it reads as it goes."""

from __future__ import annotations

import io
import tracemalloc

import pytest

from vhtrace.trace.reader import READ_CHUNK, TraceReader


def peak_while_reading(path) -> tuple[int, int]:
    """(records, peak bytes allocated) over reading the whole trace."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        count = 0
        for _ in TraceReader(path):
            count += 1
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return count, peak


@pytest.fixture(scope="module")
def small_and_large(tmp_path_factory, write_trace):
    where = tmp_path_factory.mktemp("streaming")
    # both larger than the reader's read size, the second three times the first
    small = write_trace(where / "small.vht", 100_000)
    large = write_trace(where / "large.vht", 300_000)
    return small, large


def test_memory_while_reading_does_not_grow_with_the_trace(small_and_large) -> None:
    small, large = small_and_large
    small_count, small_peak = peak_while_reading(small)
    large_count, large_peak = peak_while_reading(large)
    assert large_count > 2.9 * small_count
    # three times the records (3 MiB of zstd, 20 MiB of records), the same working set:
    # a read chunk, a frame's worth of records and their buffers
    assert large_peak < 1.2 * small_peak
    assert large_peak < 16 << 20


class CountingFile(io.BufferedReader):
    """A file that remembers how far it was read."""

    def __init__(self, path) -> None:
        super().__init__(io.FileIO(path, "rb"))
        self.consumed = 0

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self.consumed += len(data)
        return data


def test_records_come_out_before_the_file_is_read_to_its_end(small_and_large) -> None:
    _, large = small_and_large
    size = large.stat().st_size
    assert size > 2 * READ_CHUNK
    with CountingFile(large) as source:
        records = iter(TraceReader(source))
        next(records)
        assert source.consumed <= READ_CHUNK + 4
        for _ in range(1000):
            next(records)
        assert source.consumed < size
