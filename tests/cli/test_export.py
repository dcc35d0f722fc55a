"""vhtrace export, the command: exit codes, a cut-short trace, --lua."""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.utils import PcapNgReader

from tests.dissect import corpus
from vhtrace.cli.main import main
from vhtrace.dissect.lua import lua_source


def test_cli_exit_codes(synthetic_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out.pcapng"
    assert main(["export", str(synthetic_dir / "blk.vht"), "-o", str(out)]) == 0
    assert len(list(PcapNgReader(str(out)))) == len(corpus.blk())
    assert "51 messages written" in capsys.readouterr().err

    junk = tmp_path / "junk.vht"
    junk.write_bytes(b"junk")
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(junk), "-o", str(tmp_path / "never.pcapng")])
    assert exit_info.value.code == 2
    assert not (tmp_path / "never.pcapng").exists()

    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(synthetic_dir / "blk.vht")])
    assert exit_info.value.code == 2


def test_cut_short_trace_exports_what_it_has(synthetic_dir: Path, tmp_path: Path) -> None:
    data = (synthetic_dir / "blk.vht").read_bytes()
    cut = tmp_path / "cut.vht"
    cut.write_bytes(data[:-20])
    out = tmp_path / "cut.pcapng"
    assert main(["export", str(cut), "-o", str(out)]) == 2
    assert 0 < len(list(PcapNgReader(str(out)))) <= len(corpus.blk())


def test_lua_flag_prints_the_dissector(capsys: pytest.CaptureFixture) -> None:
    assert main(["export", "--lua"]) == 0
    assert capsys.readouterr().out == lua_source()
