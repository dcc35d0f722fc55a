"""The default handling of each front-end request, as libvhost-user would do it.

One function per request, looked up by name in :data:`HANDLERS`; each takes the session
and the message and returns the :class:`~mockbackend.messages.Reply` to send, or None.
NEED_REPLY acks are added by the session. Every handler checks what it uses (ring
index, fd present, sizes) itself: the conversation's findings report a violation, but
the handler must still not act on it unsafely. A refused request is answered with a
failure ack when the front-end asked for one, and its fds are closed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from mockbackend import libc
from mockbackend.channel import BackendChannel
from mockbackend.inflight import InflightArea
from mockbackend.memory import AccessError, DirtyLog
from mockbackend.messages import Message, Reply
from mockbackend.packed import PackedQueue
from mockbackend.postcopy import open_userfaultfd, register_missing
from mockbackend.rings import Ring, close_fd
from mockbackend.virtqueue import SplitQueue, VirtqueueError
from vhtrace.protocol import payloads, spec, virtio
from vhtrace.protocol.spec import ProtocolFeature

if TYPE_CHECKING:
    from mockbackend.session import Session

log = logging.getLogger("mockbackend")

Handler = Callable[["Session", Message], Reply | None]


def _refuse(session: Session, msg: Message, why: str) -> Reply | None:
    session.error(f"#{msg.seq} {msg.name} refused: {why}")
    return Reply.ack(1) if msg.need_reply else None


def _ring(session: Session, msg: Message) -> Ring | None:
    index = msg.fields.get("index")
    return session.ring(index) if isinstance(index, int) else None


# -- negotiation ----------------------------------------------------------------------


def get_features(session: Session, msg: Message) -> Reply:
    return Reply({"features": session.script.features})


def set_features(session: Session, msg: Message) -> Reply | None:
    features = msg.fields.get("features", 0)
    if not features >> spec.VIRTIO_F_PROTOCOL_FEATURES & 1:
        for ring in session.rings:  # without PROTOCOL_FEATURES rings start enabled
            ring.enabled = True
    return None


def get_protocol_features(session: Session, msg: Message) -> Reply:
    return Reply({"features": session.script.protocol_features})


def nothing(session: Session, msg: Message) -> Reply | None:
    return None


def get_queue_num(session: Session, msg: Message) -> Reply:
    device = session.device
    if device is not None and session.script.queues == device.num_queues:
        return Reply({"value": device.reported_queues})
    return Reply({"value": session.script.queues})


def get_max_mem_slots(session: Session, msg: Message) -> Reply:
    return Reply({"value": session.script.max_mem_slots})


def reset(session: Session, msg: Message) -> Reply | None:
    for ring in session.rings:
        session.stop_ring(ring)
        ring.enabled = False
        ring.broken = None
        ring.queue = None
    if session.device is not None:
        session.device.reset()
    return None


def set_status(session: Session, msg: Message) -> Reply | None:
    session.status = msg.fields.get("status", 0)
    if session.status == 0:
        reset(session, msg)
    return None


def get_status(session: Session, msg: Message) -> Reply:
    return Reply({"status": session.status})


# -- memory ---------------------------------------------------------------------------


def _map(session: Session, fd: int, region: dict, postcopy: bool) -> int:
    prot = libc.PROT_NONE if postcopy else libc.PROT_READ | libc.PROT_WRITE
    flags = libc.MAP_SHARED | (libc.MAP_NORESERVE if postcopy else 0)
    mapped = session.memory.add(
        fd,
        region["guest_phys_addr"],
        region["memory_size"],
        region["userspace_addr"],
        region["mmap_offset"],
        prot=prot,
        flags=flags,
        through_map=postcopy,
    )
    if postcopy:
        session.postcopy_pending.append(mapped)
    return mapped.host_addr


def set_mem_table(session: Session, msg: Message) -> Reply | None:
    if not msg.decoded:
        return _refuse(session, msg, "undecodable memory table")
    regions = msg.fields["regions"]
    if len(regions) > spec.MAX_MEM_REGIONS or len(regions) != len(msg.fds):
        return _refuse(session, msg, f"{len(regions)} regions with {len(msg.fds)} fds")
    postcopy = session.postcopy_listening
    reply_regions = []
    with session.rings_paused():
        session.memory.clear()
        session.postcopy_pending.clear()
        for i, region in enumerate(regions):
            try:
                addr = _map(session, msg.fds[i], region, postcopy)
            except (OSError, AccessError) as exc:
                return _refuse(session, msg, f"region {i}: {exc}")
            reply_regions.append({**region, "userspace_addr": addr})
        _refresh_rings(session)
    if postcopy:
        return Reply({"nregions": len(reply_regions), "regions": reply_regions}, layout="mem_table")
    return None


def add_mem_reg(session: Session, msg: Message) -> Reply | None:
    if not msg.decoded or len(msg.fds) != 1:
        return _refuse(session, msg, f"region with {len(msg.fds)} fds")
    if len(session.memory.regions) >= session.script.max_mem_slots:
        return _refuse(session, msg, "no free memory slot")
    postcopy = session.postcopy_listening
    try:
        addr = _map(session, msg.fds[0], msg.fields, postcopy)
    except (OSError, AccessError) as exc:
        return _refuse(session, msg, str(exc))
    if postcopy:
        return Reply({**msg.fields, "userspace_addr": addr}, layout="mem_region")
    return None


def rem_mem_reg(session: Session, msg: Message) -> Reply | None:
    if not msg.decoded:
        return _refuse(session, msg, "undecodable region")
    f = msg.fields
    with session.rings_paused():
        found = session.memory.remove(f["guest_phys_addr"], f["userspace_addr"], f["memory_size"])
    if not found:
        return _refuse(session, msg, "no such region")
    return None


def set_log_base(session: Session, msg: Message) -> Reply | None:
    shmfd = session.conversation.state.has_protocol(ProtocolFeature.LOG_SHMFD)
    fd = msg.take_fd()
    try:
        if fd is None or not msg.decoded:
            raise OSError("no log fd")
        size, offset = msg.fields["mmap_size"], msg.fields["mmap_offset"]
        if size == 0 or size + offset >= 1 << 63 or os.fstat(fd).st_size < size + offset:
            raise OSError(f"log of {size:#x} bytes at {offset:#x} does not fit its fd")
        session.memory.set_log(DirtyLog(fd, size, offset, session.memory.on_violation))
    except OSError as exc:
        _refuse(session, msg, str(exc))
        return Reply({"value": 1}, layout="log_reply") if shmfd else None
    finally:
        close_fd(fd)
    return Reply({"value": 0}, layout="log_reply") if shmfd else None


def set_log_fd(session: Session, msg: Message) -> Reply | None:
    return None  # the eventfd is closed with the message: we never need to signal it


# -- rings ----------------------------------------------------------------------------


def _ring_or_refuse(session: Session, msg: Message) -> Ring | None:
    ring = _ring(session, msg)
    if ring is None:
        _refuse(session, msg, f"no ring {msg.fields.get('index')}")
    return ring


def set_vring_num(session: Session, msg: Message) -> Reply | None:
    ring = _ring_or_refuse(session, msg)
    if ring is None:
        return Reply.ack(1) if msg.need_reply else None
    num = msg.fields["num"]
    limit = session.device.queue_size_max if session.device else virtio.MAX_QUEUE_SIZE
    split = not session.state.has_virtio(spec.VIRTIO_F_RING_PACKED)
    if ring.started or num == 0 or num > limit or (split and num & (num - 1)):
        return _refuse(session, msg, f"ring size {num} (limit {limit}, started {ring.started})")
    ring.num = num
    return None


def set_vring_addr(session: Session, msg: Message) -> Reply | None:
    ring = _ring_or_refuse(session, msg)
    if ring is None:
        return Reply.ack(1) if msg.need_reply else None
    f = msg.fields
    ring.desc, ring.avail, ring.used = (
        f["desc_user_addr"],
        f["avail_user_addr"],
        f["used_user_addr"],
    )
    ring.log_addr, ring.addr_flags = f["log_guest_addr"], f["flags"]
    if ring.started and ring.queue is not None:
        with ring.lock:  # QEMU re-sends addresses with F_LOG when migration starts
            _refresh_queue(session, ring)
    return None


def set_vring_base(session: Session, msg: Message) -> Reply | None:
    ring = _ring_or_refuse(session, msg)
    if ring is None or ring.started:
        return Reply.ack(1) if msg.need_reply else None
    ring.base = msg.fields["num"]  # split: next avail index; packed: both wrap counters too
    return None


def get_vring_base(session: Session, msg: Message) -> Reply:
    index = msg.fields.get("index", 0)
    ring = session.ring(index)
    if ring is None:
        session.error(f"#{msg.seq} GET_VRING_BASE for unknown ring {index}")
        return Reply({"index": index, "num": 0})
    session.stop_ring(ring)
    if ring.queue is not None:
        ring.base = ring.queue.base()
    ring.queue = None
    ring.enabled = False
    close_fd(ring.kick_fd)
    ring.kick_fd = None
    return Reply({"index": index, "num": ring.base})


def _fd_for_ring(session: Session, msg: Message) -> tuple[Ring | None, int | None]:
    ring = _ring(session, msg)
    fd = None if msg.fields.get("nofd", True) else msg.take_fd()
    if ring is None:
        close_fd(fd)
        session.error(f"#{msg.seq} {msg.name} for unknown ring {msg.fields.get('index')}")
    return ring, fd


def set_vring_kick(session: Session, msg: Message) -> Reply | None:
    ring, fd = _fd_for_ring(session, msg)
    if ring is None:
        return Reply.ack(1) if msg.need_reply else None
    session.stop_ring(ring)
    if ring.queue is not None:  # a new kick fd for a running ring: keep its position
        ring.base = ring.queue.base()
    close_fd(ring.kick_fd)
    ring.kick_fd = fd
    ring.broken = None
    try:
        with ring.lock:
            _build_queue(session, ring)
    except (AccessError, VirtqueueError) as exc:
        ring.broken = str(exc)
        session.error(f"ring {ring.index} cannot start: {exc}")
        return None
    if not session.conversation.state.has_virtio(spec.VIRTIO_F_PROTOCOL_FEATURES):
        ring.enabled = True
    session.start_ring(ring)
    return None


def _build_queue(session: Session, ring: Ring) -> None:
    """Create the ring's SplitQueue from its addresses (the inflight area resumes it)."""
    state = session.conversation.state
    num = ring.num or 256
    mem = session.memory
    if state.has_virtio(spec.VIRTIO_F_RING_PACKED):
        desc_len, avail_len, used_len = virtio.packed_ring_sizes(num)
        ring.queue = PackedQueue(
            mem,
            num,
            mem.uaddr_to_gpa(ring.desc, desc_len),
            mem.uaddr_to_gpa(ring.avail, avail_len),
            mem.uaddr_to_gpa(ring.used, used_len),
            event_idx=state.has_virtio(spec.VIRTIO_F_EVENT_IDX),
            indirect=state.has_virtio(spec.VIRTIO_F_INDIRECT_DESC),
            base=ring.base,
        )
        return
    desc_len, avail_len, used_len = virtio.split_ring_sizes(num)
    inflight = session.inflight.queue(ring.index) if session.inflight else None
    if inflight is not None and inflight.queue_size != num:
        inflight = None
    queue = SplitQueue(
        mem,
        num,
        mem.uaddr_to_gpa(ring.desc, desc_len),
        mem.uaddr_to_gpa(ring.avail, avail_len),
        mem.uaddr_to_gpa(ring.used, used_len),
        event_idx=state.has_virtio(spec.VIRTIO_F_EVENT_IDX),
        indirect=state.has_virtio(spec.VIRTIO_F_INDIRECT_DESC),
        last_avail_idx=ring.base,
        inflight=inflight,
    )
    if inflight is not None:
        resume = inflight.resume(queue.used_idx)
        if resume is not None:
            queue.last_avail_idx = resume.last_avail_idx
            queue.resubmit = list(resume.resubmit)
            log.info(
                "ring %d resumes: %d requests in flight resubmitted",
                ring.index,
                len(resume.resubmit),
            )
            ring.signal()  # libvhost-user: "in case of I/O hang after reconnecting"
    ring.queue = queue


def _refresh_queue(session: Session, ring: Ring) -> None:
    """Re-translate a running ring's addresses, keeping its position."""
    old = ring.queue
    if old is None:
        return
    mem = session.memory
    packed = isinstance(old, PackedQueue)
    desc_len, avail_len, used_len = virtio.ring_sizes(old.size, packed)
    try:
        old.desc = mem.uaddr_to_gpa(ring.desc, desc_len)
        old.avail = mem.uaddr_to_gpa(ring.avail, avail_len)
        old.used = mem.uaddr_to_gpa(ring.used, used_len)
    except AccessError as exc:
        ring.broken = str(exc)
        session.error(f"ring {ring.index}: {exc}")


def _refresh_rings(session: Session) -> None:
    for ring in session.rings:
        if ring.queue is not None:
            _refresh_queue(session, ring)


def set_vring_call(session: Session, msg: Message) -> Reply | None:
    ring, fd = _fd_for_ring(session, msg)
    if ring is None:
        return Reply.ack(1) if msg.need_reply else None
    ring.set_call(fd)
    return None


def set_vring_err(session: Session, msg: Message) -> Reply | None:
    ring, fd = _fd_for_ring(session, msg)
    if ring is None:
        return Reply.ack(1) if msg.need_reply else None
    ring.set_err(fd)
    return None


def set_vring_enable(session: Session, msg: Message) -> Reply | None:
    ring = _ring_or_refuse(session, msg)
    if ring is None:
        return Reply.ack(1) if msg.need_reply else None
    ring.enabled = msg.fields.get("num") == 1
    if ring.enabled:
        session.wake_ring(ring)
    return None


def vring_kick(session: Session, msg: Message) -> Reply | None:
    ring = _ring_or_refuse(session, msg)
    if ring is not None:
        session.wake_ring(ring)
    return None


# -- config, back-end channel ---------------------------------------------------------


def get_config(session: Session, msg: Message) -> Reply:
    f = msg.fields
    offset, size = f.get("offset", 0), f.get("size", 0)
    if offset + size > spec.MAX_CONFIG_SIZE:
        session.error(f"#{msg.seq} GET_CONFIG of {size} bytes at {offset}: refused")
        return Reply({"offset": offset, "size": 0, "flags": f.get("flags", 0), "region": b""})
    space = session.script.config_space().ljust(spec.MAX_CONFIG_SIZE, b"\0")
    region = space[offset : offset + size]
    return Reply({"offset": offset, "size": size, "flags": f.get("flags", 0), "region": region})


def set_config(session: Session, msg: Message) -> Reply | None:
    f = msg.fields
    if session.device is not None and f and f["offset"] + f["size"] <= spec.MAX_CONFIG_SIZE:
        session.device.write_config(f["offset"], f["region"][: f["size"]])
    return None


def set_backend_req_fd(session: Session, msg: Message) -> Reply | None:
    fd = msg.take_fd()
    if fd is None:
        return _refuse(session, msg, "no socket fd")
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        close_fd(fd)
        return _refuse(session, msg, f"fd is not a socket: {exc}")
    if session.backend is not None:
        session.backend.close()
    session.backend = BackendChannel(sock, session)
    return None


# -- inflight -------------------------------------------------------------------------


def get_inflight_fd(session: Session, msg: Message) -> Reply:
    f = msg.fields
    num_queues, queue_size = f.get("num_queues", 0), f.get("queue_size", 0)
    limit = session.device.queue_size_max if session.device else virtio.MAX_QUEUE_SIZE
    failed = Reply(
        {"mmap_size": 0, "mmap_offset": 0, "num_queues": num_queues, "queue_size": queue_size}
    )
    if not 0 < num_queues <= len(session.rings) or not 0 < queue_size <= limit:
        session.error(f"#{msg.seq} GET_INFLIGHT_FD for {num_queues} x {queue_size}: refused")
        return failed
    if session.inflight is not None:
        session.inflight.close()  # bad-inputs #6: never keep more than one area
    area = session.inflight = InflightArea.create(num_queues, queue_size)
    fields = {
        "mmap_size": area.size,
        "mmap_offset": 0,
        "num_queues": num_queues,
        "queue_size": queue_size,
    }
    return Reply(fields, fds=(area.fd,))


def set_inflight_fd(session: Session, msg: Message) -> Reply | None:
    fd = msg.take_fd()
    f = msg.fields
    if fd is None or not f:
        close_fd(fd)
        return _refuse(session, msg, "no memfd")
    num_queues, queue_size = f["num_queues"], f["queue_size"]
    if not 0 < num_queues <= len(session.rings) or not 0 < queue_size <= virtio.MAX_QUEUE_SIZE:
        close_fd(fd)  # bad-inputs #7
        return _refuse(session, msg, f"{num_queues} queues x {queue_size}")
    try:
        area = InflightArea(
            fd,
            f["mmap_size"],
            f["mmap_offset"],
            num_queues,
            queue_size,
            session.memory.on_violation,
        )
    except (OSError, ValueError) as exc:
        close_fd(fd)
        return _refuse(session, msg, str(exc))
    if session.inflight is not None:
        session.inflight.close()
    session.inflight = area
    return None


# -- postcopy -------------------------------------------------------------------------


def postcopy_advise(session: Session, msg: Message) -> Reply:
    if session.ufd is not None:
        close_fd(session.ufd)
        session.ufd = None
    try:
        session.ufd = open_userfaultfd()
    except OSError as exc:
        session.error(f"userfaultfd unavailable: {exc}")
        return Reply(payload=b"")
    log.info("postcopy: userfaultfd created and handed to the front-end")
    return Reply(payload=b"", fds=(session.ufd,))


def postcopy_listen(session: Session, msg: Message) -> Reply:
    if session.memory.regions:
        session.error("POSTCOPY_LISTEN with regions already mapped")
        return Reply({"value": 1}, layout="u64")
    session.postcopy_listening = True
    return Reply({"value": 0}, layout="u64")


def postcopy_end(session: Session, msg: Message) -> Reply:
    log.info("postcopy: ended")
    session.postcopy_listening = False
    if session.ufd is not None:
        close_fd(session.ufd)
        session.ufd = None
    return Reply({"value": 0}, layout="u64")


def postcopy_ack(session: Session, msg: Message) -> None:
    """The front-end acked our postcopy memory table: register the regions with the ufd."""
    pending, session.postcopy_pending = session.postcopy_pending, []
    if msg.fields.get("value", 1) != 0:
        session.error(f"#{msg.seq} postcopy ack value {msg.fields.get('value')}")
    registered = 0
    for region in pending:
        try:
            if session.ufd is None:
                raise OSError("no userfaultfd")
            register_missing(session.ufd, region.map_addr, region.map_length)
            registered += 1
        except OSError as exc:
            session.error(f"postcopy registration of gpa {region.guest_phys_addr:#x}: {exc}")
            with contextlib.suppress(OSError):
                libc.mprotect(region.map_addr, region.map_length, libc.PROT_READ | libc.PROT_WRITE)
    log.info("postcopy: %d of %d regions registered with the userfaultfd", registered, len(pending))
    return None


# -- the rest -------------------------------------------------------------------------


def ack_ok(session: Session, msg: Message) -> Reply:
    return Reply.ack(0)


def unsupported(session: Session, msg: Message) -> Reply | None:
    """Requests this mock does not implement: a failure where a reply is owed."""
    row = msg.row
    if row is None:
        session.error(f"#{msg.seq} unknown request {msg.request}")
        return Reply.ack(1) if msg.need_reply else None
    if row.reply is spec.Reply.ALWAYS:
        session.error(f"#{msg.seq} {msg.name} is not implemented; replying with zeros")
        layout = payloads.LAYOUTS[row.reply_payload]
        return Reply(payload=bytes(layout.size or 8))
    return Reply.ack(1) if msg.need_reply else None


HANDLERS: dict[str, Handler] = {
    "GET_FEATURES": get_features,
    "SET_FEATURES": set_features,
    "SET_OWNER": nothing,
    "RESET_OWNER": reset,
    "SET_MEM_TABLE": set_mem_table,
    "SET_LOG_BASE": set_log_base,
    "SET_LOG_FD": set_log_fd,
    "SET_VRING_NUM": set_vring_num,
    "SET_VRING_ADDR": set_vring_addr,
    "SET_VRING_BASE": set_vring_base,
    "GET_VRING_BASE": get_vring_base,
    "SET_VRING_KICK": set_vring_kick,
    "SET_VRING_CALL": set_vring_call,
    "SET_VRING_ERR": set_vring_err,
    "GET_PROTOCOL_FEATURES": get_protocol_features,
    "SET_PROTOCOL_FEATURES": nothing,
    "GET_QUEUE_NUM": get_queue_num,
    "SET_VRING_ENABLE": set_vring_enable,
    "SET_BACKEND_REQ_FD": set_backend_req_fd,
    "IOTLB_MSG": ack_ok,
    "GET_CONFIG": get_config,
    "SET_CONFIG": set_config,
    "POSTCOPY_ADVISE": postcopy_advise,
    "POSTCOPY_LISTEN": postcopy_listen,
    "POSTCOPY_END": postcopy_end,
    "GET_INFLIGHT_FD": get_inflight_fd,
    "SET_INFLIGHT_FD": set_inflight_fd,
    "RESET_DEVICE": reset,
    "VRING_KICK": vring_kick,
    "GET_MAX_MEM_SLOTS": get_max_mem_slots,
    "ADD_MEM_REG": add_mem_reg,
    "REM_MEM_REG": rem_mem_reg,
    "SET_STATUS": set_status,
    "GET_STATUS": get_status,
}


def handle(session: Session, msg: Message) -> Reply | None:
    """Dispatch to the default handler of ``msg`` (undecodable payloads are refused)."""
    handler = HANDLERS.get(msg.name)
    if handler is None:
        return unsupported(session, msg)
    if msg.analysis.layout not in (None, "empty") and not msg.decoded:
        session.error(f"#{msg.seq} {msg.name}: payload undecodable, not acted on")
        row = msg.row
        if row is not None and row.reply is spec.Reply.ALWAYS:
            return unsupported(session, msg)
        return Reply.ack(1) if msg.need_reply else None
    return handler(session, msg)
