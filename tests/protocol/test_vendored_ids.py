"""The spec table against the ids QEMU defines (tests/fixtures/qemu-vhost-user-ids.txt).

The table was written from the spec; this pins it to a second source so that a renamed or
renumbered request or protocol bit on either side fails a test instead of drifting.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vhtrace.protocol import spec
from vhtrace.protocol.spec import Channel, ProtocolFeature

VENDORED = Path(__file__).parent.parent / "fixtures" / "qemu-vhost-user-ids.txt"


def vendored() -> list[tuple[str, int, str]]:
    rows = []
    for line in VENDORED.read_text().splitlines():
        if line and not line.startswith("#"):
            kind, number, name = line.split()
            rows.append((kind, int(number), name))
    return rows


ROWS = vendored()
CHANNELS = {"main": Channel.MAIN, "backend": Channel.BACKEND}


def test_the_vendored_list_is_whole() -> None:
    kinds = {kind for kind, _, _ in ROWS}
    assert kinds == {"main", "backend", "protocol"}
    assert sum(1 for kind, _, _ in ROWS if kind == "main") == 42  # 1..43 but 35


@pytest.mark.parametrize(("kind", "number", "name"), [r for r in ROWS if r[0] in CHANNELS])
def test_each_request_qemu_defines_has_our_id_and_name(kind: str, number: int, name: str) -> None:
    row = spec.request_spec(CHANNELS[kind], number)
    assert row is not None, f"{kind} request {number} ({name}) is not in our table"
    assert row.name == name, f"{kind} request {number}: QEMU {name}, ours {row.name}"


@pytest.mark.parametrize(("number", "name"), [(n, m) for k, n, m in ROWS if k == "protocol"])
def test_each_protocol_bit_qemu_defines_has_our_number(number: int, name: str) -> None:
    assert ProtocolFeature(number).name == name


def test_our_extra_ids_are_the_ones_the_spec_adds_beyond_qemus_enums() -> None:
    known = {(CHANNELS[k], n) for k, n, _ in ROWS if k in CHANNELS}
    ours = {(channel, number) for channel, rows in spec.REQUESTS.items() for number in rows}
    extra = {(channel.value, number) for channel, number in ours - known}
    main, backend = Channel.MAIN.value, Channel.BACKEND.value
    assert extra == {(main, 35), (main, 44), (main, 45)} | {(backend, n) for n in (4, 5, 9, 10)}
