"""``show``'s second process: it renders what the first one analysed.

Reading and analysing a message costs about as much as rendering it, and the analysis
is sequential (each message changes the conversation's state), so a long trace is
shown by two processes: the parent reads and analyses, the worker renders and writes
stdout. The parent sends a token per line: a message's analysis without its decoded
payload (``analysis.analysis_token``) or a line it rendered itself (events, findings,
rare). The worker reads the same trace file on its own, which costs less than sending
the records, and rebuilds each message with ``analysis.rebuild``: the output is the
one a single process prints, byte for byte.

Tokens travel in pickled batches, each behind a 4-byte length, over a pipe between the
two processes of one command (pickle is safe there: nothing else writes to that pipe).
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import IO

from vhtrace.analysis import AnalysedMessage, analysis_token, rebuild
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import MessageRecord

RenderMessage = Callable[[AnalysedMessage], str]
"""Renders one message as the text to print (one or more lines, no final newline)."""

_BATCH = 1024
"""Tokens per pickled batch."""
_LENGTH = struct.Struct("<I")
_STDOUT_CLOSED = 141
"""The worker's exit status when stdout was closed under it (`| head`): 128 + SIGPIPE."""
_INTERRUPTED = 130
_WORKER_FAILED = 1


def available(trace_path: str) -> bool:
    """Whether a worker can run: a trace file to read again, fork, a real stdout to share."""
    if trace_path == "-" or not hasattr(os, "fork"):
        return False
    try:
        sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a StringIO (tests, embedding)
        return False
    return os.path.isfile(trace_path)


def worth_it(trace_path: str, min_bytes: int = 1 << 20) -> bool:
    """Whether a second process pays: two CPUs to run on and a trace long enough (1 MiB of
    trace is about 100,000 messages) that the fork is a small part of the time. Not from
    a process with other threads (``main()`` called by a program): a thread holding a
    lock at the fork would leave it held in the worker."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    alone = threading.active_count() == 1
    return alone and cpus >= 2 and os.path.getsize(trace_path) >= min_bytes


class RenderWorker:
    """The parent's end: queue lines and analysed messages, in output order."""

    def __init__(self, trace_path: str, render_message: RenderMessage) -> None:
        trace_fd = os.open(trace_path, os.O_RDONLY)
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            os.close(write_end)
            _serve(trace_fd, read_end, render_message)
        os.close(trace_fd)
        os.close(read_end)
        self._pid = pid
        self._pipe: IO[bytes] = os.fdopen(write_end, "wb")
        self._tokens: list[object] = []

    def message(self, index: int, item: AnalysedMessage) -> None:
        """Render the trace's message record number ``index`` (from 0, counting every
        message record read, shown or not) with this analysis."""
        tokens = self._tokens
        tokens.append((index, analysis_token(item.analysis)))
        if len(tokens) >= _BATCH:
            self._send()

    def line(self, text: str) -> None:
        self._tokens.append(text)

    def _send(self) -> None:
        data = pickle.dumps(self._tokens, pickle.HIGHEST_PROTOCOL)
        self._tokens.clear()
        self._pipe.write(_LENGTH.pack(len(data)))
        self._pipe.write(data)

    def finish(self) -> None:
        """Send what is queued, let the worker finish, and wait for it.

        Raises what a single process would have raised when the worker stopped because
        stdout was closed (BrokenPipeError) or on Ctrl-C (KeyboardInterrupt), and
        RuntimeError if it failed."""
        try:
            if self._tokens:
                self._send()
            self._pipe.close()
        except BrokenPipeError:
            pass  # the worker is gone: its status says why
        finally:
            _, status = os.waitpid(self._pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code == _STDOUT_CLOSED:
            raise BrokenPipeError("stdout closed")
        if code == _INTERRUPTED:  # Ctrl-C reached both processes
            raise KeyboardInterrupt
        if code != 0:
            raise RuntimeError(f"the rendering process failed (exit status {code})")


def _serve(trace_fd: int, token_fd: int, render_message: RenderMessage) -> None:
    """The worker's whole life: render every token, then exit without returning."""
    code = 0
    try:
        with os.fdopen(token_fd, "rb") as tokens, os.fdopen(trace_fd, "rb") as trace:
            _render(TraceReader(trace), _batches(tokens), render_message, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        code = _STDOUT_CLOSED
    except KeyboardInterrupt:
        code = _INTERRUPTED
    except BaseException:  # reported here; the parent then fails
        traceback.print_exc()
        code = _WORKER_FAILED
    finally:
        sys.stderr.flush()
        os._exit(code)


def _batches(tokens: IO[bytes]) -> Iterator[list[object]]:
    while True:
        head = tokens.read(_LENGTH.size)
        if len(head) < _LENGTH.size:
            return  # the parent closed the pipe: all sent
        (length,) = _LENGTH.unpack(head)
        yield pickle.loads(tokens.read(length))


def _render(
    reader: TraceReader,
    batches: Iterator[list[object]],
    render_message: RenderMessage,
    out: IO[str],
) -> None:
    messages = (record for record in reader if type(record) is MessageRecord)
    index = -1
    record = None
    for batch in batches:
        lines = []
        for token in batch:
            if type(token) is str:
                lines.append(token)
                continue
            wanted, analysis = token  # type: ignore[misc]
            while index < wanted:
                record = next(messages, None)
                if record is None:
                    raise RuntimeError(f"the trace ended before message record {wanted}")
                index += 1
            assert record is not None
            lines.append(render_message(rebuild(record, analysis)))
        lines.append("")
        out.write("\n".join(lines))
