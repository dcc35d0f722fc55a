"""``vhtrace stats TRACE``: counts, sessions, negotiated features, timeline, findings."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from datetime import UTC, datetime
from typing import Any

from vhtrace.analysis import analyser_for, device_of
from vhtrace.cli import common
from vhtrace.cli.verbs import help_of
from vhtrace.protocol import spec
from vhtrace.protocol.findings import Severity
from vhtrace.protocol.spec import DeviceType
from vhtrace.protocol.state import ConversationState
from vhtrace.render import counted, jsonable, relative_time
from vhtrace.stats import TraceStats


def add_parser(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "stats",
        help=help_of("stats"),
        description="Counts per request and channel, the features each side offered and the "
        "ones negotiated, sessions, a timeline and the findings.",
    )
    parser.add_argument("trace", help="trace file (- for stdin)")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument(
        "--device",
        choices=[d.value for d in DeviceType],
        help="name virtio feature bits for this device type",
    )
    parser.add_argument(
        "--fail-on",
        choices=["error", "warning"],
        help="exit 1 if the trace has a finding of this severity (or worse)",
    )
    parser.set_defaults(run=run)


def collect(reader: Any, device_override: str | None = None) -> TraceStats:
    analyser = analyser_for(reader.header, device_override)
    stats = TraceStats()
    for item in analyser.run(reader):
        stats.add(item, analyser.conversations)
    stats.inferred_devices = {
        session: (found.device.value, found.how) for session, found in analyser.inferences.items()
    }
    return stats


def run(args: argparse.Namespace) -> int:
    reader = common.open_trace(args.trace)
    device = device_of(reader.header, args.device)
    stats = collect(reader, args.device)
    damaged = common.report_damage(reader)
    if args.json:
        print(json.dumps(jsonable(as_dict(reader.header, stats, reader.problem, device))))
    else:
        sys.stdout.write("\n".join(as_text(reader.header, stats, reader.problem, device)) + "\n")
    if damaged:
        return damaged
    if args.fail_on:
        levels = {Severity.ERROR} if args.fail_on == "error" else set(Severity)
        if any(f.severity in levels for _, f in stats.findings):
            return common.EXIT_FOUND
    return common.EXIT_OK


def _features(state: ConversationState | None, device: DeviceType | None) -> dict[str, Any]:
    if state is None:
        return {}

    def virtio(value: int | None) -> dict[str, Any] | None:
        if value is None:
            return None
        return {"value": value, "names": list(_virtio_names(value, device))}

    def protocol(value: int | None) -> dict[str, Any] | None:
        if value is None:
            return None
        return {"value": value, "names": list(_protocol_names(value))}

    not_taken = None
    if state.features_offered is not None and state.features_acked is not None:
        not_taken = virtio(state.features_offered & ~state.features_acked)
    protocol_not_taken = None
    if state.protocol_offered is not None and state.protocol_acked is not None:
        protocol_not_taken = protocol(state.protocol_offered & ~state.protocol_acked)
    if not_taken is not None and not not_taken["value"]:
        not_taken = None
    if protocol_not_taken is not None and not protocol_not_taken["value"]:
        protocol_not_taken = None
    return {
        "virtio_offered_by_backend": virtio(state.features_offered),
        "virtio_set_by_frontend": virtio(state.features_acked),
        "virtio_not_taken": not_taken,
        "protocol_offered_by_backend": protocol(state.protocol_offered),
        "protocol_set_by_frontend": protocol(state.protocol_acked),
        "protocol_not_taken": protocol_not_taken,
        "needs_qemu": _needs_qemu(state.protocol_acked),
        "queue_num": state.queue_num,
        "max_mem_slots": state.max_mem_slots,
        "postcopy": str(state.postcopy),
        "regions": len(state.regions),
        "rings": sorted(state.rings),
    }


@functools.lru_cache(maxsize=1024)
def _virtio_names(value: int, device: DeviceType | None) -> tuple[str, ...]:
    """Names of feature bits, once per value: a trace of many sessions repeats them."""
    return tuple(spec.virtio_feature_names(value, device))


@functools.lru_cache(maxsize=1024)
def _protocol_names(value: int) -> tuple[str, ...]:
    return tuple(spec.protocol_feature_names(value))


def _needs_qemu(acked: int | None) -> dict[str, str]:
    """The negotiated protocol bits a QEMU older than some release never sends: bit name
    -> that release (spec.QEMU_FIRST_WITH)."""
    if acked is None:
        return {}
    return {bit.name: release for bit, release in spec.QEMU_FIRST_WITH.items() if acked >> bit & 1}


def as_dict(
    header: dict[str, Any], stats: TraceStats, problem: str | None, device: DeviceType | None
) -> dict[str, Any]:
    def rel(ns: int | None) -> float | None:
        return None if ns is None else relative_time(header, ns)

    requests = {}
    for (channel, name), count in sorted(stats.requests.items()):
        requests.setdefault(channel, {})[name] = {
            "requests": count,
            "replies": stats.replies.get((channel, name), 0),
        }
    for (channel, name), count in sorted(stats.replies.items()):
        requests.setdefault(channel, {}).setdefault(name, {"requests": 0, "replies": count})
    return {
        "trace": {
            "tool": header.get("tool"),
            "host": header.get("host"),
            "wall_ns": header.get("wall_ns"),
            "device": device and device.value,
            "endpoints": header.get("endpoints"),
            "complete": problem is None,
            "problem": problem,
        },
        "messages": dict(stats.messages),
        "stream_bytes": dict(stats.stream_bytes),
        "fds": dict(stats.fds),
        "requests": requests,
        "sessions": [
            {
                "session": s.session,
                "first": rel(s.first_ns),
                "last": rel(s.last_ns),
                "messages": s.messages,
                "start": s.start_info,
                "end": s.end_info,
                "device": _session_device(s.start_info, stats.inferred_devices.get(s.session)),
                "features": _features(s.state, s.state.device if s.state else device),
                "timeline": [
                    {"time": rel(t), "seq": seq, "what": what} for t, seq, what in s.timeline
                ],
            }
            for s in stats.sessions.values()
        ],
        "findings": [{"session": session, **f.to_dict()} for session, f in stats.findings],
    }


def _session_device(start: dict[str, Any], inferred: tuple[str, str] | None) -> dict | None:
    """The session's device type and how it is known: the recorder's word (session-start)
    first, else what the messages told when the trace was read."""
    if start.get("device"):
        return {"type": start["device"], "from": start.get("device_from")}
    if inferred is not None:
        return {"type": inferred[0], "from": inferred[1]}
    return None


def _feature_line(label: str, value: dict[str, Any] | None) -> str:
    if value is None:
        return f"    {label:<28} (not seen)"
    names = " ".join(value["names"]) or "-"
    return f"    {label:<28} 0x{value['value']:x}  {names}"


def as_text(
    header: dict[str, Any], stats: TraceStats, problem: str | None, device: DeviceType | None
) -> list[str]:
    data = as_dict(header, stats, problem, device)
    lines = []
    wall = header.get("wall_ns")
    when = datetime.fromtimestamp(wall / 1e9, UTC).isoformat(timespec="seconds") if wall else "?"
    total = sum(stats.messages.values())
    span = 0.0
    if stats.first_ns is not None and stats.last_ns is not None:
        span = (stats.last_ns - stats.first_ns) / 1e9
    lines.append(
        f"Trace: {header.get('tool')} on {header.get('host')} at {when}, "
        f"{counted(total, 'message')} over {span:.3f} s, {counted(len(stats.sessions), 'session')}"
        + ("" if problem is None else f" [DAMAGED: {problem}]")
    )
    endpoints = header.get("endpoints") or {}
    for side, info in endpoints.items():
        lines.append(f"  {side}: {info}")
    per_channel = ", ".join(f"{c} {n}" for c, n in stats.messages.items()) or "none"
    lines.append(f"Messages per channel: {per_channel}")
    if stats.stream_bytes:
        lines.append(
            "Stream bytes: " + ", ".join(f"{c} {n}" for c, n in stats.stream_bytes.items())
        )
    if stats.fds:
        lines.append("fds passed: " + ", ".join(f"{k} {n}" for k, n in stats.fds.most_common()))
    lines.append("")
    lines.append("Requests:")
    for channel, table in data["requests"].items():
        lines.append(f"  {channel}:")
        lines.append(f"    {'request':<28} {'sent':>6} {'replies':>8}")
        for name, counts in sorted(table.items(), key=lambda kv: -kv[1]["requests"]):
            lines.append(f"    {name:<28} {counts['requests']:>6} {counts['replies']:>8}")
    for session in data["sessions"]:
        lines.append("")
        end = session["end"] or {}
        lines.append(
            f"Session {session['session']}: {session['messages']} messages, "
            f"{_t(session['first'])} to {_t(session['last'])}"
            + (f", ended: {end.get('reason')}" if end else "")
        )
        if session["device"]:
            how = session["device"]["from"]
            lines.append(f"  Device: {session['device']['type']}" + (f" ({how})" if how else ""))
        features = session["features"]
        if features:
            lines.append("  Features:")
            lines.append(
                _feature_line("virtio offered (back-end)", features["virtio_offered_by_backend"])
            )
            lines.append(
                _feature_line("virtio set (front-end)", features["virtio_set_by_frontend"])
            )
            if features["virtio_not_taken"]:
                lines.append(_feature_line("virtio not taken", features["virtio_not_taken"]))
            lines.append(
                _feature_line(
                    "protocol offered (back-end)", features["protocol_offered_by_backend"]
                )
            )
            lines.append(
                _feature_line("protocol set (front-end)", features["protocol_set_by_frontend"])
            )
            if features["protocol_not_taken"]:
                lines.append(_feature_line("protocol not taken", features["protocol_not_taken"]))
            if features["needs_qemu"]:
                needs = ", ".join(f"{n} (QEMU {r})" for n, r in features["needs_qemu"].items())
                lines.append(f"    {'needs a front-end at least':<28} {needs}")
            lines.append(
                f"    queues {features['queue_num']}, memory regions "
                f"{features['regions']}, rings used {features['rings']}, postcopy "
                f"{features['postcopy']}"
            )
        lines.append("  Timeline:")
        for entry in session["timeline"]:
            seq = f"#{entry['seq']}" if entry["seq"] is not None else ""
            lines.append(f"    {_t(entry['time']):>12} {seq:>7}  {entry['what']}")
    lines.append("")
    errors = sum(1 for f in stats.findings if f[1].severity is Severity.ERROR)
    warnings = len(stats.findings) - errors
    lines.append(f"Findings: {counted(errors, 'error')}, {counted(warnings, 'warning')}")
    for session, finding in stats.findings:
        lines.append(f"  [{session}] {finding.severity}: {finding}")
    return lines


def _t(value: float | None) -> str:
    return "?" if value is None else f"{value:.6f}s"
