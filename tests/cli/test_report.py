"""``vhtrace report``, the command: files, exit codes, HTML, SVG, stdin and stdout.

The model it draws is tested in tests/report/test_model.py.
The drawing itself is checked in a real browser in tests/system/test_report_browser.py."""

from __future__ import annotations

import json
import os
import re
import stat
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from vhtrace.report import model

TRACES = Path(__file__).resolve().parents[2] / "traces"
BLK = TRACES / "qemu-qsd-blk.vht"
POSTCOPY = TRACES / "qemu-qsd-postcopy-dst.vht"


def show_json(run_cli, *argv: object) -> list[dict]:
    code, out, _ = run_cli("show", "--json", *argv)
    assert code == 0
    return [json.loads(line) for line in out.splitlines()]


def test_the_command_writes_a_private_self_contained_page(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    code, _, err = run_cli("report", POSTCOPY, "-o", out)
    assert code == 0, err
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    page = out.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "fetches from the network"
    assert "<script src" not in page and "<link" not in page
    data = json.loads(re.search(r'id="data">(.*?)</script>', page, re.S).group(1))
    assert len([r for r in data["rows"] if r[0] == model.MESSAGE]) == 35


def test_svg_has_one_arrow_per_message(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "chart.svg"
    code, _, err = run_cli("report", "--svg", BLK, "-o", out)
    assert code == 0, err
    tree = ElementTree.parse(out)
    ns = "{http://www.w3.org/2000/svg}"
    titles = [g.find(f"{ns}title").text for g in tree.iter(f"{ns}g")]
    messages = [m["seq"] for m in show_json(run_cli, BLK) if m["type"] == "message"]
    assert [int(t.split()[0][1:]) for t in titles] == messages


def test_bad_options_and_damaged_traces(run_cli, tmp_path: Path) -> None:
    code, _, err = run_cli("report", BLK, "--gap", "0")
    assert code == 2 and "--gap" in err
    code, _, err = run_cli("report", tmp_path / "missing.vht")
    assert code == 2
    cut = tmp_path / "cut.vht"
    cut.write_bytes(BLK.read_bytes()[: BLK.stat().st_size // 2])
    out = tmp_path / "cut.html"
    code, _, err = run_cli("report", cut, "-o", out)
    assert code == 2 and "cut.vht" in err
    assert "DAMAGED" in out.read_text()


@pytest.mark.parametrize("svg", [False, True])
def test_stdout_and_stdin(run_cli, svg: bool, monkeypatch, tmp_path: Path) -> None:
    import io
    import sys

    class Stdin:
        buffer = io.BytesIO(BLK.read_bytes())

    monkeypatch.setattr(sys, "stdin", Stdin)
    code, out, _ = run_cli("report", "-", *(["--svg"] if svg else []))
    assert code == 0
    assert out.startswith("<svg" if svg else "<!doctype html>")
