"""Writing traces: msgpack records in independent zstd frames.

Each flush ends a zstd frame and hands it to the kernel, so a writer killed
with SIGKILL leaves a trace that reads up to its last flush. The owner calls
:meth:`TraceWriter.maybe_flush` at least every ``FLUSH_INTERVAL`` (the recorder
does it from its loop); frames are also cut every ``FRAME_BYTES`` of records.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import sys
import time
from collections.abc import Callable
from typing import Any

import msgpack
import zstandard

from vhtrace import __version__
from vhtrace.protocol.findings import Finding
from vhtrace.trace import format as fmt
from vhtrace.trace.records import EventRecord, FindingRecord, MessageRecord, StreamRecord


class TraceOutputError(Exception):
    """A trace path that must not be written: it exists, is a symlink, or is in use."""


def check_output(path: str, overwrite: bool) -> None:
    """Refuse now what :meth:`TraceWriter.open` would refuse, without touching the file.

    Lets ``vhtrace record`` fail before it makes its socket; open() checks again."""
    if path == "-":
        return
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    _refuse(path, st, overwrite)
    if stat.S_ISREG(st.st_mode):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return  # unreadable: open() reports it
        try:
            _lock(path, fd)
        finally:
            os.close(fd)


def _refuse(path: str, st: os.stat_result, overwrite: bool) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise TraceOutputError(
            f"{path}: is a symlink; expected a new or regular file (a symlink is "
            "never followed, even with --force)"
        )
    if stat.S_ISREG(st.st_mode) and not overwrite:
        raise TraceOutputError(
            f"{path}: exists ({st.st_size} bytes); expected a new file "
            "(give --force to overwrite it)"
        )


def _lock(path: str, fd: int) -> None:
    """An exclusive lock on the trace for as long as ``fd`` is open: one recorder per file."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise TraceOutputError(
            f"{path}: in use: another recorder holds its lock; expected a file nobody writes"
        ) from None


def _open_private(path: str, overwrite: bool = True,
                  announce: Callable[[str], None] | None = None) -> int:  # fmt: skip
    """Open for writing, created 0600 whatever the umask: a trace holds guest memory.

    The last component is never followed if it is a symlink; an existing regular file is
    truncated only with ``overwrite`` and only once its lock is ours. A FIFO is opened as
    it is (``announce`` first says that we wait for its reader)."""
    try:
        st: os.stat_result | None = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        _refuse(path, st, overwrite)
    flags = os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    if st is not None and stat.S_ISFIFO(st.st_mode):
        if announce is not None:
            announce(f"{path}: a FIFO; waiting for a reader to open it")
        return os.open(path, flags)
    flags |= os.O_CREAT if overwrite else os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(path, flags | os.O_NONBLOCK, 0o600)
    except FileExistsError:
        raise TraceOutputError(
            f"{path}: appeared while opening it; expected a new file (give --force to overwrite it)"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TraceOutputError(f"{path}: is a symlink; expected a regular file") from None
        raise
    try:
        os.set_blocking(fd, True)
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            _lock(path, fd)
            os.ftruncate(fd, 0)
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_header(**info: Any) -> dict[str, Any]:
    """The header map: format identification plus what the caller adds."""
    header: dict[str, Any] = {
        "format": fmt.FORMAT_NAME,
        "version": fmt.FORMAT_VERSION,
        "needs": fmt.NEEDS_TOOL_VERSION[fmt.FORMAT_VERSION],
        "tool": f"vhtrace {__version__}",
        "wall_ns": time.time_ns(),
        "mono_ns": time.monotonic_ns(),
        "host": socket.gethostname(),
        "byteorder": sys.byteorder,
        "command": list(sys.argv),
    }
    header.update(info)
    return header


class TraceWriter:
    """Appends records to a trace file (or to stdout for ``-``)."""

    def __init__(self, path: str, header: dict[str, Any] | None = None, level: int = 3, *,
                 overwrite: bool = True, open_now: bool = True) -> None:  # fmt: skip
        """``overwrite=False`` refuses an existing file; ``open_now=False`` waits for open()."""
        self.path = path
        self.overwrite = overwrite
        self._fd = -1
        # The frame checksum lets a reader tell a corrupt frame from a good one: without it
        # a flipped byte often decompresses into plausible but wrong records.
        self._compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
        self._packer = msgpack.Packer(use_bin_type=True)
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._last_flush = time.monotonic()
        self.records = 0
        self.bytes_written = 0
        self.closed = False
        self.header = header if header is not None else make_header()
        self._add(self._packer.pack(self.header))
        if open_now:
            self.open()

    @property
    def opened(self) -> bool:
        return self._fd >= 0

    def open(self, announce: Callable[[str], None] | None = None) -> None:
        """Create (or, with ``overwrite``, truncate) the file and write the header.

        Raises TraceOutputError for a symlink, an existing file without ``overwrite`` or a
        file another writer holds, OSError for the rest."""
        if self.opened:
            return
        self._fd = 1 if self.path == "-" else _open_private(self.path, self.overwrite, announce)
        self.flush()

    def fds(self) -> list[int]:
        """The fd it writes to ([] before open)."""
        return [self._fd] if self._fd >= 0 else []

    def forget(self) -> None:
        """Another process writes this trace now (the recorder's): close ours, write nothing."""
        if self._fd > 2:
            os.close(self._fd)
        self._fd = -1
        self._chunks.clear()
        self.closed = True

    # -- records ---------------------------------------------------------------

    def write(self, record: MessageRecord | StreamRecord | EventRecord | FindingRecord) -> None:
        """Append one record of the kinds the recorder hands over (the reader's own types)."""
        kind = type(record)
        if kind is MessageRecord:
            self._add(self._packer.pack((fmt.TAG_MESSAGE, *record)))
        elif kind is StreamRecord:
            self._add(self._packer.pack((fmt.TAG_STREAM, *record)))
        elif kind is EventRecord:
            self._add(self._packer.pack((fmt.TAG_EVENT, *record)))
        elif kind is FindingRecord:
            self._add(self._packer.pack((fmt.TAG_FINDING, record.session,
                                         record.finding.to_dict())))  # fmt: skip
        else:
            raise TypeError(f"TraceWriter.write: not a record it writes: {record!r}")

    def message(
        self,
        seq: int,
        mono_ns: int,
        wall_ns: int,
        session: int,
        channel: str,
        sender: str,
        raw: bytes,
        fds: tuple[dict[str, Any], ...] | list[Any] = (),
        flags: int = 0,
    ) -> None:
        """Append one vhost-user message (header + payload bytes as sent)."""
        self._add(
            self._packer.pack(
                (fmt.TAG_MESSAGE, seq, mono_ns, wall_ns, session, channel, sender, raw, fds, flags)
            )
        )

    def event(
        self,
        mono_ns: int,
        wall_ns: int,
        session: int,
        event: str,
        info: dict[str, Any] | None = None,
    ) -> None:
        self._add(self._packer.pack((fmt.TAG_EVENT, mono_ns, wall_ns, session, event, info or {})))

    def finding(self, session: int, finding: Finding) -> None:
        self._add(self._packer.pack((fmt.TAG_FINDING, session, finding.to_dict())))

    def stream(
        self,
        seq: int,
        mono_ns: int,
        wall_ns: int,
        session: int,
        channel: str,
        sender: str,
        data: bytes,
        fds: tuple[dict[str, Any], ...] = (),
    ) -> None:
        self._add(
            self._packer.pack(
                (fmt.TAG_STREAM, seq, mono_ns, wall_ns, session, channel, sender, data, fds)
            )
        )

    def page(self, digest: bytes, data: bytes, codec: int = fmt.PAGE_RAW) -> None:
        """Append one page of guest memory (version 2)."""
        self._add(self._packer.pack((fmt.TAG_PAGE, digest, codec, data)))

    def extent(self, snapshot: int, session: int, space: str, addr: int, pages: int, role: str,
               base: int, items: list[int | bytes] | tuple[int | bytes, ...]) -> None:  # fmt: skip
        """Append the page map of one extent of a snapshot (version 2)."""
        self._add(self._packer.pack(
            (fmt.TAG_EXTENT, snapshot, session, space, addr, pages, role, base, items)
        ))  # fmt: skip

    def snapshot(self, snapshot: int, seq: int, mono_ns: int, wall_ns: int, session: int,
                 trigger: str, info: dict[str, Any]) -> None:  # fmt: skip
        """Append a snapshot record, committing its extents (version 2)."""
        self._add(
            self._packer.pack(
                (fmt.TAG_SNAPSHOT, snapshot, seq, mono_ns, wall_ns, session, trigger, info)
            )
        )

    # -- frames ----------------------------------------------------------------

    def _add(self, packed: bytes) -> None:
        self._chunks.append(packed)
        self._buffered += len(packed)
        self.records += 1
        if self._buffered >= fmt.FRAME_BYTES and self.opened:
            self.flush()

    def flush(self) -> None:
        """End the current zstd frame and write it out."""
        self._last_flush = time.monotonic()
        if not self._chunks or not self.opened:
            return
        frame = self._compressor.compress(b"".join(self._chunks))
        self._chunks.clear()
        self._buffered = 0
        view = memoryview(frame)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.bytes_written += len(frame)

    def maybe_flush(self, now: float | None = None) -> None:
        """Flush if the last flush is FLUSH_INTERVAL old (call this often)."""
        if now is None:
            now = time.monotonic()
        if self._chunks and now - self._last_flush >= fmt.FLUSH_INTERVAL:
            self.flush()

    def close(self, summary: dict[str, Any] | None = None) -> None:
        """Write the end record and close: the trace is complete."""
        if self.closed:
            return
        self._add(
            self._packer.pack((fmt.TAG_END, time.monotonic_ns(), time.time_ns(), summary or {}))
        )
        self.flush()
        self.closed = True
        if self._fd > 1:
            os.close(self._fd)

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
