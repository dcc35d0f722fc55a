"""Which virtio device a vhost-user session carries, when nobody said so.

vhost-user never names its device: the feature bits 0-23 mean one thing to a disk and
another to a NIC. QEMU's command line says it (``-device vhost-user-blk-pci``), but other
front-ends (DPDK's virtio-user, cloud-hypervisor) and back-ends (DPDK's vhost PMD,
qemu-storage-daemon, virtiofsd, rust-vmm's vhost-device-*) have their own ways, and a
trace may have neither. This module guesses from what there is, strongest clue first:

1. the peers' programs and arguments (:func:`from_command_line`): ``--vdev
   net_vhost0,iface=...``, ``--export type=vhost-user-blk``, ``vhost-device-vsock``;
2. the feature bits the back-end offers (:func:`from_features`): a device bit that only
   one device type defines (net's CTRL_RX, bit 18) names it;
3. the size of the config space the front-end asks for (:func:`from_config_size`), when
   it is exactly one device's whole configuration structure.

Each answer says how it was found, for the session header (``device net (from the
back-end's --vdev net_vhost0)``). Pure code: argv lists and integers in.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from vhtrace.protocol import device_config
from vhtrace.protocol.spec import (
    COMMON_VIRTIO_FEATURES,
    DEVICE_VIRTIO_FEATURES,
    DeviceType,
    bits_of,
    virtio_feature_name,
)


@dataclass(frozen=True)
class Inference:
    """A device type and the clue it came from."""

    device: DeviceType
    how: str
    """``from the back-end's --vdev net_vhost0``: what a reader of the trace is told."""

    def describe(self) -> str:
        return f"device {self.device} ({self.how})"


@dataclass(frozen=True)
class Peer:
    """One end of the session as the recorder saw it: its program and arguments."""

    role: str
    """``front-end`` or ``back-end``."""
    program: str
    argv: Sequence[str] = ()


# --------------------------------------------------------------------------- programs

DPDK_VDEVS: tuple[tuple[str, DeviceType], ...] = (
    ("net_vhost", DeviceType.NET),
    ("eth_vhost", DeviceType.NET),
    ("net_virtio_user", DeviceType.NET),
    ("virtio_user", DeviceType.NET),
    ("crypto_virtio_user", DeviceType.CRYPTO),
)
"""DPDK --vdev driver names (a number follows) and the device each one is."""

VHOST_DEVICE_PROGRAMS: dict[str, DeviceType] = {
    "sound": DeviceType.SOUND,
    "snd": DeviceType.SOUND,
    **{device.value: device for device in DeviceType},
}
"""rust-vmm ``vhost-device-<name>`` and QEMU's contrib ``vhost-user-<name>``."""

PROGRAMS: dict[str, DeviceType] = {
    "virtiofsd": DeviceType.FS,
    "ovs-vswitchd": DeviceType.NET,
    "ovs-vswitchd-dpdk": DeviceType.NET,
    "vhost-user-bridge": DeviceType.NET,
}
"""Programs that only ever serve one device type."""

_CLOUD_HYPERVISOR = {"--net": DeviceType.NET, "--disk": DeviceType.BLK, "--fs": DeviceType.FS}
_QSD_EXPORT = re.compile(r"(?:^|,)type=vhost-user-(\w+)")


def _options(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        values[key] = value
    return values


def _same_socket(path: str | None, socket: str | None) -> bool:
    return bool(path and socket) and os.path.normpath(str(path)) == os.path.normpath(str(socket))


def _option_values(argv: Sequence[str], *flags: str) -> list[str]:
    """The values of ``--flag VALUE`` and ``--flag=VALUE`` in argv, in order."""
    values = []
    for i, arg in enumerate(argv):
        for flag in flags:
            if arg == flag and i + 1 < len(argv):
                values.append(argv[i + 1])
            elif arg.startswith(flag + "="):
                values.append(arg[len(flag) + 1 :])
    return values


def _dpdk(peer: Peer, socket: str | None) -> Inference | None:
    candidates = []
    for vdev in _option_values(peer.argv, "--vdev", "-a", "--allow"):
        name = vdev.split(",", 1)[0]
        for prefix, device in DPDK_VDEVS:
            if re.fullmatch(re.escape(prefix) + r"\d*", name):
                opts = _options(vdev)
                candidates.append((_same_socket(opts.get("iface") or opts.get("path"), socket),
                                   name, device))  # fmt: skip
                break
    if not candidates:
        return None
    # The vdev on this very socket wins; else the first vhost-user one.
    _, name, device = max(candidates, key=lambda c: c[0])
    return Inference(device, f"from the {peer.role}'s --vdev {name}")


def from_command_line(peer: Peer, socket: str | None = None) -> Inference | None:
    """The device a peer's program and arguments name (``socket``: its vhost-user path,
    to pick the right one among several devices)."""
    program = os.path.basename(peer.program or (peer.argv[0] if peer.argv else ""))
    found = _dpdk(peer, socket)
    if found:
        return found
    if program in PROGRAMS:
        return Inference(PROGRAMS[program], f"from the {peer.role}'s program {program}")
    for prefix in ("vhost-device-", "vhost-user-"):
        if program.startswith(prefix):
            name = program.removeprefix(prefix)
            if name in VHOST_DEVICE_PROGRAMS:
                device = VHOST_DEVICE_PROGRAMS[name]
                return Inference(device, f"from the {peer.role}'s program {program}")
    for export in _option_values(peer.argv, "--export"):
        match = _QSD_EXPORT.search(export)
        if match and match.group(1) in set(DeviceType):
            name = match.group(1)
            how = f"from the {peer.role}'s --export type=vhost-user-{name}"
            return Inference(DeviceType(name), how)
    if program == "cloud-hypervisor":
        for flag, device in _CLOUD_HYPERVISOR.items():
            for value in _option_values(peer.argv, flag):
                opts = _options(value)
                vhost_user = flag == "--fs" or opts.get("vhost_user") in ("true", "on")
                if vhost_user and (socket is None or _same_socket(opts.get("socket"), socket)):
                    return Inference(device, f"from the {peer.role}'s {flag} vhost_user")
    return None


def from_peers(
    frontend: Peer | None,
    backend: Peer | None,
    frontend_socket: str | None = None,
    backend_socket: str | None = None,
) -> Inference | None:
    """The device the peers' command lines name: the back-end first (it is the device)."""
    for peer, socket in ((backend, backend_socket), (frontend, frontend_socket)):
        if peer is not None:
            found = from_command_line(peer, socket)
            if found:
                return found
    return None


# --------------------------------------------------------------------------- features


def _device_bits(features: int) -> list[int]:
    return [bit for bit in bits_of(features) if bit not in COMMON_VIRTIO_FEATURES]


def from_features(features: int) -> Inference | None:
    """The one device type that defines every device bit the back-end offers, when some
    bit is defined by no other type (GET_FEATURES' reply)."""
    bits = _device_bits(features)
    if not bits:
        return None
    fits = [d for d, names in DEVICE_VIRTIO_FEATURES.items() if all(b in names for b in bits)]
    if len(fits) != 1:
        return None
    [device] = fits
    owners = {b: [d for d, names in DEVICE_VIRTIO_FEATURES.items() if b in names] for b in bits}
    unique = [b for b, devices in owners.items() if devices == [device]]
    if not unique:
        return None
    names = ", ".join(f"{virtio_feature_name(b, device)} (bit {b})" for b in unique[:3])
    return Inference(device, f"from the feature bits offered: {names} only {device} defines")


def _layout_size(device: DeviceType) -> int:
    fields = device_config.LAYOUTS[device]
    return max(f.offset + struct.calcsize("<" + f.fmt) for f in fields)


def from_config_size(size: int) -> Inference | None:
    """The one device whose whole config structure is ``size`` bytes (GET_CONFIG)."""
    fits = [d for d in device_config.LAYOUTS if _layout_size(d) == size]
    if len(fits) != 1:
        return None
    return Inference(fits[0], f"from the config size asked for: {size} bytes, "
                     f"struct virtio_{fits[0]}_config")  # fmt: skip
