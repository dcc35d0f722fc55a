"""The default handling of each front-end request, as libvhost-user would do it.

One function per request, looked up by name in :data:`HANDLERS`; each takes the
connection's :class:`~mockbackend.context.Context` and the message and returns the
:class:`~mockbackend.messages.Answer` to send, or None. NEED_REPLY acks are added by the
loop (:mod:`mockbackend.loop`). Every handler checks what it uses (ring
index, fd present, sizes) itself: the conversation's findings report a violation, but
the handler must still not act on it unsafely. A refused request is answered with a
failure ack when the front-end asked for one, and its fds are closed.
"""

from __future__ import annotations

import logging
import os
import socket

from mockbackend import libc
from mockbackend.channel import BackendChannel
from mockbackend.context import Context, Handler
from mockbackend.inflight import InflightArea
from mockbackend.memory import AccessError, DirtyLog
from mockbackend.messages import Answer, Message
from mockbackend.packed import PackedQueue
from mockbackend.postcopy import open_userfaultfd, register_missing
from mockbackend.rings import Ring, close_fd
from mockbackend.virtqueue import SplitQueue, VirtqueueError
from vhtrace.protocol import payloads, spec, virtio
from vhtrace.protocol.spec import ProtocolFeature

log = logging.getLogger("mockbackend")


def _refuse(ctx: Context, msg: Message, why: str) -> Answer | None:
    ctx.error(f"#{msg.seq} {msg.name} refused: {why}")
    return Answer.ack(1) if msg.need_reply else None


def _ring(ctx: Context, msg: Message) -> Ring | None:
    index = msg.fields.get("index")
    return ctx.ring(index) if isinstance(index, int) else None


# -- negotiation ----------------------------------------------------------------------


def get_features(ctx: Context, msg: Message) -> Answer:
    return Answer({"features": ctx.script.features})


def set_features(ctx: Context, msg: Message) -> Answer | None:
    features = msg.fields.get("features", 0)
    if not features >> spec.VIRTIO_F_PROTOCOL_FEATURES & 1:
        for ring in ctx.rings:  # without PROTOCOL_FEATURES rings start enabled
            ring.enabled = True
    return None


def get_protocol_features(ctx: Context, msg: Message) -> Answer:
    return Answer({"features": ctx.script.protocol_features})


def nothing(ctx: Context, msg: Message) -> Answer | None:
    return None


def get_queue_num(ctx: Context, msg: Message) -> Answer:
    device = ctx.device
    if device is not None and ctx.script.queues == device.num_queues:
        return Answer({"value": device.reported_queues})
    return Answer({"value": ctx.script.queues})


def get_max_mem_slots(ctx: Context, msg: Message) -> Answer:
    return Answer({"value": ctx.script.max_mem_slots})


def reset(ctx: Context, msg: Message) -> Answer | None:
    for ring in ctx.rings:
        ctx.stop_ring(ring)
        ring.enabled = False
        ring.broken = None
        ring.queue = None
    if ctx.device is not None:
        ctx.device.reset()
    return None


def set_status(ctx: Context, msg: Message) -> Answer | None:
    ctx.status = msg.fields.get("status", 0)
    if ctx.status == 0:
        reset(ctx, msg)
    return None


def get_status(ctx: Context, msg: Message) -> Answer:
    return Answer({"status": ctx.status})


# -- memory ---------------------------------------------------------------------------


def _map(ctx: Context, fd: int, region: dict, postcopy: bool) -> int:
    prot = libc.PROT_NONE if postcopy else libc.PROT_READ | libc.PROT_WRITE
    flags = libc.MAP_SHARED | (libc.MAP_NORESERVE if postcopy else 0)
    mapped = ctx.memory.add(
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
        mapped.awaiting_ack = True
        ctx.postcopy_pending.append(mapped)
    return mapped.host_addr


def set_mem_table(ctx: Context, msg: Message) -> Answer | None:
    if not msg.decoded:
        return _refuse(ctx, msg, "undecodable memory table")
    regions = msg.fields["regions"]
    if len(regions) > spec.MAX_MEM_REGIONS or len(regions) != len(msg.fds):
        return _refuse(ctx, msg, f"{len(regions)} regions with {len(msg.fds)} fds")
    postcopy = ctx.postcopy_listening
    reply_regions = []
    with ctx.rings_paused():
        ctx.memory.clear()
        ctx.postcopy_pending.clear()
        for i, region in enumerate(regions):
            try:
                addr = _map(ctx, msg.fds[i], region, postcopy)
            except (OSError, AccessError) as exc:
                return _refuse(ctx, msg, f"region {i}: {exc}")
            reply_regions.append({**region, "userspace_addr": addr})
        _refresh_rings(ctx)
    if postcopy:
        return Answer(
            {"nregions": len(reply_regions), "regions": reply_regions}, layout="mem_table"
        )
    return None


def add_mem_reg(ctx: Context, msg: Message) -> Answer | None:
    if not msg.decoded or len(msg.fds) != 1:
        return _refuse(ctx, msg, f"region with {len(msg.fds)} fds")
    if len(ctx.memory.regions) >= ctx.script.max_mem_slots:
        return _refuse(ctx, msg, "no free memory slot")
    postcopy = ctx.postcopy_listening
    try:
        addr = _map(ctx, msg.fds[0], msg.fields, postcopy)
    except (OSError, AccessError) as exc:
        return _refuse(ctx, msg, str(exc))
    if postcopy:
        return Answer({**msg.fields, "userspace_addr": addr}, layout="mem_region")
    return None


def rem_mem_reg(ctx: Context, msg: Message) -> Answer | None:
    if not msg.decoded:
        return _refuse(ctx, msg, "undecodable region")
    f = msg.fields
    with ctx.rings_paused():
        found = ctx.memory.remove(f["guest_phys_addr"], f["userspace_addr"], f["memory_size"])
    if not found:
        return _refuse(ctx, msg, "no such region")
    return None


def set_log_base(ctx: Context, msg: Message) -> Answer | None:
    shmfd = ctx.conversation.state.has_protocol(ProtocolFeature.LOG_SHMFD)
    fd = msg.take_fd()
    try:
        if fd is None or not msg.decoded:
            raise OSError("no log fd")
        size, offset = msg.fields["mmap_size"], msg.fields["mmap_offset"]
        if size == 0 or size + offset >= 1 << 63 or os.fstat(fd).st_size < size + offset:
            raise OSError(f"log of {size:#x} bytes at {offset:#x} does not fit its fd")
        ctx.memory.set_log(DirtyLog(fd, size, offset, ctx.memory.on_violation))
    except OSError as exc:
        _refuse(ctx, msg, str(exc))
        return Answer({"value": 1}, layout="log_reply") if shmfd else None
    finally:
        close_fd(fd)
    return Answer({"value": 0}, layout="log_reply") if shmfd else None


def set_log_fd(ctx: Context, msg: Message) -> Answer | None:
    return None  # the eventfd is closed with the message: we never need to signal it


# -- rings ----------------------------------------------------------------------------


def _ring_or_refuse(ctx: Context, msg: Message) -> Ring | None:
    ring = _ring(ctx, msg)
    if ring is None:
        _refuse(ctx, msg, f"no ring {msg.fields.get('index')}")
    return ring


def set_vring_num(ctx: Context, msg: Message) -> Answer | None:
    ring = _ring_or_refuse(ctx, msg)
    if ring is None:
        return Answer.ack(1) if msg.need_reply else None
    num = msg.fields["num"]
    limit = ctx.device.queue_size_max if ctx.device else virtio.MAX_QUEUE_SIZE
    split = not ctx.state.has_virtio(spec.VIRTIO_F_RING_PACKED)
    if ring.started or num == 0 or num > limit or (split and num & (num - 1)):
        return _refuse(ctx, msg, f"ring size {num} (limit {limit}, started {ring.started})")
    ring.num = num
    return None


def set_vring_addr(ctx: Context, msg: Message) -> Answer | None:
    ring = _ring_or_refuse(ctx, msg)
    if ring is None:
        return Answer.ack(1) if msg.need_reply else None
    f = msg.fields
    ring.desc, ring.avail, ring.used = (
        f["desc_user_addr"],
        f["avail_user_addr"],
        f["used_user_addr"],
    )
    ring.log_addr, ring.addr_flags = f["log_guest_addr"], f["flags"]
    if ring.started and ring.queue is not None:
        with ring.lock:  # QEMU re-sends addresses with F_LOG when migration starts
            _refresh_queue(ctx, ring)
    return None


def set_vring_base(ctx: Context, msg: Message) -> Answer | None:
    ring = _ring_or_refuse(ctx, msg)
    if ring is None or ring.started:
        return Answer.ack(1) if msg.need_reply else None
    ring.base = msg.fields["num"]  # split: next avail index; packed: both wrap counters too
    return None


def get_vring_base(ctx: Context, msg: Message) -> Answer:
    index = msg.fields.get("index", 0)
    ring = ctx.ring(index)
    if ring is None:
        ctx.error(f"#{msg.seq} GET_VRING_BASE for unknown ring {index}")
        return Answer({"index": index, "num": 0})
    ctx.stop_ring(ring)
    if ring.queue is not None:
        ring.base = ring.queue.base()
    ring.queue = None
    ring.enabled = False
    close_fd(ring.kick_fd)
    ring.kick_fd = None
    return Answer({"index": index, "num": ring.base})


def _fd_for_ring(ctx: Context, msg: Message) -> tuple[Ring | None, int | None]:
    ring = _ring(ctx, msg)
    fd = None if msg.fields.get("nofd", True) else msg.take_fd()
    if ring is None:
        close_fd(fd)
        ctx.error(f"#{msg.seq} {msg.name} for unknown ring {msg.fields.get('index')}")
    return ring, fd


def set_vring_kick(ctx: Context, msg: Message) -> Answer | None:
    ring, fd = _fd_for_ring(ctx, msg)
    if ring is None:
        return Answer.ack(1) if msg.need_reply else None
    ctx.stop_ring(ring)
    if ring.queue is not None:  # a new kick fd for a running ring: keep its position
        ring.base = ring.queue.base()
    close_fd(ring.kick_fd)
    ring.kick_fd = fd
    ring.broken = None
    try:
        with ring.lock:
            _build_queue(ctx, ring)
    except (AccessError, VirtqueueError) as exc:
        ring.broken = str(exc)
        ctx.error(f"ring {ring.index} cannot start: {exc}")
        return None
    if not ctx.conversation.state.has_virtio(spec.VIRTIO_F_PROTOCOL_FEATURES):
        ring.enabled = True
    ctx.start_ring(ring)
    return None


def _build_queue(ctx: Context, ring: Ring) -> None:
    """Create the ring's SplitQueue from its addresses (the inflight area resumes it)."""
    state = ctx.conversation.state
    num = ring.num or 256
    mem = ctx.memory
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
    inflight = ctx.inflight.queue(ring.index) if ctx.inflight else None
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


def _refresh_queue(ctx: Context, ring: Ring) -> None:
    """Re-translate a running ring's addresses, keeping its position."""
    old = ring.queue
    if old is None:
        return
    mem = ctx.memory
    packed = isinstance(old, PackedQueue)
    desc_len, avail_len, used_len = virtio.ring_sizes(old.size, packed)
    try:
        old.place(
            mem.uaddr_to_gpa(ring.desc, desc_len),
            mem.uaddr_to_gpa(ring.avail, avail_len),
            mem.uaddr_to_gpa(ring.used, used_len),
        )
    except AccessError as exc:
        ring.broken = str(exc)
        ctx.error(f"ring {ring.index}: {exc}")


def _refresh_rings(ctx: Context) -> None:
    for ring in ctx.rings:
        if ring.queue is not None:
            _refresh_queue(ctx, ring)


def set_vring_call(ctx: Context, msg: Message) -> Answer | None:
    ring, fd = _fd_for_ring(ctx, msg)
    if ring is None:
        return Answer.ack(1) if msg.need_reply else None
    ring.set_call(fd)
    return None


def set_vring_err(ctx: Context, msg: Message) -> Answer | None:
    ring, fd = _fd_for_ring(ctx, msg)
    if ring is None:
        return Answer.ack(1) if msg.need_reply else None
    ring.set_err(fd)
    return None


def set_vring_enable(ctx: Context, msg: Message) -> Answer | None:
    ring = _ring_or_refuse(ctx, msg)
    if ring is None:
        return Answer.ack(1) if msg.need_reply else None
    ring.enabled = msg.fields.get("num") == 1
    if ring.enabled:
        ctx.wake_ring(ring)
    return None


def vring_kick(ctx: Context, msg: Message) -> Answer | None:
    ring = _ring_or_refuse(ctx, msg)
    if ring is not None:
        ctx.wake_ring(ring)
    return None


# -- config, back-end channel ---------------------------------------------------------


def get_config(ctx: Context, msg: Message) -> Answer:
    f = msg.fields
    offset, size = f.get("offset", 0), f.get("size", 0)
    if offset + size > spec.MAX_CONFIG_SIZE:
        ctx.error(f"#{msg.seq} GET_CONFIG of {size} bytes at {offset}: refused")
        return Answer({"offset": offset, "size": 0, "flags": f.get("flags", 0), "region": b""})
    space = ctx.script.config_space().ljust(spec.MAX_CONFIG_SIZE, b"\0")
    region = space[offset : offset + size]
    return Answer({"offset": offset, "size": size, "flags": f.get("flags", 0), "region": region})


def set_config(ctx: Context, msg: Message) -> Answer | None:
    f = msg.fields
    if ctx.device is not None and f and f["offset"] + f["size"] <= spec.MAX_CONFIG_SIZE:
        ctx.device.write_config(f["offset"], f["region"][: f["size"]])
    return None


def set_backend_req_fd(ctx: Context, msg: Message) -> Answer | None:
    fd = msg.take_fd()
    if fd is None:
        return _refuse(ctx, msg, "no socket fd")
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        close_fd(fd)
        return _refuse(ctx, msg, f"fd is not a socket: {exc}")
    if ctx.backend is not None:
        ctx.backend.close()
    ctx.backend = BackendChannel(sock, ctx)
    return None


# -- inflight -------------------------------------------------------------------------


def get_inflight_fd(ctx: Context, msg: Message) -> Answer:
    f = msg.fields
    num_queues, queue_size = f.get("num_queues", 0), f.get("queue_size", 0)
    limit = ctx.device.queue_size_max if ctx.device else virtio.MAX_QUEUE_SIZE
    failed = Answer(
        {"mmap_size": 0, "mmap_offset": 0, "num_queues": num_queues, "queue_size": queue_size}
    )
    if not 0 < num_queues <= len(ctx.rings) or not 0 < queue_size <= limit:
        ctx.error(f"#{msg.seq} GET_INFLIGHT_FD for {num_queues} x {queue_size}: refused")
        return failed
    if ctx.inflight is not None:
        ctx.inflight.close()  # bad-inputs #6: never keep more than one area
    area = ctx.inflight = InflightArea.create(num_queues, queue_size)
    fields = {
        "mmap_size": area.size,
        "mmap_offset": 0,
        "num_queues": num_queues,
        "queue_size": queue_size,
    }
    return Answer(fields, fds=(area.fd,))


def set_inflight_fd(ctx: Context, msg: Message) -> Answer | None:
    fd = msg.take_fd()
    f = msg.fields
    if fd is None or not f:
        close_fd(fd)
        return _refuse(ctx, msg, "no memfd")
    num_queues, queue_size = f["num_queues"], f["queue_size"]
    if not 0 < num_queues <= len(ctx.rings) or not 0 < queue_size <= virtio.MAX_QUEUE_SIZE:
        close_fd(fd)  # bad-inputs #7
        return _refuse(ctx, msg, f"{num_queues} queues x {queue_size}")
    try:
        area = InflightArea(
            fd,
            f["mmap_size"],
            f["mmap_offset"],
            num_queues,
            queue_size,
            ctx.memory.on_violation,
        )
    except (OSError, ValueError) as exc:
        close_fd(fd)
        return _refuse(ctx, msg, str(exc))
    if ctx.inflight is not None:
        ctx.inflight.close()
    ctx.inflight = area
    return None


# -- postcopy -------------------------------------------------------------------------


def postcopy_advise(ctx: Context, msg: Message) -> Answer:
    if ctx.ufd is not None:
        close_fd(ctx.ufd)
        ctx.ufd = None
    try:
        ctx.ufd = open_userfaultfd()
    except OSError as exc:
        ctx.error(f"userfaultfd unavailable: {exc}")
        return Answer(payload=b"")
    log.info("postcopy: userfaultfd created and handed to the front-end")
    return Answer(payload=b"", fds=(ctx.ufd,))


def postcopy_listen(ctx: Context, msg: Message) -> Answer:
    if ctx.ufd is None:  # libvhost-user likewise needs its postcopy_ufd from ADVISE
        ctx.error("POSTCOPY_LISTEN without a userfaultfd (no POSTCOPY_ADVISE before it)")
        return Answer({"value": 1}, layout="u64")
    if ctx.memory.regions:
        ctx.error("POSTCOPY_LISTEN with regions already mapped")
        return Answer({"value": 1}, layout="u64")
    ctx.postcopy_listening = True
    return Answer({"value": 0}, layout="u64")


def postcopy_end(ctx: Context, msg: Message) -> Answer:
    log.info("postcopy: ended")
    ctx.postcopy_listening = False
    if ctx.ufd is not None:
        close_fd(ctx.ufd)
        ctx.ufd = None
    return Answer({"value": 0}, layout="u64")


def postcopy_ack(ctx: Context, msg: Message) -> None:
    """The front-end acked our postcopy memory table: register the regions with the ufd."""
    pending, ctx.postcopy_pending = ctx.postcopy_pending, []
    if msg.fields.get("value", 1) != 0:
        ctx.error(f"#{msg.seq} postcopy ack value {msg.fields.get('value')}")
    registered = 0
    for region in pending:
        try:
            if ctx.ufd is None:
                raise OSError("no userfaultfd")
            register_missing(ctx.ufd, region.map_addr, region.map_length)
            registered += 1
        except OSError as exc:
            ctx.error(f"postcopy registration of gpa {region.guest_phys_addr:#x}: {exc}")
            try:
                libc.mprotect(region.map_addr, region.map_length, libc.PROT_READ | libc.PROT_WRITE)
            except OSError:
                continue  # still PROT_NONE: it stays untouchable
        region.awaiting_ack = False
    log.info("postcopy: %d of %d regions registered with the userfaultfd", registered, len(pending))
    return None


# -- the rest -------------------------------------------------------------------------


def ack_ok(ctx: Context, msg: Message) -> Answer:
    return Answer.ack(0)


def unsupported(ctx: Context, msg: Message) -> Answer | None:
    """Requests this mock does not implement: a failure where a reply is owed."""
    row = msg.row
    if row is None:
        ctx.error(f"#{msg.seq} unknown request {msg.request}")
        return Answer.ack(1) if msg.need_reply else None
    owed = _owed_reply(ctx, msg)
    if owed is not None:
        ctx.error(f"#{msg.seq} {msg.name} is not implemented; replying with zeros")
        return Answer(payload=bytes(payloads.LAYOUTS[owed].size or 8))
    return Answer.ack(1) if msg.need_reply else None


def _owed_reply(ctx: Context, msg: Message) -> str | None:
    """The layout of the reply the conversation says ``msg`` is owed beyond an ack (an
    intrinsic reply: GET_*, SET_LOG_BASE with LOG_SHMFD, ...); None if none is."""
    for pending in ctx.connection.conversation.pending[msg.channel]:
        if pending.seq == msg.seq and pending.kind != "ack":
            return pending.layout
    return None


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


def handle(ctx: Context, msg: Message) -> Answer | None:
    """Dispatch to the default handler of ``msg`` (undecodable payloads are refused)."""
    handler = HANDLERS.get(msg.name)
    if handler is None:
        return unsupported(ctx, msg)
    if msg.analysis.layout not in (None, "empty") and not msg.decoded:
        owed = _owed_reply(ctx, msg)
        if owed is not None:  # a reply it must get, or it waits forever
            ctx.error(f"#{msg.seq} {msg.name}: payload undecodable, not acted on; zeros replied")
            return Answer(payload=bytes(payloads.LAYOUTS[owed].size or 8))
        ctx.error(f"#{msg.seq} {msg.name}: payload undecodable, not acted on")
        return Answer.ack(1) if msg.need_reply else None
    return handler(ctx, msg)
