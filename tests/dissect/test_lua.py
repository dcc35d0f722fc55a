"""The Lua dissector's source: generated from the spec, and in sync with it."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from scapy.utils import wrpcapng

from tests.dissect import corpus
from tests.dissect.conftest import frames, needs_tshark
from vhtrace.analysis import AnalysedMessage, analyser_for
from vhtrace.dissect import lua
from vhtrace.dissect.export import LinkType
from vhtrace.dissect.lua import REGION_KEYS, STRUCT_KEYS
from vhtrace.protocol import payloads, spec
from vhtrace.protocol.spec import Channel
from vhtrace.scapy import read_trace, register_user_dlt
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import MessageRecord


def handwritten() -> str:
    """The hand-written Lua, comments left out."""
    text = lua.shipped_source()
    text = text[: text.index(lua.BEGIN)] + text[text.index(lua.END) :]
    return re.sub(r"--.*", "", text)


def test_shipped_file_is_in_sync_with_the_spec() -> None:
    shipped = lua.shipped_source()
    assert lua.regenerate(shipped) == shipped, "run: python -m vhtrace.dissect.lua"


def test_no_request_is_typed_by_hand() -> None:
    """Request names and ids live in the generated block only."""
    text = handwritten()
    for row in (*spec.FRONTEND_REQUESTS, *spec.BACKEND_REQUESTS):
        assert not re.search(rf"\b{row.name}\b", text), row.name
    assert not re.search(r"request\s*==\s*\d", text)


def test_every_layout_has_a_decoder() -> None:
    decoders = set(re.findall(r"^D\.(\w+) = ", handwritten(), re.MULTILINE))
    assert decoders == set(payloads.LAYOUTS)


def test_every_field_used_is_declared() -> None:
    used = set(re.findall(r'F\["([\w.]+)"\]', handwritten()))
    used |= set(re.findall(r"\bF\.(\w+)", handwritten()))
    used |= {key for entries in lua.all_structs().values() for key, _ in entries}
    declared = {field.key for field in lua.FIELDS}
    assert used <= declared, used - declared
    assert len(declared) == len(lua.FIELDS)


def test_structs_match_the_codec() -> None:
    structs = lua.all_structs()
    for layout in lua.STRUCT_KEYS:
        assert sum(size for _, size in structs[layout]) == payloads.LAYOUTS[layout].size
    assert sum(size for _, size in structs["region_xen"]) == payloads.region_size(
        payloads.PayloadContext(xen_mmap=True)
    )
    for name in ("crypto_sym", "crypto_asym"):
        assert sum(size for _, size in structs[name]) == payloads.CryptoSession.NEW_SIZE


def test_generated_block_names_every_request_of_both_channels() -> None:
    block = lua.generated_block()
    for row in (*spec.FRONTEND_REQUESTS, *spec.BACKEND_REQUESTS):
        assert f'[{row.id}] = {{ name = "{row.name}", payload = "{row.payload}"' in block


def test_docs_list_every_field() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "dissection.md").read_text()
    missing = [f.key for f in lua.FIELDS if f"`{f.filter_name}`" not in docs]
    assert not missing
    experts = re.findall(r'ProtoExpert\.new\("([\w.]+)"', lua.shipped_source())
    assert experts and all(f"`{name}`" in docs for name in experts)


# ----------------------------------------------------------------------------
# tshark reads exported traces with the Lua dissector; display filters find the messages.
# ----------------------------------------------------------------------------


pytestmark = needs_tshark

Tshark = Callable[..., str]

REPO_TRACES = Path(__file__).resolve().parents[2] / "traces"


def matching(messages: list[corpus.Msg], predicate: Callable[[corpus.Msg], bool]) -> list[int]:
    return [n for n, msg in enumerate(messages, start=1) if predicate(msg)]


def header(msg: corpus.Msg) -> tuple[int, int, int]:
    return struct.unpack_from("<III", msg.raw) if len(msg.raw) >= 12 else (-1, -1, -1)


@pytest.fixture(scope="module")
def every(synthetic_dir: Path, exported: Callable[..., Path]) -> Path:
    return exported(synthetic_dir / "every_layout.vht")


def filtered(tshark: Tshark, capture: Path, display_filter: str) -> list[int]:
    return frames(tshark(capture, "-Y", display_filter, "-T", "fields", "-e", "frame.number"))


def test_request_id_filter(tshark: Tshark, every: Path) -> None:
    messages = corpus.every_layout()
    any_channel = matching(messages, lambda m: header(m)[0] == 5)
    assert filtered(tshark, every, "vhost_user.request == 5") == any_channel
    main = matching(messages, lambda m: m.channel is Channel.MAIN and header(m)[0] == 5)
    assert main and main != any_channel  # id 5 is also the back-end's VRING_ERR
    display_filter = 'vhost_user.request == 5 && vhost_user.channel == "main"'
    assert filtered(tshark, every, display_filter) == main


def test_memory_regions_by_guest_address(
    tshark: Tshark, synthetic_dir: Path, exported: Callable[..., Path]
) -> None:
    messages = corpus.blk()
    blk = exported(synthetic_dir / "blk.vht")
    added = [
        n
        for n, m in enumerate(messages, start=1)
        if header(m)[0] == 37 and not header(m)[1] & spec.FLAG_REPLY
        and payloads.decode("mem_region", m.raw[12:]).fields["guest_phys_addr"] == 4 * corpus.GIB
    ]  # fmt: skip
    assert len(added) == 1
    assert filtered(tshark, blk, "vhost_user.mem.gpa == 0x100000000") == added


def test_backend_channel_messages(tshark: Tshark, every: Path) -> None:
    expected = matching(corpus.every_layout(), lambda m: m.channel is Channel.BACKEND)
    assert expected and filtered(tshark, every, 'vhost_user.channel == "backend"') == expected
    shmem_map = matching(
        corpus.every_layout(), lambda m: m.channel is Channel.BACKEND and header(m)[0] == 9
    )
    assert filtered(tshark, every, 'vhost_user.request_name == "SHMEM_MAP"') == shmem_map


def test_replies_by_their_flag(tshark: Tshark, every: Path) -> None:
    messages = corpus.every_layout()
    replies = matching(messages, lambda m: header(m)[1] != -1 and header(m)[1] & spec.FLAG_REPLY)
    assert filtered(tshark, every, "vhost_user.flags.reply == 1") == replies
    features = matching(messages, lambda m: header(m)[:2] == (1, spec.REPLY_FLAGS))
    assert (
        filtered(tshark, every, "vhost_user.flags.reply == 1 && vhost_user.request == 1")
        == features
    )


def test_a_reply_reads_as_what_it_answers(tshark: Tshark, every: Path) -> None:
    """The postcopy reply carries a memory table although the table says ack."""
    tags = [m.tag for m in corpus.every_layout()]
    reply = tags.index("SET_MEM_TABLE postcopy reply") + 1
    request = tags.index("SET_MEM_TABLE postcopy") + 1
    found = filtered(
        tshark, every, "vhost_user.flags.reply == 1 && vhost_user.mem.uaddr == 0x7e0000000000"
    )
    assert found == [reply]
    out = tshark(
        every, "-Y", f"frame.number == {reply}", "-T", "fields", "-e", "vhost_user.request_in"
    )
    assert out.split() == [str(request)]


def test_contexts_change_layouts(tshark: Tshark, every: Path) -> None:
    tags = [m.tag for m in corpus.every_layout()]
    xen = [tags.index("SET_MEM_TABLE xen") + 1, tags.index("ADD_MEM_REG xen") + 1]
    assert filtered(tshark, every, "vhost_user.mem.domid == 7") == xen
    packed = tags.index("GET_VRING_BASE packed reply") + 1
    assert filtered(
        tshark, every, "vhost_user.vring.used_wrap == 1 && vhost_user.vring.used_idx == 5"
    ) == [packed]


def test_findings_and_malformed_messages(tshark: Tshark, every: Path) -> None:
    tags = [m.tag for m in corpus.every_layout()]
    unanswered = tags.index("reserved flags") + 1
    assert unanswered in filtered(tshark, every, 'vhost_user.finding contains "no reply"')
    # The oversized message's recorded prefix is zeros: 0 regions, then bytes beyond the layout.
    trailing = [tags.index(t) + 1 for t in ("extra bytes", "oversized")]
    assert filtered(tshark, every, "vhost_user.trailing") == trailing
    assert filtered(tshark, every, "vhost_user.flags.reserved != 0") == [unanswered]
    cut = [tags.index(t) + 1 for t in ("oversized", "cut short")]
    assert filtered(tshark, every, "vhost_user.expert.cut") == cut


def test_user_link_type_reads_the_same(
    tshark: Tshark, synthetic_dir: Path, exported: Callable[..., Path]
) -> None:
    user = exported(synthetic_dir / "every_layout.vht", LinkType.USER)
    upper = exported(synthetic_dir / "every_layout.vht")
    for display_filter in ('vhost_user.channel == "backend"', "vhost_user.mem.gpa == 0"):
        assert filtered(tshark, user, display_filter) == filtered(tshark, upper, display_filter)


Pairs = list[tuple[str, object]]


def _vhost_user_fields(layer: Pairs) -> dict[str, list[str]]:
    """Every vhost_user.* field of a -T json layer, subtrees included (keys repeat)."""
    found: dict[str, list[str]] = {}
    for key, value in layer:
        if isinstance(value, list) and value and isinstance(value[0], tuple):
            for k, v in _vhost_user_fields(value).items():
                found.setdefault(k, []).extend(v)
        elif key.startswith("vhost_user."):
            found.setdefault(key, []).extend(value if isinstance(value, list) else [value])
    return found


def _layers(output: str) -> list[dict[str, Pairs]]:
    packets = json.loads(output, object_pairs_hook=list)
    return [dict(dict(dict(p)["_source"])["layers"]) for p in packets]


def test_struct_fields_agree_with_the_codec(tshark: Tshark, every: Path) -> None:
    """The Lua reads every fixed struct and memory table of session 1 as the codec does."""
    messages = corpus.every_layout()
    checked = 0
    for layers in _layers(tshark(every, "-T", "json", "-J", "frame vhost-user")):
        msg = messages[int(dict(layers["frame"])["frame.number"]) - 1]
        fields = _vhost_user_fields(layers.get("vhost-user", []))
        layout = fields.get("vhost_user.layout", [None])[0]
        decoded = payloads.decode(layout, msg.raw[12:]).fields if layout else None
        if msg.session != 1 or decoded is None:  # sessions 2, 3: other contexts
            continue
        if layout in STRUCT_KEYS:
            for name, key in STRUCT_KEYS[layout].items():
                if key != "padding":
                    assert int(fields["vhost_user." + key][0], 0) == decoded[name], (layout, name)
            checked += 1
        elif layout == "mem_table":
            for name in payloads.REGION_FIELDS:
                values = [int(v, 0) for v in fields.get("vhost_user." + REGION_KEYS[name], [])]
                assert values == [r[name] for r in decoded["regions"]], name
            checked += 1
    assert checked > 40


def test_every_trace_opens(tshark: Tshark, any_trace: Path, exported: Callable[..., Path]) -> None:
    """Synthetic and real traces: one frame per message, each named as the spec names it."""
    with TraceReader(any_trace) as reader:
        messages = [r for r in reader if isinstance(r, MessageRecord)]
    out = tshark(exported(any_trace), "-T", "fields", "-e", "vhost_user.request_name")
    names = out.splitlines()
    assert len(names) == len(messages)
    for name, record in zip(names, messages, strict=True):
        if len(record.raw) >= spec.HEADER_SIZE:
            assert name == spec.request_name(Channel(record.channel), record.header[0])


def test_scapy_capture_reads_the_same(
    tshark: Tshark, synthetic_dir: Path, exported: Callable[..., Path], tmp_path: Path
) -> None:
    """wrpcapng(read_trace(...)) is a USER DLT capture the same Lua reads."""
    register_user_dlt()
    capture = tmp_path / "scapy.pcapng"
    wrpcapng(str(capture), read_trace(synthetic_dir / "every_layout.vht"))
    exported_file = exported(synthetic_dir / "every_layout.vht")
    for display_filter in ('vhost_user.channel == "backend"', 'vhost_user.role == "postcopy-ack"'):
        found = filtered(tshark, capture, display_filter)
        assert found and found == filtered(tshark, exported_file, display_filter)


def test_config_space_by_name_as_vhtrace_reads_it(
    tshark: Tshark, exported: Callable[..., Path]
) -> None:
    """Real QEMU and qemu-storage-daemon: the GET_CONFIG reply's fields and summary line
    are the ones the codec gives (the capacity the daemon reported, in sectors)."""
    trace = REPO_TRACES / "qemu-qsd-blk.vht"
    with TraceReader(trace) as reader:
        items = list(analyser_for(reader.header).run(reader))
    configs = [
        i for i in items if isinstance(i, AnalysedMessage) and i.analysis.name == "GET_CONFIG"
    ]
    reply = next(i for i in configs if i.analysis.role == "reply")
    named = reply.analysis.fields["device_config"]
    out = tshark(exported(trace), "-Y", "vhost_user.config.blk.capacity", "-T", "fields",
                 "-e", "frame.number", "-e", "vhost_user.config.blk.capacity",
                 "-e", "vhost_user.config.blk.num_queues")  # fmt: skip
    rows = [[int(v) for v in line.split("\t")] for line in out.splitlines()]
    # only the reply names the disk's fields: the request's window is zeros
    assert rows == [[reply.record.seq, named["capacity"], named["num_queues"]]]
    info = tshark(exported(trace), "-Y", f"frame.number == {reply.record.seq}")
    assert info.rstrip().endswith(f"GET_CONFIG reply {reply.analysis.summary()}")


def test_get_config_request_is_offset_size_flags_and_a_zeroed_window(
    tshark: Tshark, exported: Callable[..., Path]
) -> None:
    """QEMU's GET_CONFIG request (vhost-user.rst: "offset, size and flags ... the config
    space contents are zeroed"): no device field, no 'capacity 0' on its summary line, the
    same summary vhtrace gives."""
    trace = REPO_TRACES / "qemu-qsd-blk.vht"
    with TraceReader(trace) as reader:
        items = list(analyser_for(reader.header).run(reader))
    request = next(
        i
        for i in items
        if isinstance(i, AnalysedMessage)
        and i.analysis.name == "GET_CONFIG"
        and i.analysis.role == "request"
    )
    window = request.record.raw[spec.HEADER_SIZE + 12 :]
    assert window and not any(window), "the recorded request's window is not zeros"
    capture = exported(trace)
    line = tshark(capture, "-Y", f"frame.number == {request.record.seq}").rstrip()
    assert line.endswith(f"GET_CONFIG {request.analysis.summary()}"), line
    assert "capacity" not in line
    fields = tshark(capture, "-Y", f"frame.number == {request.record.seq}", "-T", "fields",
                    "-e", "vhost_user.config.offset", "-e", "vhost_user.config.size",
                    "-e", "vhost_user.config.blk.capacity")  # fmt: skip
    offset, size, capacity = fields.rstrip("\n").split("\t")
    assert (int(offset), int(size), capacity) == (0, len(window), "")


def test_device_feature_bits_are_named_by_the_traces_device(
    tshark: Tshark, exported: Callable[..., Path]
) -> None:
    """A blk trace of real QEMU and qemu-storage-daemon: the back-end's device bits (FLUSH 9,
    SEG_MAX 2, ...) carry their virtio-blk names in the tree and in
    vhost_user.features.name, as vhtrace names them (spec.DEVICE_VIRTIO_FEATURES)."""
    trace = REPO_TRACES / "qemu-qsd-blk.vht"
    with TraceReader(trace) as reader:
        items = list(analyser_for(reader.header).run(reader))
    feature_messages = [
        i
        for i in items
        if isinstance(i, AnalysedMessage) and i.analysis.layout == "virtio_features"
    ]
    offered = next(i for i in feature_messages if i.analysis.role == "reply")
    value = offered.analysis.fields["features"]
    names = spec.virtio_feature_names(value, spec.DeviceType.BLK)
    assert "FLUSH" in names and "SEG_MAX" in names
    capture = exported(trace)
    out = tshark(capture, "-Y", f"frame.number == {offered.record.seq}", "-T", "fields",
                 "-E", "aggregator=|", "-e", "vhost_user.features.name")  # fmt: skip
    assert out.strip().split("|") == names
    tree = tshark(capture, "-Y", f"frame.number == {offered.record.seq}", "-V")
    assert "Feature bit: FLUSH (9)" in tree and "Feature bit: SEG_MAX (2)" in tree
    assert "Unknown (" not in tree
    with_flush = [i.record.seq for i in feature_messages if i.analysis.fields["features"] >> 9 & 1]
    assert filtered(tshark, capture, 'vhost_user.features.name == "FLUSH"') == with_flush
    assert filtered(tshark, capture, "vhost_user.features.bit == 9") == with_flush
    assert filtered(tshark, capture, 'vhost_user.features.name == "RO"') == []  # writable
