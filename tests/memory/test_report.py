"""How snapshots read (vhtrace rings' lines): reused heads, the back-end's position."""

from __future__ import annotations

from tests.memory.guest import F_NEXT, GuestRam, SplitLayout
from vhtrace.memory.packed import PackedBase
from vhtrace.memory.plan import decode_ring
from vhtrace.memory.report import backend_position, reuse, ring_lines
from vhtrace.memory.split import decode_split


def test_used_entries_whose_head_was_taken_again_are_marked_reused() -> None:
    ram = GuestRam(0x10000)
    layout = SplitLayout(ram, 4)
    ram.desc(layout.desc, 0, 0x8000, 16, F_NEXT, 1)
    layout.avail_ring(4, [0, 0, 0, 0])
    layout.used_ring(3, [(0, 1), (0, 2), (0, 3)])  # request idx 3 is pending with head 0
    ring = decode_split(ram, 4, layout.desc, layout.avail, layout.used)
    assert reuse(ring) == {2: 3, 1: 3, 0: 3}
    config = {
        "index": 0,
        "num": 4,
        "layout": "split",
        "desc_gpa": layout.desc,
        "avail_gpa": layout.avail,
        "used_gpa": layout.used,
        "base": 4,
    }
    text = "\n".join(ring_lines(decode_ring(config, ram), ram))
    assert "(its descriptors were reused by idx 3)" in text
    assert "SET_VRING_BASE 4: 0 made available not taken yet, 1 taken and not used" in text


def test_the_back_ends_position_comes_from_the_right_message() -> None:
    assert backend_position({"base": 3, "last_base": 9, "started": False}) == (
        9,
        "GET_VRING_BASE",
    )
    assert backend_position({"base": 3, "last_base": 9, "started": True}) == (3, "SET_VRING_BASE")
    assert backend_position({}) == (None, "")
    assert PackedBase.from_num(0x80008005) == PackedBase(5, True, 0, True)
