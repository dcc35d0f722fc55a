"""Ring addresses to guest-physical addresses through the memory table."""

from __future__ import annotations

from dataclasses import dataclass

from vhtrace.memory.translate import to_gpa


@dataclass
class R:
    guest_phys_addr: int
    memory_size: int
    userspace_addr: int


REGIONS = [R(0, 0xA0000, 0x7F0000000000), R(0xC0000, 0xFF40000, 0x7F00000C0000)]


def test_front_end_addresses_are_translated_by_their_region() -> None:
    assert to_gpa(0x7F0000001000, 16, "uaddr", REGIONS).gpa == 0x1000
    assert to_gpa(0x7F00000C2000, 4096, "uaddr", REGIONS).gpa == 0xC2000


def test_guest_physical_addresses_stay_but_must_be_in_a_region() -> None:
    assert to_gpa(0xC2000, 16, "gpa", REGIONS).gpa == 0xC2000
    gap = to_gpa(0xB0000, 16, "gpa", REGIONS)
    assert gap.gpa is None and "in no memory region" in (gap.problem or "")


def test_a_range_crossing_the_end_of_its_region_is_refused() -> None:
    crossing = to_gpa(0x7F0000000000 + 0xA0000 - 8, 16, "uaddr", REGIONS)
    assert crossing.gpa is None and "crosses the end" in (crossing.problem or "")


def test_iovas_are_flagged_not_guessed() -> None:
    result = to_gpa(0x1000, 16, "iova", REGIONS)
    assert result.gpa is None and "IOVA" in (result.problem or "")
