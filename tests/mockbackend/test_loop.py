"""One connection served by the mock: dispatch, the acks it owes, script errors, the end.

The loop runs on a thread over a socketpair; the test is the front-end, speaking bytes."""

from __future__ import annotations

import socket
import threading

from mockbackend import BlkDevice, Script
from mockbackend.connection_report import Report
from mockbackend.loop import ConnectionLoop
from vhtrace.protocol import spec
from vhtrace.protocol.framing import Frame, unpack_header
from vhtrace.protocol.messages import build, resolve
from vhtrace.wire import send_frame


class Served:
    """A ConnectionLoop on a thread, and the front-end's end of its socket."""

    def __init__(self, script: Script) -> None:
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.loop = ConnectionLoop(theirs, script)
        self.report: Report | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.report = self.loop.run()

    def reply(self) -> Frame:
        request, flags, size = unpack_header(self.sock.recv(spec.HEADER_SIZE, socket.MSG_WAITALL))
        payload = self.sock.recv(size, socket.MSG_WAITALL) if size else b""
        return Frame(request, flags, size, payload)

    def close(self) -> Report:
        self.sock.close()
        self.thread.join(5)
        assert self.report is not None
        return self.report


def test_the_device_answers_and_the_front_end_closing_ends_the_loop(tmp_path) -> None:
    disk = tmp_path / "d.img"
    disk.write_bytes(bytes(4096))
    served = Served(Script(BlkDevice(str(disk))))
    send_frame(served.sock, build("GET_FEATURES"))
    reply = served.reply()
    assert reply.request == resolve("GET_FEATURES").id and reply.flags == spec.REPLY_FLAGS
    assert int.from_bytes(reply.payload, "little") >> spec.VIRTIO_F_VERSION_1 & 1
    report = served.close()
    assert report.closed_by == "closed by the front-end"
    assert report.violations == [] and report.ok()


def test_a_handler_that_raises_is_a_script_error_and_a_failed_ack(tmp_path) -> None:
    script = Script()

    @script.on("SET_OWNER")
    def owner(ctx, msg):
        raise RuntimeError("no owner for you")

    served = Served(script)
    send_frame(served.sock, build("SET_OWNER", need_reply=True))
    ack = served.reply()
    assert ack.request == resolve("SET_OWNER").id and int.from_bytes(ack.payload, "little") == 1
    report = served.close()
    [error] = report.script_errors
    assert error.startswith("#1 SET_OWNER: handler raised at ") and "no owner for you" in error
    assert not report.ok()


def test_a_need_reply_the_handlers_leave_unanswered_is_acked_with_0() -> None:
    script = Script()
    script.on("SET_OWNER")(lambda ctx, msg: None)
    served = Served(script)
    send_frame(served.sock, build("SET_OWNER", need_reply=True))
    assert int.from_bytes(served.reply().payload, "little") == 0
    served.close()


def test_hooks_run_before_and_after_each_message() -> None:
    script, seen = Script(), []
    script.before("GET_QUEUE_NUM")(lambda ctx, msg: seen.append(("before", msg.name)))
    script.after("*")(lambda ctx, msg, sent: seen.append(("after", msg.name, sent is not None)))
    served = Served(script)
    send_frame(served.sock, build("GET_QUEUE_NUM"))
    served.reply()
    send_frame(served.sock, build("SET_OWNER"))
    served.close()
    assert seen == [("before", "GET_QUEUE_NUM"), ("after", "GET_QUEUE_NUM", True),
                    ("after", "SET_OWNER", False)]  # fmt: skip


def test_half_a_message_at_close_is_a_truncated_violation() -> None:
    served = Served(Script())
    served.sock.sendall(build("SET_VRING_NUM", {"index": 0, "num": 8}).raw[:7])
    report = served.close()
    assert [f.code for f in report.violations] == ["truncated"]
