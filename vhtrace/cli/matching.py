"""The options of what a comparison does not count: shared by replay and diff."""

from __future__ import annotations

import argparse

from vhtrace.protocol.spec import DeviceType


def add_rule_arguments(group: argparse._ArgumentGroup) -> None:
    """What does not count in a comparison (replay and diff share them)."""
    group.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="[REQUEST.]FIELD",
        help="a field whose differences do not count (repeatable), e.g. "
        "GET_CONFIG.region, userspace_addr, fds",
    )
    group.add_argument(
        "--mask-features",
        action="append",
        default=[],
        metavar="BITS",
        help="feature bits not compared: bit numbers, 0x masks, names (RO), "
        "protocol:NAME for protocol features; comma-separated",
    )
    group.add_argument(
        "--no-default-ignores",
        action="store_true",
        help="compare everything, also what differs between any two runs "
        "(addresses, ring positions)",
    )
    group.add_argument(
        "--device",
        choices=[d.value for d in DeviceType],
        help="device type naming virtio bits (default: the trace's)",
    )
