"""The device type a recorded session carries and how it was known, for its session-start.

The user's ``--device`` wins; then QEMU's command line (:mod:`.endpoints`); then the
peers' own programs and arguments (DPDK's ``--vdev``, qemu-storage-daemon's ``--export``,
virtiofsd, vhost-device-*), read from /proc and judged by
:mod:`vhtrace.protocol.device_inference`. A session none of these name is left to the
trace's readers, which infer it from the feature bits (:mod:`vhtrace.analysis`).
"""

from __future__ import annotations

from typing import Any

from vhtrace.protocol.device_inference import Peer, from_peers
from vhtrace.record import endpoints

ROLES = {"frontend": "front-end", "backend": "back-end"}


def _peer(side: str, info: dict[str, Any]) -> Peer | None:
    pid = info.get("pid")
    if not pid:
        return None
    argv = endpoints.process_cmdline(pid)
    return Peer(ROLES[side], str(info.get("program") or (argv[0] if argv else "")), argv)


def session_device(
    info: dict[str, Any], qemu_device: str | None, given: str | None = None
) -> dict[str, str]:
    """``device`` and ``device_from`` for a session-start event (empty if unknown).

    ``info``: the event's ``frontend``/``backend`` peer dicts and socket paths."""
    if given:
        return {"device": given, "device_from": "given with --device at record"}
    if qemu_device:
        return {"device": qemu_device, "device_from": "from the front-end's QEMU command line"}
    found = from_peers(
        _peer("frontend", info.get("frontend") or {}),
        _peer("backend", info.get("backend") or {}),
        info.get("frontend_socket"),
        info.get("backend_socket"),
    )
    return {"device": found.device.value, "device_from": found.how} if found else {}
