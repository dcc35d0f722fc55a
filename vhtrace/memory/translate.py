"""Ring addresses to guest-physical addresses, through the memory table (pure).

SET_VRING_ADDR gives addresses in the front-end's space: its own virtual
addresses (``userspace_addr`` of the regions) by default, guest-physical ones
with GPA_ADDRESSES, IOVAs with VIRTIO_F_ACCESS_PLATFORM (an IOMMU: only the
IOTLB knows them, so they are flagged, not guessed). Descriptor addresses are
always the guest's own (guest-physical, or IOVA under an IOMMU).

An address whose start is inside a region but whose end is not is an error the
front-end made (and a past DPDK CVE, bad-inputs #9): reported, not followed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class RegionLike(Protocol):
    guest_phys_addr: int
    memory_size: int
    userspace_addr: int


SPACES = ("uaddr", "gpa", "iova")


@dataclass(frozen=True, slots=True)
class Translation:
    gpa: int | None
    problem: str | None = None


def to_gpa(addr: int, length: int, space: str, regions: Sequence[RegionLike]) -> Translation:
    """The guest-physical address of [addr, addr+length) given in ``space``."""
    if space == "iova":
        return Translation(None, f"0x{addr:x} is an IOVA (ACCESS_PLATFORM): not translated")
    for region in regions:
        base = region.guest_phys_addr if space == "gpa" else region.userspace_addr
        if base <= addr < base + region.memory_size:
            if addr + length > base + region.memory_size:
                return Translation(
                    None,
                    f"0x{addr:x}+{length} crosses the end of the region at 0x{base:x} "
                    f"({region.memory_size} bytes)",
                )
            return Translation(region.guest_phys_addr + (addr - base))
    what = "guest-physical" if space == "gpa" else "front-end virtual"
    return Translation(None, f"{what} address 0x{addr:x} is in no memory region")
