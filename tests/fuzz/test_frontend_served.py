"""The front-end direction's pure parts: the served trace, the edits minimization works on,
and the back-end-channel requests the ``backend`` family inserts."""

from __future__ import annotations

from pathlib import Path

from vhtrace.fuzz.backchannel import SERVED_FAMILIES, SERVED_WEIGHTS, mutate_backend_request
from vhtrace.fuzz.frontend import Edit, apply, edits, reply_template
from vhtrace.fuzz.mutate import iteration_rng, mutate
from vhtrace.fuzz.served import write_served
from vhtrace.protocol.spec import FLAG_NEED_REPLY, Channel
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import MessageRecord

ROOT = Path(__file__).resolve().parents[2]
TRACE = ROOT / "traces" / "qemu-qsd-blk-firmware.vht"


def _messages(path: Path) -> list[MessageRecord]:
    with TraceReader(path) as reader:
        return [r for r in reader if isinstance(r, MessageRecord)]


def _replaced(template) -> frozenset[int]:
    return frozenset(m.origin for m in template.case.messages)


def test_the_unmutated_case_is_served_as_recorded(tmp_path: Path) -> None:
    template = reply_template(TRACE)
    path = write_served(TRACE, template.case, tmp_path / "s.vht", {"x": 1}, _replaced(template))
    recorded, served = _messages(TRACE), _messages(path)
    assert [(r.sender, r.raw) for r in served] == [(r.sender, r.raw) for r in recorded]
    assert [r.seq for r in served] == list(range(1, len(served) + 1))
    with TraceReader(path) as reader:
        assert reader.header["fuzz"] == {"x": 1}


def test_a_dropped_reply_is_left_out_and_the_rest_renumbered(tmp_path: Path) -> None:
    template = reply_template(TRACE)
    case = apply(template, [Edit("dropped", 7)])
    path = write_served(TRACE, case, tmp_path / "s.vht", {}, _replaced(template))
    served, recorded = _messages(path), _messages(TRACE)
    assert len(served) == len(recorded) - 1
    # #6 GET_QUEUE_NUM is followed by #8 GET_MAX_MEM_SLOTS, its reply #7 gone
    assert [r.raw for r in served[5:7]] == [recorded[5].raw, recorded[7].raw]
    assert [r.sender for r in served[5:7]] == ["frontend", "frontend"]


def test_an_inserted_backend_request_goes_after_its_front_end_message(tmp_path: Path) -> None:
    template = reply_template(TRACE)
    for i in range(40):
        case = mutate_backend_request(iteration_rng(3, i), template, template.case)
        assert case is not None
        [inserted] = [m for m in case.messages if m.origin is None]
        assert inserted.channel is Channel.BACKEND
        assert inserted.after is not None and inserted.after > 10  # after SET_BACKEND_REQ_FD
        path = write_served(TRACE, case, tmp_path / f"s{i}.vht", {}, _replaced(template))
        served = _messages(path)
        [at] = [n for n, r in enumerate(served) if r.channel == "backend"]
        before = served[at - 1]
        recorded = {r.raw: r.seq for r in _messages(TRACE) if r.sender == "frontend"}
        # right after its front-end message, or after that message's reply
        if before.sender == "frontend":
            assert before.raw == next(r.raw for r in _messages(TRACE) if r.seq == inserted.after)
        else:
            assert served[at - 2].sender == "frontend" and recorded[served[at - 2].raw]
        assert served[at].raw == inserted.raw
        assert inserted.flags & ~FLAG_NEED_REPLY == 1  # version 1, NEED_REPLY or not


def test_edits_name_what_a_case_does_and_apply_undoes_each() -> None:
    template = reply_template(TRACE)
    for i in range(60):
        case = mutate(iteration_rng(5, i), template, None, SERVED_FAMILIES, SERVED_WEIGHTS)
        found = edits(case, template)
        assert found, case.mutations
        assert apply(template, found).sessions == case.sessions, case.mutations
        assert apply(template, []).sessions == template.case.sessions
        for edit in found:  # every edit alone changes the recording
            assert apply(template, [edit]).sessions != template.case.sessions
