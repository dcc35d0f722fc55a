"""The byte-stream channels of a session: the device-state pipe and the GPU socket.

SET_DEVICE_STATE_FD hands over a pipe on which the device state flows one way until
EOF; GPU_SET_SOCKET a socket of another protocol. Replay writes its own side's recorded
bytes into such a channel (in a thread: a pipe holds 64 KiB and the peer reads at its
pace) and reads the peer's, comparing them with the recording at EOF (the GPU socket is
only drained: its protocol is not replayed).
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field

READ_SIZE = 1 << 16


@dataclass
class StreamEnd:
    """A stream channel end we read: what came so far, and what the recording says."""

    fd: int
    channel: str
    expected: bytes | None
    """The peer's recorded bytes (None: drained, not compared)."""
    got: bytearray = field(default_factory=bytearray)

    def read(self) -> bool:
        """Read what is there (non-blocking fd); True at EOF."""
        try:
            data = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if data and self.expected is not None:
            self.got += data
        return not data

    @property
    def compared(self) -> bool:
        return self.expected is not None

    def difference(self) -> str | None:
        """At EOF: how the bytes differ from the recording, or None if they do not."""
        if self.expected is None or bytes(self.got) == self.expected:
            return None
        where = "one is a prefix of the other"
        for offset, (a, b) in enumerate(zip(self.expected, self.got, strict=False)):
            if a != b:
                where = f"first difference at byte {offset}"
                break
        return (
            f"the {self.channel} stream differs: recorded {len(self.expected)} bytes, "
            f"live {len(self.got)}; {where}"
        )

    def unfinished(self, waited: float) -> str:
        recorded = len(self.expected or b"")
        return (
            f"the {self.channel} stream did not end within {waited:g} s "
            f"({len(self.got)} of {recorded} recorded bytes came)"
        )

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def write_and_close(fd: int, data: bytes) -> threading.Thread:
    """Write ``data`` to ``fd`` in a thread, then close it (EOF ends the stream)."""

    def run() -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)

    thread = threading.Thread(target=run, name="vhtrace-replay-stream", daemon=True)
    thread.start()
    return thread
