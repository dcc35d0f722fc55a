"""Who the front-end is, from what the recorder noted in the session-start event."""

from __future__ import annotations

import pytest

from vhtrace.protocol import peers, spec

QEMU = spec.FRONTEND_QEMU


@pytest.mark.parametrize(
    ("info", "frontend"),
    [
        ({"frontend": {"pid": 1, "program": "qemu-system-x86_64"}}, QEMU),
        ({"frontend": {"pid": 1, "program": "qemu-system-aarch64"}}, QEMU),
        ({"frontend": {"pid": 1, "program": "qemu-kvm"}}, QEMU),
        ({"frontend": {"pid": 1, "program": "dpdk-testpmd"}}, None),
        ({"frontend": {"pid": 1}}, None),
        ({"frontend": "qemu-system-x86_64"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_the_front_end_is_qemu_when_the_recorder_saw_a_qemu_program(info, frontend) -> None:
    assert peers.frontend_of(info) == frontend


def test_the_program_is_told_by_its_file_name_not_its_directory() -> None:
    info = {"frontend": {"pid": 7, "program": "/usr/bin/qemu-system-x86_64"}}
    assert peers.frontend_of(info) == QEMU
    disguised = {"frontend": {"pid": 7, "program": "/opt/qemu-system-x86_64/bin/crosvm"}}
    assert peers.frontend_of(disguised) is None
