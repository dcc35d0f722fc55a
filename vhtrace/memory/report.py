"""How snapshots read: text lines and JSON objects for ``vhtrace rings`` (pure).

The interesting questions about a ring at a moment are: what did the driver
make available (avail.idx), what did the device complete (used.idx), where
does the back-end say it is (the vring base of GET_VRING_BASE / SET_VRING_BASE),
which requests are in flight, and what do their descriptor chains point at.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vhtrace.memory.descriptors import Chain, Desc, MemoryReader
from vhtrace.memory.inflight import InflightArea, decode_inflight
from vhtrace.memory.packed import PackedBase
from vhtrace.memory.plan import RingView, packed_chains
from vhtrace.memory.split import INDEX_MASK, SplitRing
from vhtrace.memory.tracedata import Snapshot
from vhtrace.protocol.payloads import human_size

DEFAULT_RECENT = 4


def backend_position(config: dict[str, Any]) -> tuple[int | None, str]:
    """Where the back-end stands on a ring, and which message said so.

    A stopped ring: the last GET_VRING_BASE reply. A ring configured or started
    since: the SET_VRING_BASE it was started with."""
    if config.get("last_base") is not None and not config.get("started"):
        return config["last_base"], "GET_VRING_BASE"
    if config.get("base") is not None:
        return config["base"], "SET_VRING_BASE"
    return None, ""


def title(snapshot: Snapshot, start_ns: int) -> str:
    record, info = snapshot.record, snapshot.info
    stats = info.get("stats", {})
    where = f"#{record.seq} " if record.seq else ""
    ring = f" vring {info['ring']}" if info.get("ring") is not None else ""
    what = info.get("request")
    role = info.get("role")
    said = f" ({what}{' reply' if role == 'reply' else ''})" if what else ""
    exact = ""
    if info.get("message_mono_ns"):
        exact = f", +{(record.mono_ns - info['message_mono_ns']) / 1e6:.1f} ms after it"
    if info.get("held"):
        exact += ", held" if info.get("exact") else ", NOT exact (the hold expired)"
    return (
        f"snapshot {record.snapshot}  {where}{record.trigger}{ring}{said}  session "
        f"{record.session}  t={(record.mono_ns - start_ns) / 1e9:.6f}  "
        f"memory={info.get('mode')}  {stats.get('pages', 0)} pages, "
        f"{stats.get('new_pages', 0)} new{exact}"
    )


def _desc_text(desc: Desc) -> str:
    direction = "w" if desc.write else "r"
    return f"0x{desc.addr:x}+{desc.len} {direction}"


def _peek(desc: Desc, memory: MemoryReader | None, peek: int) -> str:
    if memory is None or peek <= 0 or desc.len == 0:
        return ""
    data = memory.read(desc.addr, min(peek, desc.len))
    return " [not captured]" if data is None else f" [{data.hex()}]"


def chain_text(
    chain: Chain, limit: int = 8, memory: MemoryReader | None = None, peek: int = 0
) -> str:
    """A chain on one line: each buffer as addr+len r|w (and its first ``peek`` bytes)."""
    parts = [_desc_text(d) + _peek(d, memory, peek) for d in chain.buffers[:limit]]
    if len(chain.buffers) > limit:
        parts.append(f"... {len(chain.buffers) - limit} more")
    text = ", ".join(parts) or "no buffers"
    if chain.indirect is not None:
        text = f"indirect 0x{chain.indirect.addr:x} ({len(chain.buffers)}): {text}"
    if chain.problems:
        text += "  !! " + "; ".join(chain.problems[:3])
    return text


def ring_lines(
    view: RingView,
    memory: MemoryReader,
    recent: int = DEFAULT_RECENT,
    everything: bool = False,
    peek: int = 0,
) -> list[str]:
    config = view.config
    flags = [name for name in ("event_idx", "indirect") if config.get(name)]
    state = (
        "enabled" if config.get("enabled") else "disabled" if config.get("enabled") is False else ""
    )
    lines = [
        f"  vring {config['index']}  {config.get('layout')}  num {config['num']}  "
        + "  ".join(
            flags + ([state] if state else []) + ["started" if config.get("started") else "stopped"]
        )
    ]
    addr = "  ".join(f"{name} {_addr(config, name)}" for name in ("desc", "avail", "used"))
    lines.append(f"    {addr}")
    if view.split is not None:
        lines += _split_lines(view, memory, recent, everything, peek)
    elif view.packed is not None:
        lines += _packed_lines(view, memory)
    for problem in view.problems[:16]:
        lines.append(f"    !! {problem}")
    if len(view.problems) > 16:
        lines.append(f"    !! ... {len(view.problems) - 16} more problems")
    return lines


def _addr(config: dict[str, Any], name: str) -> str:
    gpa = config.get(f"{name}_gpa")
    given = config.get(name)
    space = config.get("space")
    if given is None:
        return "?"
    if gpa is None:
        return f"0x{given:x} ({space}: not translated)"
    if space == "gpa":  # GPA_ADDRESSES: the front-end gave guest-physical addresses
        return f"0x{gpa:x} (gpa)"
    if gpa == given:
        return f"0x{gpa:x}"
    return f"0x{gpa:x} ({space} 0x{given:x})"


def _split_lines(
    view: RingView, memory: MemoryReader, recent: int, everything: bool, peek: int
) -> list[str]:
    ring = view.split
    assert ring is not None
    lines = []
    if ring.avail_idx is not None:
        event = f"  used_event {ring.used_event}" if ring.used_event is not None else ""
        lines.append(f"    avail  idx {ring.avail_idx}  flags 0x{ring.avail_flags:x}{event}")
    if ring.used_idx is not None:
        event = f"  avail_event {ring.avail_event}" if ring.avail_event is not None else ""
        lines.append(f"    used   idx {ring.used_idx}  flags 0x{ring.used_flags:x}{event}")
    position, said = backend_position(view.config)
    if position is not None and ring.avail_idx is not None and ring.used_idx is not None:
        last = position & INDEX_MASK
        waiting = (ring.avail_idx - last) & INDEX_MASK
        taken = (last - ring.used_idx) & INDEX_MASK
        verdict = (
            "agrees: all made available were taken and used"
            if waiting == 0 and taken == 0
            else f"{waiting} made available not taken yet, {taken} taken and not used"
        )
        lines.append(f"    back-end  {said} {last}: {verdict}")
    pending = ring.pending()
    if pending:
        lines.append(f"    in flight ({len(pending)}, oldest first):")
        shown = pending if everything else pending[:16]
        for position_, head in shown:
            chain = view.split_chain(head, memory)
            text = (
                chain_text(chain, memory=memory, peek=peek)
                if chain is not None
                else "(not walked: step budget)"
            )
            lines.append(
                f"      avail[{position_ % ring.num}] idx {position_}  head {head}: {text}"
            )
        if len(pending) > len(shown):
            lines.append(f"      ... {len(pending) - len(shown)} more")
    elif ring.avail_idx is not None:
        lines.append("    in flight: none")
    count = ring.num if everything else recent
    used = ring.recent_used(count)
    if used:
        lines.append("    recent completions (newest first):")
        reused = reuse(ring)
        for position_, ident, length in used:
            chain = view.split_chain(ident, memory) if ident < ring.num else None
            if position_ in reused:
                text = f"(its descriptors were reused by idx {reused[position_]})"
            elif chain is None:
                text = "(id out of range)"
            else:
                text = chain_text(chain, memory=memory, peek=peek)
            lines.append(
                f"      used[{position_ % ring.num}] idx {position_}  id {ident} len {length}: "
                f"{text}"
            )
    return lines


def reuse(ring: SplitRing) -> dict[int, int]:
    """Used entries whose head a later request took again: position -> that request's idx.

    A completed request's descriptors go back to the driver, which reuses them: the
    chain found at an old entry's head now belongs to the newer request."""
    later: dict[int, int] = {position: head for position, head in ring.pending()}
    owner = {head: position for position, head in later.items()}
    out: dict[int, int] = {}
    for position, ident, _ in ring.recent_used(ring.num):  # newest first
        if ident in owner:
            out[position] = owner[ident]
        else:
            owner[ident] = position
    return out


def _packed_lines(view: RingView, memory: MemoryReader) -> list[str]:
    ring = view.packed
    assert ring is not None
    lines = []
    for name, event in (("driver", ring.driver_event), ("device", ring.device_event)):
        if event is not None:
            lines.append(f"    {name} event  off_wrap 0x{event[0]:x}  flags {event[1]}")
    base = view.packed_base()
    if base is None:
        return lines
    _, said = backend_position(view.config)
    lines.append(
        f"    back-end  {said}: avail idx {base.avail_idx} wrap {int(base.avail_wrap)}, "
        f"used idx {base.used_idx} wrap {int(base.used_wrap)}"
    )
    in_flight, pending = packed_chains(view, memory)
    for label, chains in (("taken, not used", in_flight), ("available, not taken", pending)):
        lines.append(f"    {label}: {len(chains)}")
        for chain in chains[:16]:
            ident = chain.buffers[-1].next if chain.buffers else "?"
            lines.append(f"      slot {chain.head} id {ident}: {chain_text(chain)}")
    return lines


def ring_json(view: RingView, memory: MemoryReader, recent: int = DEFAULT_RECENT) -> dict[str, Any]:
    config = view.config
    position, said = backend_position(config)
    out: dict[str, Any] = {
        "ring": config["index"],
        "layout": config.get("layout"),
        "num": config["num"],
        "desc": config.get("desc_gpa"),
        "avail": config.get("avail_gpa"),
        "used": config.get("used_gpa"),
        "backend_base": position,
        "backend_base_from": said or None,
        "problems": list(view.problems),
    }
    ring = view.split
    if ring is not None:
        reused = reuse(ring)
        out.update(
            avail_idx=ring.avail_idx,
            avail_flags=ring.avail_flags,
            used_event=ring.used_event,
            used_idx=ring.used_idx,
            used_flags=ring.used_flags,
            avail_event=ring.avail_event,
            in_flight=[
                {"idx": p, "head": h, **_chain_json(view.split_chain(h, memory))}
                for p, h in ring.pending()
            ],
            recent=[
                {
                    "idx": p,
                    "id": i,
                    "len": n,
                    "reused_by": reused.get(p),
                    **_chain_json(
                        view.split_chain(i, memory) if i < ring.num and p not in reused else None
                    ),
                }
                for p, i, n in ring.recent_used(recent)
            ],
        )
    elif view.packed is not None:
        base: PackedBase | None = view.packed_base()
        in_flight, pending = packed_chains(view, memory)
        out.update(
            driver_event=view.packed.driver_event,
            device_event=view.packed.device_event,
            base=None if base is None else dataclasses.asdict(base),
            in_flight=[{"slot": c.head, **_chain_json(c)} for c in in_flight],
            pending=[{"slot": c.head, **_chain_json(c)} for c in pending],
        )
    return out


def _chain_json(chain: Chain | None) -> dict[str, Any]:
    if chain is None:
        return {"buffers": None}
    return {
        "indirect": None if chain.indirect is None else chain.indirect.addr,
        "buffers": [{"addr": d.addr, "len": d.len, "write": d.write} for d in chain.buffers],
        "problems": list(chain.problems),
    }


def inflight_area(info: dict[str, Any], data: bytes | None) -> InflightArea | None:
    area = info.get("inflight")
    if not area or data is None:
        return None
    packed = info.get("rings") and info["rings"][0].get("layout") == "packed"
    return decode_inflight(
        data, area.get("num_queues", 0), area.get("queue_size", 0), packed=bool(packed)
    )


def inflight_lines(info: dict[str, Any], data: bytes | None) -> list[str]:
    area_info = info.get("inflight")
    if not area_info:
        return []
    size = human_size(int(area_info.get("mmap_size", 0)))
    lines = [
        f"  inflight area  {area_info.get('num_queues')} queues x "
        f"{area_info.get('queue_size')}, {size} (#{area_info.get('seq')})"
    ]
    area = inflight_area(info, data)
    if area is None:
        lines.append("    not captured")
        return lines
    for problem in area.problems:
        lines.append(f"    !! {problem}")
    for queue in area.queues:
        if not queue.initialised:
            lines.append(f"    queue {queue.index}: not initialised (version 0)")
            continue
        heads = ", ".join(f"{d.index}@{d.counter}" for d in queue.inflight[:16]) or "none"
        more = f" ... {len(queue.inflight) - 16} more" if len(queue.inflight) > 16 else ""
        batch = (
            f"  last_batch_head {queue.last_batch_head}"
            if queue.last_batch_head is not None
            else ""
        )
        lines.append(
            f"    queue {queue.index}: version {queue.version} desc_num "
            f"{queue.desc_num} used_idx {queue.used_idx}{batch}  in flight: "
            f"{heads}{more}"
        )
        for problem in queue.problems:
            lines.append(f"      !! {problem}")
    return lines
