"""The Lua dissector's source: generated from the spec, and in sync with it."""

from __future__ import annotations

import re
from pathlib import Path

from vhtrace.dissect import lua
from vhtrace.protocol import payloads, spec


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
