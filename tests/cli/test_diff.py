"""``vhtrace diff OLD NEW``: changed, added and removed messages; rules; exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.replay.builders import FEATURES, be, conversation, fe, with_reply, write_trace
from vhtrace.protocol import spec

RO = 1 << 5  # VIRTIO_BLK_F_RO


def _traces(tmp_path: Path, old: list, new: list, **options: object) -> tuple[Path, Path]:
    return (
        write_trace(tmp_path / "old.vht", old, **options),
        write_trace(tmp_path / "new.vht", new, **options),
    )


def test_the_same_conversation_is_the_same(run_cli, tmp_path) -> None:
    old, new = _traces(tmp_path, [conversation()], [conversation()])
    code, out, err = run_cli("diff", old, new)
    assert (code, err) == (0, "")
    compared = len(conversation())
    assert f"session 1 -> 1: {compared} messages compared, 0 changes" in out
    assert out.rstrip().endswith("result: same (0 changed, 0 added, 0 removed)")


def test_a_changed_feature_bit_is_named(run_cli, tmp_path) -> None:
    old, new = _traces(tmp_path, [conversation()], [conversation(features=FEATURES | RO)])
    code, out, _ = run_cli("diff", old, new)
    assert code == 1
    assert "  changed     #2 -> #2     GET_FEATURES reply" in out
    assert f"features: old 0x{FEATURES:x}, new 0x{FEATURES | RO:x}" in out
    assert "new sets RO (bit 5), which the old trace has not" in out
    assert "SET_FEATURES" in out  # the front-end took the bit too
    assert "result: different (2 changed, 0 added, 0 removed)" in out
    # --mask-features excuses the bit everywhere
    code, out, _ = run_cli("diff", "--mask-features", "RO", old, new)
    assert code == 0, out


def test_a_message_only_one_side_has_keeps_the_rest_aligned(run_cli, tmp_path) -> None:
    base = conversation()
    extra = [fe("GET_MAX_MEM_SLOTS"), be("GET_MAX_MEM_SLOTS", {"value": 32})]
    longer = base[:7] + extra + base[7:]  # after GET_QUEUE_NUM's reply
    old, new = _traces(tmp_path, [base], [longer])
    code, out, _ = run_cli("diff", old, new)
    assert code == 1
    assert "  added             #8     GET_MAX_MEM_SLOTS (only in new)" in out
    assert "  added             #9     GET_MAX_MEM_SLOTS reply (only in new)  32" in out
    assert "result: different (0 changed, 2 added, 0 removed)" in out
    code, out, _ = run_cli("diff", new, old)  # the other way round: removed
    assert "  removed     #8           GET_MAX_MEM_SLOTS (only in old)" in out
    assert "result: different (0 changed, 0 added, 2 removed)" in out


def test_what_differs_between_any_two_runs_does_not_count_unless_asked(run_cli, tmp_path) -> None:
    moved = [m for m in conversation()]
    for i, msg in enumerate(moved):
        if spec.request_name(msg.channel, msg.frame.request) == "ADD_MEM_REG" and msg.fds:
            moved[i] = fe("ADD_MEM_REG", {"guest_phys_addr": 0, "memory_size": 1 << 20,
                                          "userspace_addr": 0x7F1234000000, "mmap_offset": 0},
                          need_reply=True, fds=msg.fds)  # fmt: skip
    old, new = _traces(tmp_path, [conversation()], [moved])
    code, out, _ = run_cli("diff", old, new)
    assert code == 0
    code, out, _ = run_cli("diff", "-v", old, new)
    assert "ignored  #12 -> #12 userspace_addr: old 0x7f0000000000, new 0x7f1234000000" in out
    assert "ASLR" in out
    code, out, _ = run_cli("diff", "--no-default-ignores", old, new)
    assert code == 1 and "userspace_addr: old 0x7f0000000000, new 0x7f1234000000" in out


def test_ignore_a_field_of_a_request(run_cli, tmp_path) -> None:
    answered = with_reply(conversation(), "GET_QUEUE_NUM", {"value": 2})
    old, new = _traces(tmp_path, [conversation()], [answered])
    code, out, _ = run_cli("diff", old, new)
    assert code == 1 and "value: old 1, new 2" in out
    assert run_cli("diff", "--ignore", "GET_QUEUE_NUM.value", old, new)[0] == 0


def test_a_session_only_one_side_has(run_cli, tmp_path) -> None:
    old, new = _traces(tmp_path, [conversation()], [conversation(), conversation()])
    code, out, _ = run_cli("diff", "--json", old, new)
    assert code == 1
    result = json.loads(out)
    assert result["result"] == "different"
    first, second = result["sessions"]
    assert (first["old_session"], first["new_session"], first["changes"]) == (1, 1, [])
    assert (second["old_session"], second["new_session"]) == (None, 2)
    assert {c["kind"] for c in second["changes"]} == {"added"}
    assert result["counts"] == {"changed": 0, "added": len(conversation()), "removed": 0}


def test_one_pair_of_sessions(run_cli, tmp_path) -> None:
    ro = conversation(features=FEATURES | RO)
    old, new = _traces(tmp_path, [conversation(), ro], [ro])
    code, out, _ = run_cli("diff", "--session", "2:1", old, new)
    assert code == 0 and "session 2 -> 1:" in out
    assert f"({2 * len(ro)} messages, 2 sessions) -> " in out  # the traces, whole
    code, out, _ = run_cli("diff", "--session", "1", old, new)
    assert code == 1 and "session 1 -> 1:" in out and "session 2" not in out
    code, _, err = run_cli("diff", "--session", "3:1", old, new)
    assert code == 2 and "the old trace has no session 3 (it has 1, 2)" in err
    code, _, err = run_cli("diff", "--session", "x", old, new)
    assert code == 2 and "expected OLD or OLD:NEW" in err


def test_bad_input(run_cli, tmp_path) -> None:
    old, new = _traces(tmp_path, [conversation()], [conversation()])
    cut = tmp_path / "cut.vht"
    cut.write_bytes(new.read_bytes()[:-40])
    code, _, err = run_cli("diff", old, cut)
    assert code == 2 and "records read" in err
    assert run_cli("diff", old, tmp_path / "missing.vht")[0] == 2
    code, _, err = run_cli("diff", old, "-")
    assert code == 2 and "not stdin" in err
    code, _, err = run_cli("diff", "--mask-features", "NOPE", old, new)
    assert code == 2 and "NOPE" in err


def test_a_second_ring_shows_as_added_not_as_ring_0_changing(run_cli, tmp_path) -> None:
    base = conversation()
    ring_1 = [
        fe("SET_VRING_NUM", {"index": 1, "num": 256}),
        fe("SET_VRING_BASE", {"index": 1, "num": 0}),
    ]
    at = next(i for i, m in enumerate(base) if spec.request_name(m.channel, m.frame.request)
              == "SET_VRING_NUM")  # fmt: skip
    two_rings = base[:at] + ring_1 + base[at:]  # ring 1's setup first, as QEMU may order it
    old, new = _traces(tmp_path, [base], [two_rings])
    code, out, _ = run_cli("diff", old, new)
    assert code == 1
    assert "result: different (0 changed, 2 added, 0 removed)" in out, out
    assert "index: old 0, new 1" not in out


def test_diff_json_names_its_sides_old_and_new(run_cli, tmp_path) -> None:
    answered = with_reply(conversation(), "GET_QUEUE_NUM", {"value": 2})
    old, new = _traces(tmp_path, [conversation()], [answered])
    code, out, _ = run_cli("diff", "--json", old, new)
    assert code == 1
    [change] = json.loads(out)["sessions"][0]["changes"]
    assert change["differences"] == [{"field": "value", "old": "1", "new": "2"}]
