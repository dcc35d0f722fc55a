"""Oracles and delta debugging, pure."""

from __future__ import annotations

import signal

from vhtrace.fuzz.case import Case, Message, build
from vhtrace.fuzz.minimize import minimize
from vhtrace.fuzz.oracle import Run, SessionRun, judge


def _run(*endings: str, status: int | None = None, output: str = "", **kw) -> Run:
    return Run([SessionRun(e, last_sent="SET_VRING_NUM", **kw) for e in endings], status, output)


def test_death_by_signal_is_a_crash_named_by_the_signal() -> None:
    verdict = judge(_run("closed", status=-signal.SIGSEGV))
    assert verdict.kind == "crash" and verdict.finding
    assert verdict.signature == "crash SIGSEGV"
    assert "after SET_VRING_NUM" in verdict.detail


def test_an_abort_with_an_assertion_keeps_the_text_numbers_blanked() -> None:
    text = "qsd: libvhost-user.c:2093: vu_get_queue: Assertion `qidx < dev->max_queues' failed."
    verdict = judge(_run("closed", status=-signal.SIGABRT, output=f"noise\n{text}\n"))
    assert verdict.kind == "crash"
    assert verdict.signature == "crash SIGABRT: " + text.replace("2093", "_")


def test_panic_text_without_death_is_a_panic() -> None:
    verdict = judge(_run("done", output="thread 'main' panicked at src/vring.rs:12:5\n"))
    assert verdict.kind == "panic" and verdict.finding
    assert "_" in verdict.signature and "12" not in verdict.signature


def test_an_owed_reply_that_never_came_is_a_hang() -> None:
    verdict = judge(_run("hang", waited_for="GET_VRING_BASE"))
    assert (verdict.kind, verdict.signature) == ("hang", "hang GET_VRING_BASE")


def test_a_violation_is_a_finding_but_a_clean_disconnect_is_not() -> None:
    bad = judge(_run("done", violations=["live GET_CONFIG reply: size 300 is above 256"]))
    assert bad.kind == "violation" and bad.signature == "violation live GET_CONFIG reply: " \
        "size _ is above _"  # fmt: skip
    for run in (_run("closed"), _run("send-failed"), _run("done"), _run("closed", status=1)):
        verdict = judge(run)
        assert not verdict.finding, verdict
    assert judge(_run("closed")).kind == "disconnect"
    assert judge(_run("done")).kind == "ok"
    assert judge(_run("closed", status=1)).kind == "exit"


def _message(number: int, mutated: bool = False) -> Message:
    plain = Message(build(number, 1, b""), origin=number)
    if not mutated:
        return plain
    return plain.with_raw(build(number, 9, b""), "flags 0x1 -> 0x9")


def test_ddmin_keeps_only_the_messages_the_failure_needs() -> None:
    messages = tuple(_message(n, mutated=n in (7, 20)) for n in range(1, 31))
    case = Case((messages[:10], messages[10:]), ("a", "b"))
    tests = []

    def still_fails(candidate: Case) -> bool:
        tests.append(candidate)
        requests = [(m.request, m.flags) for m in candidate.messages]
        # fails when #3 comes before a mutated #20 (the mutation matters), in any sessions
        return (3, 1) in requests and (20, 9) in requests and \
            requests.index((3, 1)) < requests.index((20, 9))  # fmt: skip

    smallest, used = minimize(case, still_fails, tests=200)
    assert [(m.request, m.flags) for m in smallest.messages] == [(3, 1), (20, 9)]
    assert len(smallest.sessions) == 2  # each kept in the session it was sent in
    assert smallest.mutations == ("#20 NET_SET_MTU (flags 0x1 -> 0x9)",)
    assert used == len(tests) and used < 60


def test_minimize_puts_back_mutations_the_failure_does_not_need() -> None:
    messages = tuple(_message(n, mutated=True) for n in range(1, 5))
    smallest, _ = minimize(Case((messages,)), lambda c: any(m.request == 2 for m in c.messages))
    assert [m.request for m in smallest.messages] == [2]
    assert not smallest.messages.__next__().mutation  # the unneeded mutation reverted
    assert smallest.mutations == ()


def test_minimize_stops_at_its_budget() -> None:
    messages = tuple(_message(n) for n in range(1, 65))
    calls = []
    minimize(Case((messages,)), lambda c: calls.append(c) or True, tests=5)
    assert len(calls) == 5
