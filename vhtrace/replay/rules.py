"""What a replay comparison ignores, and why: default rules, ``--ignore``, ``--mask-features``.

Replay compares a live message with the recorded one field by field. Some values differ
between two runs of the very same conversation and say nothing about behaviour:

* the front-end's virtual addresses (memory regions, ring addresses): ASLR moves them;
  and the guest-physical address of a used ring: the guest's allocator places it;
* the back-end's postcopy mapping addresses (its own ``mmap`` results);
* ring positions (SET/GET_VRING_BASE): they count the guest's I/O, and replay plays the
  control plane only, never the guest's requests;
* fd numbers and times, which are never compared at all (fds by kind only).

Those are the default rules; each carries its reason, which reports print next to the
difference it hid. Users add their own with ``--ignore [REQUEST.]FIELD`` and hide
feature bits with ``--mask-features``. Pure: no I/O.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from vhtrace.protocol import spec
from vhtrace.protocol.spec import DeviceType, Side


class RuleError(ValueError):
    """An --ignore or --mask-features value that cannot be understood (usage error)."""


@dataclass(frozen=True, slots=True)
class IgnoreRule:
    """Differences in ``field`` of matching messages are not divergences."""

    field: str
    """Field path with list indices dropped: ``features``, ``regions.userspace_addr``; the
    header pseudo-fields ``request``, ``flags``, ``size``, ``payload`` and ``fds``."""
    requests: tuple[str, ...] = ("*",)
    """Request-name globs (``GET_VRING_BASE``, ``SET_VRING_*``)."""
    role: str | None = None
    """``request``, ``reply`` or None for both."""
    sender: Side | None = None
    reason: str = "--ignore"

    def applies(self, request: str, role: str, sender: Side, path: str) -> bool:
        if self.role is not None and role != self.role:
            return False
        if self.sender is not None and sender is not self.sender:
            return False
        if path != self.field and not path.startswith(self.field + "."):
            return False
        return any(fnmatch.fnmatchcase(request, pattern) for pattern in self.requests)


@dataclass(frozen=True, slots=True)
class FeatureMask:
    """Feature bits left out of comparisons (``--mask-features``)."""

    virtio: int = 0
    protocol: int = 0

    def for_layout(self, layout: str | None) -> int:
        if layout == "virtio_features":
            return self.virtio
        if layout == "protocol_features":
            return self.protocol
        return 0


@dataclass(frozen=True, slots=True)
class Rules:
    """Everything the comparison needs to know about what not to compare."""

    ignores: tuple[IgnoreRule, ...] = ()
    mask: FeatureMask = field(default_factory=FeatureMask)

    def ignored(self, request: str, role: str, sender: Side, path: str) -> str | None:
        """Why a difference at ``path`` does not count, or None when it does."""
        for rule in self.ignores:
            if rule.applies(request, role, sender, path):
                return rule.reason
        return None


# --------------------------------------------------------------------------- defaults

_ASLR = "the front-end's virtual address (differs every run: ASLR)"
_GUEST = "where the guest's driver put the ring (guest memory allocation differs every boot)"
_POSTCOPY = "the back-end's postcopy mapping address (differs every run)"
_RING = "a ring position: it counts the guest's I/O, which replay does not reproduce"
_VRING_BASE_FIELDS = (
    "num",
    "next_avail",
    "reserved",
    "last_avail_idx",
    "avail_wrap",
    "used_idx",
    "used_wrap",
)
_MEMORY_REQUESTS = ("SET_MEM_TABLE", "ADD_MEM_REG", "REM_MEM_REG")

DEFAULT_RULES: tuple[IgnoreRule, ...] = (
    IgnoreRule("userspace_addr", _MEMORY_REQUESTS, "request", Side.FRONTEND, _ASLR),
    IgnoreRule("regions.userspace_addr", _MEMORY_REQUESTS, "request", Side.FRONTEND, _ASLR),
    IgnoreRule("desc_user_addr", ("SET_VRING_ADDR",), "request", Side.FRONTEND, _ASLR),
    IgnoreRule("avail_user_addr", ("SET_VRING_ADDR",), "request", Side.FRONTEND, _ASLR),
    IgnoreRule("used_user_addr", ("SET_VRING_ADDR",), "request", Side.FRONTEND, _ASLR),
    IgnoreRule("log_guest_addr", ("SET_VRING_ADDR",), "request", Side.FRONTEND, _GUEST),
    IgnoreRule("userspace_addr", _MEMORY_REQUESTS, "reply", Side.BACKEND, _POSTCOPY),
    IgnoreRule("regions.userspace_addr", _MEMORY_REQUESTS, "reply", Side.BACKEND, _POSTCOPY),
    *(
        IgnoreRule(name, ("GET_VRING_BASE", "GET_VRING_BASE_SKIP_DRAIN"), "reply", None, _RING)
        for name in _VRING_BASE_FIELDS
    ),
    *(IgnoreRule(name, ("SET_VRING_BASE",), "request", None, _RING) for name in _VRING_BASE_FIELDS),
)
"""Values that legitimately differ between two runs of the same conversation."""


# --------------------------------------------------------------------------- parsing

_REQUEST_PART = re.compile(r"^[A-Z0-9_*?\[\]]*[A-Z*][A-Z0-9_*?\[\]]*$")
_ALL_NAMES = frozenset(
    name
    for channel in spec.REQUESTS.values()
    for row in channel.values()
    for name in (row.name, *row.aliases)
)


def parse_ignore(text: str) -> IgnoreRule:
    """``FIELD`` or ``REQUEST.FIELD`` (REQUEST a name or glob, upper case) -> a rule.

    ``GET_CONFIG.region``, ``userspace_addr``, ``SET_VRING_*.flags``, ``fds``."""
    text = text.strip()
    if not text:
        raise RuleError("--ignore needs a field name")
    head, dot, rest = text.partition(".")
    if dot and _REQUEST_PART.match(head):
        pattern = head.removeprefix("VHOST_USER_")
        if not any(fnmatch.fnmatchcase(name, pattern) for name in _ALL_NAMES):
            raise RuleError(f"--ignore {text}: no request is called {head}")
        if not rest:
            raise RuleError(f"--ignore {text}: a field name must follow {head}.")
        return IgnoreRule(rest, (pattern,), reason=f"--ignore {text}")
    return IgnoreRule(text, reason=f"--ignore {text}")


def _virtio_bit(name: str, device: DeviceType | None) -> int:
    tables = [spec.COMMON_VIRTIO_FEATURES]
    if device is not None:
        tables.append(spec.DEVICE_VIRTIO_FEATURES[device])
    else:
        tables.extend(spec.DEVICE_VIRTIO_FEATURES.values())
    bits = {bit for table in tables for bit, known in table.items() if known == name}
    if not bits:
        raise RuleError(f"--mask-features {name}: no virtio feature of that name")
    if len(bits) > 1:
        raise RuleError(
            f"--mask-features {name}: ambiguous without a device type "
            f"(bits {', '.join(map(str, sorted(bits)))}); give the bit number"
        )
    return bits.pop()


def _mask_of(item: str, named: str) -> int:
    """A bit number (``5``) or a hex mask (``0x20``) as a mask."""
    try:
        if item.lower().startswith("0x"):
            return int(item, 16)
        bit = int(item)
    except ValueError:
        raise RuleError(f"--mask-features {named}: not a bit, a mask or a name") from None
    if not 0 <= bit < 64:
        raise RuleError(f"--mask-features {named}: bit {bit} is outside 0..63")
    return 1 << bit


def parse_mask(items: Iterable[str], device: DeviceType | None = None) -> FeatureMask:
    """Comma-separated bits, hex masks or names; ``protocol:`` for protocol features.

    ``RO``, ``5``, ``0x20``, ``RING_EVENT_IDX``, ``protocol:INFLIGHT_SHMFD``, ``protocol:12``.
    Virtio names depend on the device type (the trace's, unless given)."""
    virtio = protocol = 0
    for group in items:
        for raw in group.split(","):
            item = raw.strip()
            if not item:
                continue
            if item.lower().startswith("protocol:"):
                name = item.split(":", 1)[1].strip()
                if name[:1].isdigit():
                    protocol |= _mask_of(name, item)
                else:
                    try:
                        protocol |= 1 << spec.protocol_feature(name)
                    except (KeyError, ValueError):
                        raise RuleError(
                            f"--mask-features {item}: no protocol feature of that name"
                        ) from None
            elif item[:1].isdigit():
                virtio |= _mask_of(item, item)
            else:
                virtio |= 1 << _virtio_bit(item.upper(), device)
    return FeatureMask(virtio, protocol)


def build_rules(
    ignores: Iterable[str] = (),
    masks: Iterable[str] = (),
    *,
    device: DeviceType | None = None,
    defaults: bool = True,
) -> Rules:
    """The rules of one replay: the defaults (unless turned off) plus the user's."""
    user = tuple(parse_ignore(text) for text in ignores)
    return Rules((*(DEFAULT_RULES if defaults else ()), *user), parse_mask(masks, device))
