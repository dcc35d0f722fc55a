"""``vhtrace rings`` on a real trace: each snapshot's rings as text and JSON, the selectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vhtrace.cli.rings import snapshot_texts

BLK = Path(__file__).resolve().parents[2] / "traces" / "qemu-qsd-blk.vht"
"""QEMU 7.2 and qemu-storage-daemon, recorded with the default snapshots (4 of them)."""


def rings_json(run_cli, *argv: object) -> list[dict]:
    code, out, err = run_cli("rings", BLK, "--json", *argv)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def test_every_snapshot_shows_its_rings(run_cli) -> None:
    code, out, _ = run_cli("rings", BLK)
    assert code == 0
    headings = [line for line in out.splitlines() if line.startswith("snapshot ")]
    assert [h.split()[1] for h in headings] == ["1", "2", "3", "4"]
    assert headings[0].split()[2:5] == ["#30", "start", "vring"]
    assert "  vring 0  split  num 128" in out


def test_json_has_one_object_per_ring_agreeing_with_the_text(run_cli) -> None:
    objects = rings_json(run_cli)
    assert [o["snapshot"] for o in objects] == [1, 2, 3, 4]
    first, second = objects[:2]
    assert (first["type"], first["layout"], first["num"], first["trigger"]) == (
        "ring", "split", 128, "start"
    )  # fmt: skip
    assert (first["avail_idx"], second["avail_idx"]) == (0, 1)
    assert second["backend_base_from"] == "GET_VRING_BASE" and second["backend_base"] == 1


def test_at_and_ring_select(run_cli) -> None:
    assert [o["snapshot"] for o in rings_json(run_cli, "--at", "2")] == [2]
    assert rings_json(run_cli, "--ring", "5") == []


def test_a_snapshot_the_trace_does_not_have_is_exit_2(run_cli) -> None:
    code, _, err = run_cli("rings", BLK, "--at", "999")
    assert code == 2
    assert "no snapshot 999 (the trace has 1 to 4)" in err


def test_snapshot_texts_are_what_the_report_shows() -> None:
    texts = snapshot_texts(str(BLK))
    assert sorted(texts) == [1, 2, 3, 4]
    assert all(lines[1].startswith("  vring 0  split  num 128") for lines in texts.values())
    assert texts[1][0].startswith("snapshot 1  #30 start vring 0")


@pytest.mark.parametrize("option", ["--recent", "--peek"])
def test_counts_must_be_numbers(run_cli, option: str) -> None:
    code, _, _ = run_cli("rings", BLK, option, "many")
    assert code == 2
