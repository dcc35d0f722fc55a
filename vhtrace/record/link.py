"""The socket between the relay and the recorder, and the recorder's process.

The relay's process does nothing but relay: for each message it has forwarded it hands
a typed item (:mod:`vhtrace.record.handoff`) and dups of the message's fds to
:class:`RecorderLink`, which queues them and sends them in batches over a unix
socketpair (the fds with SCM_RIGHTS) once the relay's loop has nothing else to do.
The recorder (:class:`vhtrace.record.recorder.Recorder`) runs in a forked process of
its own (``host="process"``, what ``vhtrace record`` uses), so it never competes with
the relay for the interpreter; tests may host it in a thread of their own process
(``host="thread"``) over the same socket, to look at its state.

Guarantees kept here:

* the relay never waits for the recorder: the queue is bounded (``MAX_QUEUED_BYTES``,
  ``MAX_QUEUED_FDS``); past it records are dropped and counted, fds shed;
* a recorder that fails (a full disk) or dies (killed) stops the recording, not the
  relay: the link says so on stderr, closes what it queued and takes no more fds;
* a relay killed with SIGKILL leaves the recorder an end of file: it writes out what
  it got (the trace then has no end record, as after any kill) and exits;
* a ``before:NAME`` hold is decided by the relay alone: the recorder asks
  (:class:`Release`), the relay answers whether the message was still held.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import itertools
import os
import select
import signal
import socket
import sys
import termios
import threading
import time
import traceback
from collections import deque
from typing import Any, Literal

from vhtrace.protocol.findings import Finding, Severity
from vhtrace.protocol.spec import SCM_MAX_FD
from vhtrace.record import handoff
from vhtrace.record import priority as sched
from vhtrace.record.handoff import (
    Answer,
    Failed,
    Finished,
    FromRecorder,
    Relayed,
    Release,
    SnapshotNow,
    Stop,
    ToRecorder,
)
from vhtrace.record.priority import PRIORITIES, StarvationWatch
from vhtrace.record.recorder import Recorder, RecorderStats
from vhtrace.trace.records import EventRecord, FindingRecord
from vhtrace.wire import close_fds

MAX_QUEUED_BYTES = 256 << 20
"""Bytes of records the relay keeps for a recorder that is behind; past it they drop."""
MAX_QUEUED_FDS = 4096
"""fds kept for it; past it the metadata of further fds is shed."""
BATCH_BYTES = 1 << 20
"""The most one sendmsg to the recorder carries."""
SEND_DELAY = 0.02
"""Records wait at most this long to be sent in a batch (a relay killed with SIGKILL loses
at most this much; the recorder writes out all it got). Control items go at once."""
SEND_BYTES = 256 << 10
"""... or until this much is queued."""
MAX_IOV = 512
POLL_INTERVAL = 0.05
"""How often the recorder looks at its timers (every:SECONDS, the writer's flush)."""
READ_BYTES = 1 << 18
FILL_READS = 16
"""Reads the recorder makes per wake-up at most (then it records what it got)."""
_FD_SIZE = array.array("i").itemsize
_CMSG_SPACE = socket.CMSG_SPACE(SCM_MAX_FD * _FD_SIZE)

WATCH_INTERVAL = 0.025
"""How often the relay looks at a recorder that has not yet recorded all it was sent
(``priority="auto"``: is it starved of CPU? see :mod:`vhtrace.record.priority`)."""

Host = Literal["process", "thread"]
_RECORDS = (Relayed, EventRecord, FindingRecord)
"""Items that may wait for a batch (the others are control items: sent at once)."""


class RecorderLink:
    """The relay's end: hand items over, never wait; learn how the recording went."""

    def __init__(
        self,
        recorder: Recorder,
        host: Host = "process",
        send_delay: float = SEND_DELAY,
        priority: str = "auto",
    ) -> None:
        if priority not in PRIORITIES:
            raise ValueError(f"recorder priority {priority!r}: one of {', '.join(PRIORITIES)}")
        self.recorder = recorder
        self.priority = priority
        """PRIORITIES: how the recorder's process gives way to the relay."""
        self._can_raise = priority != "normal" and host == "process" and sched.may_raise()
        self._watch: StarvationWatch | None = None
        """With "auto": raises a starved recorder (started with its process)."""
        self._next_watch: float | None = None
        """When to look at the recorder again (None: it has recorded all it was sent)."""
        self.send_delay = send_delay
        """How long records may wait to go in a batch (0: each turn of the relay's loop)."""
        """Usable in this process only with ``host="thread"`` (the process has a copy)."""
        self.host = host
        self.sock, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self._bell = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        """Rung after each batch: the recorder waits on it, not on the socket (see serve)."""
        self._out: deque[list[Any]] = deque()
        """[data, fds] not yet sent, in order: the encoded items (a bytearray) that follow
        an item with fds, or that come first, run together up to BATCH_BYTES, so that a
        batch costs one sendmsg, not a Python turn per item (that turn was the relay's
        p99: ~0.5 us per item, 300 us for a batch)."""
        self._queued = 0
        self._queued_fds = 0
        self._unpacker = handoff.unpacker()
        self._snapshot_requests: list[str] = []
        self.dropped = 0
        self._dropped_unreported = 0
        self.dead = False
        """The recorder failed or is gone: nothing more is handed over."""
        self.finished = False
        self.stats = RecorderStats()
        """The recorder's statistics, once it has finished or failed."""
        self._pid = 0
        self._thread: threading.Thread | None = None
        self._blocked = False
        self._due: float | None = None
        """When the oldest unsent record must go (None: nothing waits, or it goes now)."""
        self._urgent = False
        self.wake: Any = None
        """Set by the relay: makes its loop run (and so flush) now; signal-safe."""

    # -- starting ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the recorder (its process, or its thread)."""
        if self.host == "thread":
            self._thread = threading.Thread(
                target=serve,
                args=(self._theirs, self.recorder, self._bell),
                name="vhtrace-recorder",
                daemon=True,
            )
            self._thread.start()
            return
        keep = {0, 1, 2, self._theirs.fileno(), self._bell, *self.recorder.writer.fds()}
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        pid = os.fork()
        if pid == 0:  # the recorder's process
            code = 1
            try:
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
                    signal.signal(sig, signal.SIG_IGN)  # the relay tells it when to stop
                sched.lower_self(self.priority, self._can_raise)  # relay and peers go first
                _close_all_but(keep)
                serve(self._theirs, self.recorder, self._bell)
                code = 0
            except BaseException:  # said, then the process ends
                traceback.print_exc()
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        self._pid = pid
        if self.priority == "auto" and self._can_raise:
            self._watch = StarvationWatch()
        self._theirs.close()
        self.recorder.writer.forget()  # the recorder's process writes it now

    @property
    def pid(self) -> int:
        """The recorder's process (0 with ``host="thread"`` or once it is gone)."""
        return self._pid

    @property
    def memory(self) -> Any:
        """The recorder's snapshot state (``host="thread"`` only: tests look at it)."""
        if self.host != "thread":
            raise RuntimeError("the recorder runs in its own process")
        return self.recorder.memory

    # -- handing over (the relay's side; never blocks) --------------------------------------

    @property
    def accepting(self) -> bool:
        """False once the recorder has failed: hand it no more fds."""
        return not self.dead

    @property
    def queued_fds(self) -> int:
        """fds copied for the recorder and not yet handed over (the relay's, until then)."""
        return self._queued_fds

    def has_room_for_fds(self, count: int) -> bool:
        return not self.dead and self._queued_fds + count <= MAX_QUEUED_FDS

    def submit(self, item: ToRecorder, fds: list[int] | None = None) -> bool:
        """Queue an item and its fds (ours now); False if dropped (then the fds are closed)."""
        fds = fds or []
        size = item.size if isinstance(item, Relayed) else 0
        if self.dead or (size and self._queued + size > MAX_QUEUED_BYTES):
            if not self.dead:
                self.dropped += 1
                self._dropped_unreported += 1
            close_fds(fds)
            return False
        if self._dropped_unreported:
            self._report_drops()
        data = handoff.encode(item)
        out = self._out
        if not fds and out and len(out[-1][0]) + len(data) <= BATCH_BYTES:
            out[-1][0] += data  # rides on the last item's sendmsg
        else:
            out.append([bytearray(data), fds])  # fds start a sendmsg of their own
        self._queued += len(data)
        self._queued_fds += len(fds)
        if not isinstance(item, _RECORDS) or (isinstance(item, Relayed) and item.hold):
            self._urgent = True  # the recorder acts on it (a hold, a snapshot, an answer)
        elif self._due is None:
            self._due = time.monotonic() + self.send_delay
        return True

    def timeout(self, now: float) -> float | None:
        """Seconds until queued records are due, or the recorder is to be looked at
        (None: nothing is waiting)."""
        watch = None if self._next_watch is None else max(0.0, self._next_watch - now)
        if not self._out or self.dead or self._blocked:
            return watch  # (blocked: the relay waits for the socket to take more)
        if self._urgent or self._due is None or self._queued >= SEND_BYTES:
            return 0.0
        due = max(0.0, self._due - now)
        return due if watch is None else min(due, watch)

    def flush_due(self) -> None:
        """Send what is due: control items at once, records in batches (SEND_DELAY)."""
        while self._snapshot_requests:
            self.submit(SnapshotNow(self._snapshot_requests.pop(0)))
        now = time.monotonic()
        if self._next_watch is not None and now >= self._next_watch:
            self._look_at_recorder(now)
        wait = self.timeout(now)
        if wait is not None and wait <= 0:
            self.flush()

    def request_snapshot(self, trigger: str = "signal") -> None:
        """Safe from a signal handler (and from another thread): the next flush() hands
        it over, and the relay's loop is woken for it."""
        self._snapshot_requests.append(trigger)
        if self.wake is not None:
            self.wake()

    def wants_write(self) -> bool:
        """The socket did not take all that was due: send more once it is writable."""
        return self._blocked and bool(self._out) and not self.dead

    def flush(self) -> None:
        """Send what is queued, as far as the socket takes it now."""
        while self._snapshot_requests:
            self.submit(SnapshotNow(self._snapshot_requests.pop(0)))
        self._blocked = False
        while self._out and not self.dead:
            first = self._out[0]
            if len(first[1]) > SCM_MAX_FD:
                # More fds than one sendmsg takes: the rest ride on the item's next bytes.
                self._out.appendleft([first[0][:1], first[1][:SCM_MAX_FD]])
                del first[0][:1]
                first[1] = first[1][SCM_MAX_FD:]
                first = self._out[0]
            parts, fds, size = [first[0]], first[1], len(first[0])
            for data, item_fds in itertools.islice(self._out, 1, MAX_IOV):
                if item_fds or size + len(data) > BATCH_BYTES:
                    break  # an item's fds start a sendmsg of their own: see _Reader
                parts.append(data)
                size += len(data)
            ancillary = (
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
            )
            try:
                sent = self.sock.sendmsg(parts, ancillary)
            except (BlockingIOError, InterruptedError):
                self._blocked = True
                return
            except OSError as exc:
                self.read()  # its last words (Failed) may be waiting
                if not self.dead:
                    reason = self._exit_reason() or f"the recorder stopped reading ({exc.strerror})"
                    self._gone(reason)
                return
            close_fds(fds)  # the kernel has its copies now
            with contextlib.suppress(OSError):
                os.eventfd_write(self._bell, 1)
            if self._watch is not None and self._next_watch is None:
                self._next_watch = time.monotonic() + WATCH_INTERVAL
            first[1] = []  # they went with its first byte
            self._queued_fds -= len(fds)
            self._queued -= sent
            while sent:
                entry = self._out[0]
                if sent < len(entry[0]):
                    del entry[0][:sent]
                    break
                sent -= len(entry[0])
                self._out.popleft()
        if not self._out:
            self._due, self._urgent = None, False

    def read(self) -> list[FromRecorder]:
        """What the recorder said (call when the socket is readable)."""
        items: list[FromRecorder] = []
        while True:
            try:
                data = self.sock.recv(READ_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                data = b""
                reason = exc.strerror or str(exc)
            else:
                reason = ""
            if not data:
                if not self.dead and not self.finished:
                    self._gone(self._exit_reason() or reason or "the recorder is gone")
                break
            self._unpacker.feed(data)
            for fields in self._unpacker:
                item = handoff.decode(fields)
                if isinstance(item, Failed):
                    self.stats = RecorderStats.from_dict(item.stats)
                    self._dead()
                elif isinstance(item, Finished):
                    self.stats = RecorderStats.from_dict(item.stats)
                    self.finished = True
                items.append(item)  # type: ignore[arg-type]
        return items

    # -- stopping ----------------------------------------------------------------------

    def stop(self, summary_extra: dict[str, Any] | None = None, timeout: float = 60.0) -> None:
        """Tell the recorder to finish the trace and wait until it has (or is gone)."""
        extra = dict(summary_extra or {})
        if self.dropped:
            extra["dropped"] = self.dropped
        if self.times_raised:
            extra["recorder_raised"] = self.times_raised
        if not self.dead:
            self.submit(Stop(extra))
            if self._can_raise and self._pid:
                # Relaying is over: nothing to give way to; a starved recorder finishes now.
                sched.set_idle(self._pid, False)
        deadline = time.monotonic() + timeout
        while not (self.finished or self.dead) and time.monotonic() < deadline:
            self.flush()
            events = select.POLLIN | (select.POLLOUT if self.wants_write() else 0)
            poller = select.poll()
            poller.register(self.sock, events)
            if poller.poll(100):
                for item in self.read():
                    if isinstance(item, Release):  # the relay has let every hold go
                        self.submit(Answer(item.hold, False))
        if not (self.finished or self.dead):
            self._gone(f"the recorder did not finish the trace within {timeout:g} s")
        self.stats.dropped = max(self.stats.dropped, self.dropped)
        self.join()
        self.sock.close()
        with contextlib.suppress(OSError):
            os.close(self._bell)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the recorder to end (it ends on Stop, on a failure, or when killed)."""
        if self._thread is not None:
            self._thread.join(timeout)
        elif self._pid:
            if self.dead and not self.finished:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._pid, signal.SIGKILL)
            deadline = None if timeout is None else time.monotonic() + timeout
            with contextlib.suppress(ChildProcessError):
                while not os.waitpid(self._pid, 0 if deadline is None else os.WNOHANG)[0]:
                    if time.monotonic() >= deadline:  # type: ignore[operator]
                        return
                    time.sleep(0.01)
            self._pid = 0

    def is_alive(self) -> bool:
        if self._thread is not None:
            return self._thread.is_alive()
        return not self.dead and not self.finished

    @property
    def failed(self) -> bool:
        return bool(self.stats.failed)

    @property
    def times_raised(self) -> int:
        """How often a starved recorder was raised (``priority="auto"``)."""
        return self._watch.times_raised if self._watch is not None else 0

    def _unread(self) -> int:
        """Bytes sent to the recorder that it has not read yet (the socket's outq)."""
        try:
            got = fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        except OSError:
            return 0
        return int.from_bytes(got, sys.byteorder, signed=True)

    def _look_at_recorder(self, now: float) -> None:
        """Raise the recorder while it is behind and waiting for a CPU; lower it again
        once it has recorded all it was sent (``priority="auto"``)."""
        watch = self._watch
        if watch is None or self.dead or not self._pid:
            self._next_watch = None
            return
        behind = bool(self._out) or self._unread() > 0 or sched.is_runnable(self._pid)
        action = watch.observe(now, behind, sched.run_queue_wait(self._pid))
        if action == "raise":
            if not sched.set_idle(self._pid, False):
                self._watch = None  # refused after all (a security module): stay idle
                print(
                    "vhtrace: the recorder is starved of CPU and may not be raised: it "
                    "falls behind while every CPU is busy (--recorder-priority normal avoids it)",
                    file=sys.stderr,
                )
            elif watch.times_raised == 1:
                print(
                    "vhtrace: every CPU is busy: the recorder runs at normal priority "
                    "whenever it falls behind",
                    file=sys.stderr,
                )
        elif action == "lower":
            sched.set_idle(self._pid, True)
        self._next_watch = now + WATCH_INTERVAL if behind or watch.raised else None

    # -- failures ----------------------------------------------------------------------

    def _dead(self) -> None:
        self.dead = True
        for _, fds in self._out:
            close_fds(fds)
        self._out.clear()
        self._queued = self._queued_fds = 0

    def _gone(self, reason: str) -> None:
        """The recorder went away without saying why: say it here, keep relaying.

        What it had been sent but not yet written is lost with it: the trace shows how far
        it got (it has no end record)."""
        self._dead()
        if self.stats.failed:
            return
        self.stats.failed = reason
        print(
            f"vhtrace: recording failed: {reason}; nothing more is recorded; relaying goes on",
            file=sys.stderr,
        )

    def _exit_reason(self, wait: float = 0.2) -> str:
        """How the recorder's process ended ('' if it has not, or is not ours)."""
        deadline = time.monotonic() + wait
        while self._pid:
            try:
                pid, status = os.waitpid(self._pid, os.WNOHANG)
            except ChildProcessError:
                return ""
            if not pid:
                if time.monotonic() >= deadline:
                    return ""
                time.sleep(0.01)
                continue
            self._pid = 0
            if os.WIFSIGNALED(status):
                name = signal.Signals(os.WTERMSIG(status)).name
                return f"the recorder process was killed ({name})"
            return f"the recorder process exited ({os.WEXITSTATUS(status)})"
        return ""

    def _report_drops(self) -> None:
        count, self._dropped_unreported = self._dropped_unreported, 0
        finding = Finding(
            None,
            "",
            "records-dropped",
            f"{count} records dropped: the recorder could not keep up "
            f"({MAX_QUEUED_BYTES >> 20} MiB queued)",
            Severity.ERROR,
        )
        self.submit(FindingRecord(0, finding))


# -- the recorder's side --------------------------------------------------------------------


class _Reader:
    """Items and their fds from the relay, in order.

    Which item owns which fds, exactly, even when this process runs short of fds and the
    kernel drops some (MSG_CTRUNC): the link starts a sendmsg at every item that has fds
    and gives it only that item's fds (at most SCM_MAX_FD: an item with more has the rest
    on its next bytes, in further sendmsgs), and a unix socket's recvmsg hands out the
    fds of at most one sendmsg. So each read that brings fds, or says it dropped some,
    is one group, and an item with n fds owns the next ceil(n / SCM_MAX_FD) groups."""

    def __init__(self, sock: socket.socket, bell: int | None = None) -> None:
        self.sock = sock
        self.bell = bell
        self.unpacker = handoff.unpacker()
        self.groups: deque[list[int]] = deque()
        self.pending: deque[tuple[ToRecorder, list[int]]] = deque()
        self.eof = False

    def fill(self, timeout: float | None) -> None:
        """Read what is there (waiting up to ``timeout``; None: block for one read).

        With a timeout it waits on the relay's bell (an eventfd), not on the socket: a
        socket's wake-up is a "sync" one, which puts the recorder on the relay's CPU,
        in the way of the relay; an eventfd's lets it run on an idle one. An end of
        file (the relay killed) is seen at the timeout. What is already waiting is read
        first, without waiting: one read brings at most one sendmsg's fds, and the relay
        rings the bell once for many of them."""
        if timeout is None:
            self._read_once(socket.MSG_CMSG_CLOEXEC)
            return
        if self._read_waiting() or self.eof:
            return
        watched = self.sock.fileno() if self.bell is None else self.bell
        ready, _, _ = select.select([watched], [], [], timeout)
        if ready and self.bell is not None:
            with contextlib.suppress(OSError):
                os.eventfd_read(self.bell)
        self._read_waiting()

    def _read_waiting(self) -> bool:
        """Up to FILL_READS reads of what is there now; True if anything was."""
        got = False
        for _ in range(FILL_READS):
            if not self._read_once(socket.MSG_CMSG_CLOEXEC | socket.MSG_DONTWAIT):
                break
            got = True
        return got

    def _read_once(self, flags: int) -> bool:
        """One recvmsg; False if nothing was there (or the end of file)."""
        try:
            data, ancdata, msg_flags, _ = self.sock.recvmsg(READ_BYTES, _CMSG_SPACE, flags)
        except (BlockingIOError, InterruptedError):
            return False
        except ConnectionResetError:
            data, ancdata, msg_flags = b"", [], 0
        group: list[int] = []
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                group.extend(array.array("i", payload[: len(payload) - len(payload) % _FD_SIZE]))
        if group or msg_flags & socket.MSG_CTRUNC:
            self.groups.append(group)
        if not data:
            self.eof = True
            return False
        self.unpacker.feed(data)
        for fields in self.unpacker:
            item = handoff.decode(fields)
            count = item.nfds if isinstance(item, Relayed) else 0
            fds: list[int] = []
            for _ in range(-(-count // SCM_MAX_FD)):
                if self.groups:
                    fds += self.groups.popleft()
            close_fds(fds[count:])
            del fds[count:]  # fewer than count: the kernel dropped some (serve says so)
            self.pending.append((item, fds))  # type: ignore[arg-type]
        return True

    def answer(self, hold: int, send: Any) -> bool:
        """Ask the relay whether the held message ``hold`` may go; True if it was held."""
        send(Release(hold))
        while not self.eof:
            for index, (item, _) in enumerate(self.pending):
                if isinstance(item, Answer) and item.hold == hold:
                    del self.pending[index]
                    return item.held
            self.fill(None)
        return False

    def close_pending(self) -> None:
        for _, fds in self.pending:
            close_fds(fds)
        self.pending.clear()
        for group in self.groups:
            close_fds(group)
        self.groups.clear()


class RemoteHold:
    """A held message as the recorder sees it: releasing it asks the relay."""

    __slots__ = ("_ask", "expired", "hold", "released")

    def __init__(self, hold: int, ask: Any) -> None:
        self.hold = hold
        self._ask = ask
        self.released = False
        self.expired = False

    @property
    def done(self) -> bool:
        return self.released or self.expired

    def release(self) -> bool:
        if self.done:
            return self.released
        if self._ask(self.hold):
            self.released = True
        else:
            self.expired = True
        return self.released


def serve(sock: socket.socket, recorder: Recorder, bell: int | None = None) -> None:
    """The recorder's loop: items from the relay until Stop (or the relay is gone)."""
    sock.setblocking(True)
    reader = _Reader(sock, bell)

    def send(item: FromRecorder) -> None:
        with contextlib.suppress(OSError):
            sock.sendall(handoff.encode(item))

    def ask(hold: int) -> bool:
        return reader.answer(hold, send)

    try:
        while True:
            if not reader.pending:
                recorder.tick()
                if reader.eof:  # the relay is gone (killed): keep what came, no end record
                    recorder.writer.flush()
                    return
                reader.fill(POLL_INTERVAL)
                continue
            item, fds = reader.pending.popleft()
            if isinstance(item, Stop):
                recorder.finish(item.summary)
                send(Finished(recorder.stats.as_dict()))
                return
            if isinstance(item, Answer):
                continue  # for a hold already given up
            hold = RemoteHold(item.hold, ask) if isinstance(item, Relayed) and item.hold else None
            recorder.handle(item, fds, hold)
            if isinstance(item, Relayed) and len(fds) < item.nfds:
                recorder.handle(_lost(item, item.nfds - len(fds)), [], None)
    except BaseException as exc:  # a failed write must be loud, not silent
        reader.close_pending()
        recorder.failed(exc)
        stats = recorder.stats
        print(
            f"vhtrace: recording failed: {exc}; nothing recorded from message "
            f"#{stats.unrecorded_from} on",
            file=sys.stderr,
        )
        send(Failed(stats.as_dict()))
    finally:
        reader.close_pending()
        sock.close()


def _lost(item: Relayed, count: int) -> FindingRecord:
    """A finding for fds the kernel dropped on their way to the recorder."""
    record = item.record
    text = (
        f"metadata of {count} of {item.nfds} fds lost: the kernel dropped them on their "
        f"way to the recorder (short of fds)"
    )
    return FindingRecord(record.session, Finding(record.seq, "", "fd-metadata-lost", text))


def _close_all_but(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)
