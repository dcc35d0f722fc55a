"""A scriptable vhost-user back-end for testing front-ends (QEMU) and vhtrace itself.

It is strict about what it receives (every message judged by vhtrace's protocol model),
does real work (virtio-blk on a file, virtio-rng, in shared guest memory), and can be
told to misbehave in every way a buggy back-end does. See docs/mockbackend.md.
"""

from mockbackend import expect, faults
from mockbackend.connection_report import Report
from mockbackend.context import Context
from mockbackend.devices import BlkDevice, Device, NetLoopback, RngDevice
from mockbackend.faults import (
    Close,
    Delay,
    Drop,
    ExtraFds,
    Garbage,
    MissingFds,
    WrongFlags,
    WrongRequest,
    WrongSize,
)
from mockbackend.messages import Answer, Message, Reply
from mockbackend.script import Script, ScriptError, load_script_file
from mockbackend.server import MockBackend

__all__ = [
    "Answer",
    "BlkDevice",
    "Close",
    "Context",
    "Delay",
    "Device",
    "Drop",
    "ExtraFds",
    "Garbage",
    "Message",
    "MissingFds",
    "MockBackend",
    "NetLoopback",
    "Reply",
    "Report",
    "RngDevice",
    "Script",
    "ScriptError",
    "WrongFlags",
    "WrongRequest",
    "WrongSize",
    "expect",
    "faults",
    "load_script_file",
]
