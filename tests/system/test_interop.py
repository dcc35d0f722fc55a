"""The interop matrix: its table, and one real row (cheap: no guest)."""

from __future__ import annotations

import pytest

from vhtrace.lab import interop
from vhtrace.lab.interop import Cell


def test_table_numbers_each_detail_once() -> None:
    results = {
        ("virtio-user", "virtiofsd"): {m: Cell("n/a", "a net driver") for m in interop.MODES},
        ("QEMU", "mockbackend"): {"direct": Cell("ok"), "record": Cell("FAIL", "boom"),
                                  "replay": Cell("ok"), "mock": Cell("n/a", "a net driver")},
    }  # fmt: skip
    table = interop.render(results, markdown=True).splitlines()
    assert table[2] == "| virtio-user | virtiofsd | n/a [1] | n/a [1] | n/a [1] | n/a [1] |"
    assert table[3] == "| QEMU | mockbackend | ok | FAIL [2] | ok | n/a [1] |"
    assert "[1] a net driver  " in table and "[2] boom  " in table


def test_every_pair_of_the_issue_has_a_row() -> None:
    assert set(interop.ROWS) == {(f, b) for f in interop.FRONTENDS for b in interop.BACKENDS}


def test_a_row_whose_program_is_missing_is_skipped_with_the_reason(monkeypatch) -> None:
    monkeypatch.setenv("VHTRACE_TESTPMD", "/nonexistent/dpdk-testpmd")
    cells = interop.run_row("virtio-user", "mockbackend")
    assert {c.status for c in cells.values()} == {"skip"}
    assert "dpdk-testpmd not found" in cells["direct"].detail


@pytest.mark.lab_needs("testpmd", "hugepages")
def test_virtio_user_with_mockbackend_row_runs_for_real(lab) -> None:
    cells = interop.run_row("virtio-user", "mockbackend", keep=lab.data_dir)
    assert {m: c.status for m, c in cells.items()} == dict.fromkeys(interop.MODES, "ok"), cells
    assert "looped back" in cells["direct"].detail
