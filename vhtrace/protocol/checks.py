"""Checks of one message against the spec, given what the conversation knows.

Each check returns problems as ``(code, text, severity)``; the conversation
turns them into :class:`~vhtrace.protocol.findings.Finding` objects with the
message number and request name. Nothing here raises on bad input: the point
is to describe it. The 20 malformed inputs of ``bad-inputs.md`` (CVE seeds)
are each caught by one of these checks, noted next to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vhtrace.protocol import spec, virtio
from vhtrace.protocol.findings import Severity
from vhtrace.protocol.payloads import (
    CRYPTO_ASYM_MAX_KEY,
    CRYPTO_SYM_MAX_AUTH_KEY,
    CRYPTO_SYM_MAX_KEY,
    IOTLB_TYPES,
    human_size,
)
from vhtrace.protocol.spec import Fds, ProtocolFeature, RequestSpec
from vhtrace.protocol.state import ConversationState, PostcopyPhase, Region

Problem = tuple[str, str, Severity]
Fields = dict[str, Any]


def error(code: str, text: str) -> Problem:
    """A problem that breaks the spec."""
    return (code, text, _ERROR)


def warning(code: str, text: str) -> Problem:
    """A problem that is allowed but suspicious."""
    return (code, text, _WARNING)


# Enum members read for most messages, as module globals: in Python 3.11 reading a member
# off its enum class (``Fds.NONE``) is an unspecialised lookup, ten times a global's cost.
_ERROR, _WARNING = Severity.ERROR, Severity.WARNING
_NO_FDS, _ONE_FD, _OPTIONAL_FD, _TOLERATED_FD = Fds.NONE, Fds.ONE, Fds.OPTIONAL, Fds.TOLERATED
_PER_REGION, _IF_LOG_SHMFD = Fds.PER_REGION, Fds.IF_LOG_SHMFD


U64_END = 1 << 64
HUGEPAGE = 1 << 21
_HUGEPAGE_WRAP = U64_END - HUGEPAGE
"""An end above this wraps when aligned up to a 2 MiB huge page."""


def _hex(value: int) -> str:
    return f"0x{value:x}"


# --------------------------------------------------------------------------
# Header
# --------------------------------------------------------------------------


def check_flags(flags: int, is_reply: bool) -> list[Problem]:
    if flags == (spec.REPLY_FLAGS if is_reply else spec.VERSION) or (
        not is_reply and flags == spec.VERSION | spec.FLAG_NEED_REPLY
    ):
        return []
    problems: list[Problem] = []
    version = flags & spec.VERSION_MASK
    if version != spec.VERSION:
        problems.append(
            error("flags-version", f"flags {_hex(flags)}: version {version}, expected 1")
        )
    if flags & spec.RESERVED_FLAGS_MASK:
        problems.append(
            error(
                "flags-reserved",
                f"flags {_hex(flags)}: reserved bits {_hex(flags & spec.RESERVED_FLAGS_MASK)} set",
            )
        )
    if is_reply:
        if not flags & spec.FLAG_REPLY:
            problems.append(
                error(
                    "flags-reply",
                    f"flags {_hex(flags)}: a reply without the REPLY "
                    "flag (QEMU requires exactly 0x5)",
                )
            )
        if flags & spec.FLAG_NEED_REPLY:
            problems.append(
                error("flags-reply", f"flags {_hex(flags)}: a reply with NEED_REPLY set")
            )
    elif flags & spec.FLAG_REPLY:
        problems.append(
            error("flags-reply", f"flags {_hex(flags)}: a request with the REPLY flag set")
        )
    return problems


def check_size(layout: str, size: int, expected: int | None, complete: bool) -> list[Problem]:
    if size == expected and complete:
        return []
    if size > spec.MAX_PAYLOAD:
        return [
            error(
                "size-limit",
                f"size {size} is above the protocol maximum {spec.MAX_PAYLOAD}; payload not kept",
            )
        ]
    if not complete:
        return []
    if expected is not None and size != expected:
        return [error("size", f"payload size {size}, expected {expected} for layout {layout}")]
    return []


# --------------------------------------------------------------------------
# File descriptors
# --------------------------------------------------------------------------


def expected_fds(rule: Fds, fields: Fields | None, state: ConversationState) -> tuple[int, int]:
    """(min, max) fds a message may carry under a rule."""
    if rule is _NO_FDS:
        return 0, 0
    if rule is _ONE_FD:
        return 1, 1
    if rule is _OPTIONAL_FD or rule is _TOLERATED_FD:
        return 0, 1
    if rule is _IF_LOG_SHMFD:
        n = 1 if state.has_protocol(ProtocolFeature.LOG_SHMFD) else 0
        return n, n
    if fields is None:
        return 0, spec.MAX_FDS
    if rule is _PER_REGION:
        n = fields["nregions"]
        return n, n
    # UNLESS_NOFD
    return (0, 0) if fields.get("nofd") else (1, 1)


def check_fds(
    rule: Fds, count: int, fields: Fields | None, state: ConversationState, name: str
) -> list[Problem]:
    if count == 0 and rule is _NO_FDS:
        return []
    problems: list[Problem] = []
    low, high = expected_fds(rule, fields, state)
    if not low <= count <= high:
        wanted = rule.value
        if rule is _PER_REGION and fields is not None:
            wanted = f"one per region ({fields['nregions']})"
        elif rule is _NO_FDS:
            wanted = "none"
        plural = "fd" if count == 1 else "fds"
        problems.append(error("fd-count", f"carries {count} {plural}, {name} takes {wanted}"))
    elif rule is _TOLERATED_FD and count:
        problems.append(warning("fd-tolerated", f"carries an fd: {spec.REM_MEM_REG_FD_NOTE}"))
    if count > spec.MAX_FDS:
        problems.append(
            error(
                "fd-limit",
                f"{count} fds: above the {spec.MAX_FDS} that QEMU, "
                "libvhost-user and DPDK accept in one message",
            )
        )
    return problems


# --------------------------------------------------------------------------
# Feature gates
# --------------------------------------------------------------------------


def check_gate(row: RequestSpec, state: ConversationState) -> list[Problem]:
    gate = row.gate
    if gate is None:
        return []
    if gate.protocol is not None:
        acked = state.protocol_acked
        if acked is None:
            return [
                error(
                    "not-negotiated",
                    f"{gate.protocol.name} not negotiated (no SET_PROTOCOL_FEATURES yet)",
                )
            ]
        if not acked >> gate.protocol & 1:
            return [error("not-negotiated", f"{gate.protocol.name} not negotiated")]
    elif gate.virtio_offered is not None:
        if not state.offered_virtio(gate.virtio_offered):
            return [error("not-negotiated", f"the back-end did not offer {gate.describe()}")]
    elif gate.virtio_acked is not None and not state.has_virtio(gate.virtio_acked):
        return [error("not-negotiated", f"{gate.describe()} not negotiated")]
    return []


# --------------------------------------------------------------------------
# Per-request semantics
# --------------------------------------------------------------------------


def check_ring_index(index: int, state: ConversationState) -> list[Problem]:
    """bad-inputs #4 (u32 -> u16 truncation), #15 and #17 (index >= queues)."""
    if index > spec.MAX_VRING_INDEX:
        return [
            error(
                "ring-index",
                f"ring index {index} ({_hex(index)}) does not fit the 16-bit virtqueue index",
            )
        ]
    bound = state.ring_bound()
    if bound is not None:
        if index >= bound:
            why = state.ring_why()
            if state.device is None and index < 2 * bound + 1:
                return [
                    warning(
                        "ring-index",
                        f"ring index {index} but the back-end has {why}; "
                        "fine only if this is a net device (queue pairs)",
                    )
                ]
            return [error("ring-index", f"ring index {index} but the back-end has {why}")]
    elif index >= spec.MAX_VRINGS:
        return [
            error(
                "ring-index",
                f"ring index {index} is above {spec.MAX_VRINGS - 1}, the most "
                "any implementation accepts",
            )
        ]
    return []


def _check_queue_size(num: int, state: ConversationState, what: str) -> list[Problem]:
    """bad-inputs #10: num 0, not a power of two, or above 32768."""
    if num == 0:
        return [error("ring-size", f"{what} 0")]
    if num > virtio.MAX_QUEUE_SIZE:
        return [error("ring-size", f"{what} {num} is above {virtio.MAX_QUEUE_SIZE}")]
    if num & (num - 1) and not state.has_virtio(spec.VIRTIO_F_RING_PACKED):
        return [error("ring-size", f"{what} {num} is not a power of two (split ring)")]
    return []


def _region_problems(region: Fields, label: str, state: ConversationState) -> list[Problem]:
    """bad-inputs #3, #10, #11: sizes and offsets that wrap or map nothing."""
    problems: list[Problem] = []
    size = region["memory_size"]
    if size == 0:
        problems.append(error("region-size", f"{label}: memory_size 0"))
    for name in ("guest_phys_addr", "userspace_addr", "mmap_offset"):
        if region[name] + size >= U64_END:
            problems.append(
                error(
                    "region-overflow",
                    f"{label}: {name} {_hex(region[name])} + "
                    f"memory_size {_hex(size)} overflows u64",
                )
            )
        elif region[name] + size > _HUGEPAGE_WRAP:
            problems.append(
                error(
                    "region-overflow",
                    f"{label}: {name} + memory_size wraps when aligned to a 2 MiB huge page",
                )
            )
    if region["userspace_addr"] != region["guest_phys_addr"] and state.has_protocol(
        ProtocolFeature.GPA_ADDRESSES
    ):
        problems.append(
            error(
                "region-gpa",
                f"{label}: GPA_ADDRESSES negotiated but userspace_addr "
                f"{_hex(region['userspace_addr'])} != guest_phys_addr "
                f"{_hex(region['guest_phys_addr'])}",
            )
        )
    return problems


def _overlap(a: Fields, b: Fields, key: str) -> bool:
    return _spans_overlap(a[key], a["memory_size"], b[key], b["memory_size"])


def _spans_overlap(a0: int, a_size: int, b0: int, b_size: int) -> bool:
    return a0 < b0 + b_size and b0 < a0 + a_size


def _overlap_problems(regions: list[Fields], labels: list[str]) -> list[Problem]:
    problems: list[Problem] = []
    for i in range(len(regions)):
        for j in range(i + 1, len(regions)):
            for key, space in (
                ("guest_phys_addr", "guest-physical"),
                ("userspace_addr", "user-address"),
            ):
                if _overlap(regions[i], regions[j], key):
                    problems.append(
                        error(
                            "region-overlap",
                            f"{labels[i]} and {labels[j]} overlap in {space} space",
                        )
                    )
    return problems


def check_mem_table(fields: Fields, state: ConversationState) -> list[Problem]:
    problems: list[Problem] = []
    n = fields["nregions"]
    if n > spec.MAX_MEM_REGIONS:
        problems.append(error("region-count", f"nregions {n} is above {spec.MAX_MEM_REGIONS}"))
    regions = fields["regions"]
    labels = [f"region {i}" for i in range(len(regions))]
    for region, label in zip(regions, labels, strict=True):
        problems += _region_problems(region, label, state)
    problems += _overlap_problems(regions, labels)
    if state.postcopy is PostcopyPhase.LISTENING and state.has_protocol(
        ProtocolFeature.CONFIGURE_MEM_SLOTS
    ):
        problems.append(
            warning(
                "postcopy-mem-slots",
                "postcopy with CONFIGURE_MEM_SLOTS negotiated: the newest spec forbids it",
            )
        )
    return problems


def check_add_mem_reg(fields: Fields, state: ConversationState) -> list[Problem]:
    problems = _region_problems(fields, "region", state)
    gpa, uaddr, size = fields["guest_phys_addr"], fields["userspace_addr"], fields["memory_size"]
    for old in state.regions:
        for space, new_start, old_start in (
            ("guest-physical", gpa, old.guest_phys_addr),
            ("user-address", uaddr, old.userspace_addr),
        ):
            if _spans_overlap(new_start, size, old_start, old.memory_size):
                problems.append(
                    error(
                        "region-overlap",
                        f"overlaps the region added by #{old.seq} in {space} space",
                    )
                )
    if state.max_mem_slots is not None and len(state.regions) >= state.max_mem_slots:
        problems.append(
            error(
                "region-count",
                f"{len(state.regions) + 1} regions, above the "
                f"{state.max_mem_slots} slots of GET_MAX_MEM_SLOTS",
            )
        )
    if state.postcopy is PostcopyPhase.LISTENING:
        problems.append(
            warning(
                "postcopy-mem-slots",
                "postcopy with CONFIGURE_MEM_SLOTS: the newest "
                "spec forbids it (QEMU 7.2 + libvhost-user break here)",
            )
        )
    return problems


def check_rem_mem_reg(fields: Fields, state: ConversationState) -> list[Problem]:
    for region in state.regions:
        if (region.guest_phys_addr, region.userspace_addr, region.memory_size) == (
            fields["guest_phys_addr"],
            fields["userspace_addr"],
            fields["memory_size"],
        ):
            return []
    return [
        warning(
            "region-unknown",
            f"no region at gpa {_hex(fields['guest_phys_addr'])} size "
            f"{human_size(fields['memory_size'])} to remove",
        )
    ]


def check_log(fields: Fields, state: ConversationState) -> list[Problem]:
    """bad-inputs #3: mmap_size + mmap_offset wrapping u64 (CVE-2020-10722)."""
    size, offset = fields["mmap_size"], fields["mmap_offset"]
    if size + offset >= U64_END:
        return [
            error(
                "log-overflow", f"mmap_size {_hex(size)} + mmap_offset {_hex(offset)} overflows u64"
            )
        ]
    if size == 0:
        return [error("log-size", "mmap_size 0")]
    if offset > size:
        # Allowed by the spec (a file offset), but DPDK mapped only mmap_size bytes and
        # wrote past them until f83e0199c8; QEMU always sends 0.
        return [warning("log-offset", f"mmap_offset {_hex(offset)} beyond mmap_size {_hex(size)}")]
    return []


def check_vring_num(fields: Fields, state: ConversationState) -> list[Problem]:
    index = fields["index"]
    problems = check_ring_index(index, state)
    problems += _check_queue_size(fields["num"], state, "ring size")
    ring = state.rings.get(index)
    if ring is not None and ring.started:
        problems.append(
            error(
                "ring-running",
                f"SET_VRING_NUM on ring {index} while it is started "
                "(no GET_VRING_BASE since its kick)",
            )
        )
    elif ring is not None and ring.num is not None and ring.num_seq is not None:
        # bad-inputs #2: DPDK leaked memory on every repeated SET_VRING_NUM.
        problems.append(
            warning(
                "ring-repeat",
                f"ring {index} size already set by #{ring.num_seq} and not used since",
            )
        )
    return problems


def _ring_parts(fields: Fields, num: int | None) -> list[tuple[str, int, int]]:
    n = num or 0
    return [
        ("descriptor table", fields["desc_user_addr"], 16 * n),
        ("avail ring", fields["avail_user_addr"], 6 + 2 * n),
        ("used ring", fields["used_user_addr"], 6 + 8 * n),
    ]


def _region_at(spans: list[tuple[int, int, Region]], addr: int) -> tuple[int, int, Region] | None:
    """The first of (start, size, region) that holds addr."""
    for span in spans:
        if span[0] <= addr < span[0] + span[1]:
            return span
    return None


def check_vring_addr(fields: Fields, state: ConversationState) -> list[Problem]:
    """bad-inputs #9: a ring that starts inside a region and runs past its end."""
    index = fields["index"]
    problems = check_ring_index(index, state)
    if fields["flags"] & ~spec.VRING_F_LOG:
        problems.append(warning("ring-flags", f"flags {_hex(fields['flags'])}: unknown bits"))
    ring = state.rings.get(index)
    if ring is not None and ring.started:
        problems.append(
            error("ring-running", f"SET_VRING_ADDR on ring {index} while it is started")
        )
    space = state.address_space()
    if space == "iova" or not state.regions:
        return problems
    num = ring.num if ring else None
    spans = [(r.start(space), r.memory_size, r) for r in state.regions]
    for part, addr, length in _ring_parts(fields, num):
        found = _region_at(spans, addr)
        if found is None:
            problems.append(
                error("ring-address", f"{part} at {_hex(addr)} is in no memory region ({space})")
            )
        elif not found[2].contains(addr, length, space):
            start, size, region = found
            problems.append(
                error(
                    "ring-address",
                    f"{part} at {_hex(addr)} + {length} crosses the end "
                    f"of the region added by #{region.seq} ({_hex(start + size)})",
                )
            )
    return problems


def check_vring_base(fields: Fields, state: ConversationState) -> list[Problem]:
    index = fields["index"]
    problems = check_ring_index(index, state)
    ring = state.rings.get(index)
    if ring is not None and ring.started:
        problems.append(
            error("ring-running", f"SET_VRING_BASE on ring {index} while it is started")
        )
    if not state.has_virtio(spec.VIRTIO_F_RING_PACKED) and fields["num"] >> 16:
        problems.append(
            warning(
                "ring-base", f"base {_hex(fields['num'])}: bits 16-31 are reserved for a split ring"
            )
        )
    return problems


def check_ring_index_only(fields: Fields, state: ConversationState) -> list[Problem]:
    return check_ring_index(fields["index"], state)


def check_get_vring_base(fields: Fields, state: ConversationState) -> list[Problem]:
    """The request's ``num`` is reserved and must be 0 (vhost-user.rst, GET_VRING_BASE and
    GET_VRING_BASE_SKIP_DRAIN: "num is reserved and must be 0"; QEMU sends 0). DPDK
    virtio-user sends whatever its stack held: virtio_user_destroy_queue() sets only
    ``state.index`` (drivers/net/virtio/virtio_user/virtio_user_dev.c, DPDK 38f72e500b),
    as the traces/dpdk-* recordings show. A warning: back-ends ignore the value."""
    problems = check_ring_index(fields["index"], state)
    if fields["num"]:
        problems.append(
            warning(
                "reserved-num",
                f"num {fields['num']}: reserved, must be 0 (DPDK virtio-user leaves it "
                "uninitialized; back-ends ignore it)",
            )
        )
    return problems


def check_vring_fd(fields: Fields, state: ConversationState) -> list[Problem]:
    problems = check_ring_index(fields["index"], state)
    if fields["reserved"]:
        problems.append(
            error(
                "ring-index",
                f"u64 {_hex(fields['reserved'])}: bits above the index and NOFD are reserved",
            )
        )
    return problems


def check_vring_kick(fields: Fields, state: ConversationState) -> list[Problem]:
    """SET_VRING_KICK starts the ring: with STATUS, the features must be FEATURES_OK by
    then (issue 16: "with STATUS, SET_FEATURES is followed by GET_STATUS then
    SET_STATUS(FEATURES_OK)", which is QEMU's sequence). Real front-ends differ in order
    (both recorded in tests/fixtures/status/), so only the outcome is checked: QEMU's
    vhost_user_set_features() sends GET_STATUS, then
    SET_STATUS with FEATURES_OK added unless the device already has it (hw/virtio/
    vhost-user.c vhost_user_add_status(), qemu/qemu 019fbfa4bcd2); DPDK virtio-user sends
    SET_FEATURES, SET_STATUS(...FEATURES_OK), then GET_STATUS, and at DRIVER_OK a second
    SET_FEATURES with no new status before the kicks (drivers/net/virtio/virtio_user_ethdev.c
    virtio_user_set_status(), virtio_user/vhost_user.c, DPDK 38f72e500b, Jul 2026)."""
    problems = check_vring_fd(fields, state)
    if (
        state.features_acked is not None
        and not state.started_without_features_ok  # said once per SET_FEATURES
        and state.has_protocol(ProtocolFeature.STATUS)
        and not (state.status or 0) & spec.VIRTIO_STATUS_FEATURES_OK
    ):
        status = "no status set" if state.status is None else f"status {_hex(state.status)}"
        problems.append(
            warning(
                "features-ok",
                f"ring {fields['index']} starts with STATUS negotiated but FEATURES_OK not set "
                f"({status}): SET_FEATURES should be followed by SET_STATUS(FEATURES_OK)",
            )
        )
    return problems


def check_vring_enable(fields: Fields, state: ConversationState) -> list[Problem]:
    problems = check_ring_index(fields["index"], state)
    if fields["num"] not in (0, 1):
        problems.append(error("ring-enable", f"num {fields['num']}, expected 0 or 1"))
    return problems


def check_set_features(fields: Fields, state: ConversationState) -> list[Problem]:
    if state.features_offered is None:
        return [warning("features", "SET_FEATURES before the back-end's GET_FEATURES reply")]
    problems: list[Problem] = []
    extra = fields["features"] & ~state.features_offered
    if extra:
        names = ", ".join(spec.virtio_feature_names(extra, state.device))
        problems.append(error("features", f"sets features the back-end did not offer: {names}"))
    if fields["features"] >> spec.VIRTIO_F_ACCESS_PLATFORM & 1 and state.protocol_acked is not None:
        # IOTLB misses travel on the back-end channel and updates wait for their ack
        # (vhost-user.rst "IOMMU support"; QEMU refuses the device without both).
        lacking = [
            bit.name
            for bit in (ProtocolFeature.BACKEND_REQ, ProtocolFeature.REPLY_ACK)
            if not state.protocol_acked >> bit & 1
        ]
        if lacking:
            problems.append(
                error(
                    "iommu-features",
                    f"ACCESS_PLATFORM (IOMMU) set without {' and '.join(lacking)} negotiated:"
                    " an IOMMU device needs BACKEND_REQ and REPLY_ACK",
                )
            )
    return problems


def check_set_protocol_features(fields: Fields, state: ConversationState) -> list[Problem]:
    problems: list[Problem] = []
    value = fields["features"]
    if state.protocol_offered is None:
        problems.append(
            warning(
                "features",
                "SET_PROTOCOL_FEATURES before the back-end's GET_PROTOCOL_FEATURES reply",
            )
        )
    else:
        extra = value & ~state.protocol_offered
        if extra:
            names = ", ".join(spec.protocol_feature_names(extra))
            problems.append(
                error("features", f"sets protocol features the back-end did not offer: {names}")
            )

    def has(bit: ProtocolFeature) -> bool:
        return bool(value >> bit & 1)

    pf = ProtocolFeature
    if has(pf.INBAND_NOTIFICATIONS) and not (has(pf.BACKEND_REQ) and has(pf.REPLY_ACK)):
        problems.append(
            error(
                "features",
                "INBAND_NOTIFICATIONS without BACKEND_REQ and REPLY_ACK: "
                "the back-end should close the connection",
            )
        )
    if has(pf.GET_VRING_BASE_SKIP_DRAIN) and not (
        has(pf.GET_VRING_BASE_INFLIGHT) and has(pf.INFLIGHT_SHMFD)
    ):
        problems.append(
            error(
                "features",
                "GET_VRING_BASE_SKIP_DRAIN needs GET_VRING_BASE_INFLIGHT and INFLIGHT_SHMFD",
            )
        )
    return problems


_GET_SHMEM_CONFIG = 44
_VRING_STATE_SIZE = 8


def check_request_44_dialect(request: int, size: int) -> list[Problem]:
    """Request 44 with the 8 bytes of a vring state, request or reply: yc-libvhost-server
    numbers GET_VRING_BASE_SKIP_DRAIN 44, where QEMU has GET_SHMEM_CONFIG (44, an empty
    request and a 2056-byte reply) and SKIP_DRAIN at 45 (QEMU docs/interop/vhost-user.rst,
    Sep 2026). Named, not picked: the size already reads as an error."""
    if request != _GET_SHMEM_CONFIG or size != _VRING_STATE_SIZE:
        return []
    return [
        warning(
            "dialect-44",
            "request 44 with an 8-byte vring state: 44 is GET_SHMEM_CONFIG in QEMU, "
            "GET_VRING_BASE_SKIP_DRAIN in yc-libvhost-server (QEMU numbers it 45)",
        )
    ]


def check_protocol_features_offer(fields: Fields, state: ConversationState) -> list[Problem]:
    """bad-inputs #19: rust-vmm vhost <= 0.16 put SHMEM on bit 21 (GPA_ADDRESSES)."""
    value = fields["features"]
    gpa, shmem = ProtocolFeature.GPA_ADDRESSES, ProtocolFeature.SHMEM
    if value >> gpa & 1 and not value >> shmem & 1:
        return [
            warning(
                "rust-vmm-shmem-bit",
                "offers bit 21 without bit 22: bit 21 is GPA_ADDRESSES in QEMU >= 11.1, "
                "SHMEM in rust-vmm vhost < 0.17 (rust-vmm/vhost#367); read as "
                "GPA_ADDRESSES",
            )
        ]
    return []


def check_config(fields: Fields, state: ConversationState) -> list[Problem]:
    problems: list[Problem] = []
    size, offset = fields["size"], fields["offset"]
    if size > spec.MAX_CONFIG_SIZE:
        problems.append(error("config-size", f"size {size} is above {spec.MAX_CONFIG_SIZE}"))
    elif offset + size > spec.MAX_CONFIG_SIZE:
        problems.append(
            error(
                "config-size",
                f"offset {offset} + size {size} is past the "
                f"{spec.MAX_CONFIG_SIZE}-byte config space",
            )
        )
    if fields["flags"] not in (0, 1):
        problems.append(
            warning(
                "config-flags", f"flags {fields['flags']}, expected 0 (writable) or 1 (migration)"
            )
        )
    return problems


def check_crypto(fields: Fields, state: ConversationState) -> list[Problem]:
    """bad-inputs #5: key lengths beyond the fixed key buffers (CVE-2020-10724)."""
    if fields.get("layout") == "unknown":
        return [
            warning(
                "crypto-layout",
                f"{len(fields['raw'])} bytes: not a crypto session layout "
                "vhtrace knows (1072 or 632 bytes)",
            )
        ]
    problems: list[Problem] = []
    if "keylen" in fields:  # an asymmetric session (only the current layout has them)
        if fields["keylen"] > CRYPTO_ASYM_MAX_KEY:
            problems.append(
                error(
                    "crypto-key", f"asym keylen {fields['keylen']} is above {CRYPTO_ASYM_MAX_KEY}"
                )
            )
        return problems
    if fields["key_len"] > CRYPTO_SYM_MAX_KEY:
        problems.append(
            error("crypto-key", f"key_len {fields['key_len']} is above {CRYPTO_SYM_MAX_KEY}")
        )
    if fields["auth_key_len"] > CRYPTO_SYM_MAX_AUTH_KEY:
        problems.append(
            error(
                "crypto-key",
                f"auth_key_len {fields['auth_key_len']} is above {CRYPTO_SYM_MAX_AUTH_KEY}",
            )
        )
    return problems


def _check_inflight_queues(fields: Fields, state: ConversationState) -> list[Problem]:
    """bad-inputs #7 and #15: num_queues beyond the rings that exist."""
    problems: list[Problem] = []
    n = fields["num_queues"]
    limit = state.ring_limit()
    if limit is not None and n > limit[0]:
        problems.append(error("inflight-queues", f"num_queues {n} but the back-end has {limit[1]}"))
    elif n > spec.MAX_VRINGS:
        problems.append(error("inflight-queues", f"num_queues {n} is above {spec.MAX_VRINGS}"))
    if n == 0:
        problems.append(error("inflight-queues", "num_queues 0"))
    problems += _check_queue_size(fields["queue_size"], state, "queue_size")
    return problems


def check_get_inflight(fields: Fields, state: ConversationState) -> list[Problem]:
    problems = _check_inflight_queues(fields, state)
    if state.inflight_requests:
        # bad-inputs #6: DPDK leaked a memfd and a mapping per request. QEMU asks again
        # each time it restarts the device, after stopping the rings: that is fine.
        problems.append(
            warning(
                "inflight-repeat",
                f"GET_INFLIGHT_FD repeated ({state.inflight_requests} since the rings last "
                "stopped): each reply hands out a new area",
            )
        )
    return problems


def check_set_inflight(fields: Fields, state: ConversationState) -> list[Problem]:
    problems = _check_inflight_queues(fields, state)
    if fields["mmap_size"] == 0:
        problems.append(error("inflight-size", "mmap_size 0"))
    return problems


def check_iotlb(fields: Fields, state: ConversationState) -> list[Problem]:
    problems: list[Problem] = []
    if fields["type"] not in IOTLB_TYPES:
        problems.append(error("iotlb-type", f"type {fields['type']} is unknown"))
    if fields["perm"] > 3:
        problems.append(error("iotlb-perm", f"perm {fields['perm']} is unknown"))
    if fields["iova"] + fields["size"] > U64_END:
        problems.append(error("iotlb-overflow", "iova + size overflows u64"))
    return problems


def check_frontend_iotlb(fields: Fields, state: ConversationState) -> list[Problem]:
    """The front-end's IOTLB update maps an IOVA to memory it shared: ``uaddr`` lies in a
    region, as a front-end virtual address, or as a guest-physical one with GPA_ADDRESSES
    (vhost-user.rst, GPA_ADDRESSES: "the IOTLB uaddr is a guest physical address"; the
    back-end's own IOTLB_MSG, a miss, keeps the user-address meaning and is not checked)."""
    problems = check_iotlb(fields, state)
    if fields["type"] != _IOTLB_UPDATE or not state.regions or not fields["size"]:
        return problems
    space = "gpa" if state.has_protocol(ProtocolFeature.GPA_ADDRESSES) else "uaddr"
    uaddr, size = fields["uaddr"], fields["size"]
    if not any(region.contains(uaddr, size, space) for region in state.regions):
        what = "guest-physical address (GPA_ADDRESSES)" if space == "gpa" else "user address"
        problems.append(
            warning(
                "iotlb-uaddr",
                f"UPDATE uaddr {_hex(uaddr)} + {size} is in no memory region as a {what}",
            )
        )
    return problems


_IOTLB_UPDATE = next(kind for kind, name in IOTLB_TYPES.items() if name == "UPDATE")


def check_device_state(fields: Fields, state: ConversationState) -> list[Problem]:
    problems: list[Problem] = []
    if fields["direction"] not in (0, 1):
        problems.append(error("device-state", f"direction {fields['direction']} is unknown"))
    if fields["phase"] != 0:
        problems.append(error("device-state", f"phase {fields['phase']} is unknown"))
    return problems


def check_host_notifier(fields: Fields, state: ConversationState) -> list[Problem]:
    problems = check_vring_fd(fields, state)
    if not fields["nofd"] and fields["size"] != spec.PAGE_SIZE:
        problems.append(
            warning(
                "host-notifier-size",
                f"size {fields['size']}: QEMU requires the host page size ({spec.PAGE_SIZE})",
            )
        )
    return problems


_QEMU_UNHANDLED = " or ".join(
    f"{spec.request_name(spec.Channel.BACKEND, request)} ({request})"
    for request in sorted(spec.QEMU_UNHANDLED_BACKEND_REQUESTS)
)


def check_backend_vring_notification(fields: Fields, state: ConversationState) -> list[Problem]:
    """Back-end VRING_CALL / VRING_ERR: in the spec, but a QEMU front-end refuses them
    (spec.QEMU_UNHANDLED_BACKEND_REQUESTS: its back-end channel answers -EINVAL)."""
    problems = check_ring_index(fields["index"], state)
    if state.frontend == spec.FRONTEND_QEMU:
        problems.append(
            error(
                "frontend-unsupported",
                f"QEMU's back-end channel does not handle {_QEMU_UNHANDLED}: it "
                "answers -EINVAL (a u64 1 ack) and the guest is never notified "
                "(hw/virtio/vhost-user.c backend_read()); use the ring's call/err eventfd",
            )
        )
    return problems


def check_shmem_map(fields: Fields, state: ConversationState) -> list[Problem]:
    problems: list[Problem] = []
    if fields["flags"] & ~0x1:
        # rust-vmm's VhostUserMMapFlags rejects unknown bits and ends the channel.
        problems.append(
            error(
                "shmem-flags",
                f"flags {_hex(fields['flags'])}: only bit 0 (MAP_RW, 1) is defined,"
                f" got {_hex(fields['flags'] & ~1)} beyond it",
            )
        )
    if fields["len"] == 0:
        problems.append(error("shmem-len", "len 0"))
    if fields["shm_offset"] + fields["len"] > U64_END:
        problems.append(error("shmem-overflow", "shm_offset + len overflows u64"))
    return problems


def check_shmem_config(fields: Fields, state: ConversationState) -> list[Problem]:
    if fields["nregions"] > spec.SHMEM_MAX_REGIONS:
        return [
            error(
                "shmem-regions", f"nregions {fields['nregions']} is above {spec.SHMEM_MAX_REGIONS}"
            )
        ]
    return []


def check_ack_value(fields: Fields, state: ConversationState) -> list[Problem]:
    if fields.get("value"):
        return [warning("reply-failure", f"reply reports failure ({_hex(fields['value'])})")]
    return []


def check_mtu(fields: Fields, state: ConversationState) -> list[Problem]:
    if not 68 <= fields["value"] <= 65535:
        return [warning("mtu", f"MTU {fields['value']} is outside 68..65535")]
    return []


Check = Callable[[Fields, ConversationState], list[Problem]]

_REQUEST_CHECKS: dict[tuple[spec.Channel, str], Check] = {
    (spec.Channel.MAIN, "SET_FEATURES"): check_set_features,
    (spec.Channel.MAIN, "SET_PROTOCOL_FEATURES"): check_set_protocol_features,
    (spec.Channel.MAIN, "SET_MEM_TABLE"): check_mem_table,
    (spec.Channel.MAIN, "ADD_MEM_REG"): check_add_mem_reg,
    (spec.Channel.MAIN, "REM_MEM_REG"): check_rem_mem_reg,
    (spec.Channel.MAIN, "SET_LOG_BASE"): check_log,
    (spec.Channel.MAIN, "SET_VRING_NUM"): check_vring_num,
    (spec.Channel.MAIN, "SET_VRING_ADDR"): check_vring_addr,
    (spec.Channel.MAIN, "SET_VRING_BASE"): check_vring_base,
    (spec.Channel.MAIN, "GET_VRING_BASE"): check_get_vring_base,
    (spec.Channel.MAIN, "GET_VRING_BASE_SKIP_DRAIN"): check_get_vring_base,
    (spec.Channel.MAIN, "SET_VRING_KICK"): check_vring_kick,
    (spec.Channel.MAIN, "SET_VRING_CALL"): check_vring_fd,
    (spec.Channel.MAIN, "SET_VRING_ERR"): check_vring_fd,
    (spec.Channel.MAIN, "SET_VRING_ENABLE"): check_vring_enable,
    (spec.Channel.MAIN, "SET_VRING_ENDIAN"): check_ring_index_only,
    (spec.Channel.MAIN, "VRING_KICK"): check_ring_index_only,
    (spec.Channel.MAIN, "GET_CONFIG"): check_config,
    (spec.Channel.MAIN, "SET_CONFIG"): check_config,
    (spec.Channel.MAIN, "CREATE_CRYPTO_SESSION"): check_crypto,
    (spec.Channel.MAIN, "GET_INFLIGHT_FD"): check_get_inflight,
    (spec.Channel.MAIN, "SET_INFLIGHT_FD"): check_set_inflight,
    (spec.Channel.MAIN, "IOTLB_MSG"): check_frontend_iotlb,
    (spec.Channel.MAIN, "SET_DEVICE_STATE_FD"): check_device_state,
    (spec.Channel.MAIN, "NET_SET_MTU"): check_mtu,
    (spec.Channel.BACKEND, "IOTLB_MSG"): check_iotlb,
    (spec.Channel.BACKEND, "VRING_HOST_NOTIFIER_MSG"): check_host_notifier,
    **{
        (spec.Channel.BACKEND, spec.request_name(spec.Channel.BACKEND, request)): (
            check_backend_vring_notification
        )
        for request in sorted(spec.QEMU_UNHANDLED_BACKEND_REQUESTS)
    },
    (spec.Channel.BACKEND, "SHMEM_MAP"): check_shmem_map,
    (spec.Channel.BACKEND, "SHMEM_UNMAP"): check_shmem_map,
}
REQUEST_CHECKS: dict[spec.Channel, dict[str, Check]] = {
    channel: {name: check for (ch, name), check in _REQUEST_CHECKS.items() if ch is channel}
    for channel in spec.Channel
}
"""Checks of a request's payload, by channel and request name."""

REPLY_CHECKS: dict[str, Check] = {
    "protocol_features": check_protocol_features_offer,
    "config": check_config,
    "crypto_session": check_crypto,
    "shmem_config": check_shmem_config,
    "ack": check_ack_value,
    "inflight": _check_inflight_queues,
}
"""Checks of a reply's payload, by its layout."""
