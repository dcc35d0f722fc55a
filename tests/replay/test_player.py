"""The replay state machine, driven without sockets (mitmproxy's Playbook manner).

A :class:`Playbook` plays the I/O loop: it sends whatever the player releases and feeds
it the live peer's messages one at a time; the tests read like the conversation.
"""

from __future__ import annotations

from dataclasses import replace

from tests.replay.builders import Msg, analysed, conversation, fe, with_reply
from vhtrace.analysis import AnalysedMessage
from vhtrace.protocol.spec import Side
from vhtrace.replay.compare import MessageView, view
from vhtrace.replay.plan import plan_sessions
from vhtrace.replay.player import Outcome, Player, Received
from vhtrace.replay.report import Kind, Status
from vhtrace.replay.rules import build_rules


def live_views(msgs: list[Msg], sender: Side) -> list[MessageView]:
    """The messages ``sender`` says in a (maybe altered) conversation, as seen live."""
    return [
        view(i.wire, i.analysis, i.record.fds)
        for i in analysed(msgs)
        if isinstance(i, AnalysedMessage) and i.wire.sender is sender
    ]


class Playbook:
    def __init__(self, play: Side, recorded: list[Msg] | None = None, **options) -> None:
        [self.plan] = plan_sessions(analysed(recorded or conversation()), play)
        self.player = Player(self.plan, build_rules(), **options)
        self.sent: list[int] = []

    def flush(self) -> list[int]:
        """Send everything the player lets go; the seqs sent."""
        out = []
        while (step := self.player.next_send()) is not None:
            self.player.sent(step)
            out.append(step.seq)
        self.sent += out
        return out

    def peer(self, live: MessageView) -> Received:
        return self.player.receive(live)

    def run(self, lives: list[MessageView]) -> list[Received]:
        verdicts = []
        for live in lives:
            self.flush()
            verdicts.append(self.peer(live))
            if self.player.stopped:
                break
        self.flush()
        return verdicts


def test_a_faithful_back_end_matches_everything_in_order() -> None:
    book = Playbook(Side.FRONTEND)
    assert book.flush() == [1]  # GET_FEATURES, then wait for its reply
    assert book.flush() == []
    lives = live_views(conversation(), Side.BACKEND)
    assert book.peer(lives[0]).outcome is Outcome.MATCHED
    assert book.flush() == [3]
    verdicts = book.run(lives[1:])
    assert all(v.outcome is Outcome.MATCHED for v in verdicts)
    assert book.player.finished and not book.player.divergences
    assert book.sent == [s.seq for s in book.plan.ours]
    assert {c.status for c in book.player.all_checks()} == {Status.OK}


def test_ring_positions_differ_but_are_excused() -> None:
    book = Playbook(Side.FRONTEND)
    verdicts = book.run(live_views(conversation(base=0), Side.BACKEND))
    assert verdicts[-1].outcome is Outcome.MATCHED
    assert {d.field for d in verdicts[-1].ignored} >= {"num"}
    assert book.player.checks[26].ignored[0].recorded == "7"


def test_a_different_reply_stops_at_that_message() -> None:
    book = Playbook(Side.FRONTEND)
    lives = live_views(with_reply(conversation(), "GET_QUEUE_NUM", {"value": 2}), Side.BACKEND)
    verdicts = book.run(lives)
    assert verdicts[-1].outcome is Outcome.DIVERGED
    divergence = book.player.divergences[0]
    assert (divergence.kind, divergence.seq) == (Kind.MISMATCH, 7)
    assert divergence.headline == "diverged at #7 GET_QUEUE_NUM reply: value differs"
    [diff] = divergence.differences
    assert (diff.field, diff.recorded, diff.live) == ("value", "1", "2")
    assert divergence.closest is None and divergence.searched
    assert book.player.stopped and book.sent == [1, 3, 5, 6]
    statuses = {c.seq: c.status for c in book.player.all_checks()}
    assert statuses[7] is Status.DIVERGED and statuses[9] is Status.NOT_REACHED


def test_keep_going_reports_every_difference() -> None:
    altered = with_reply(conversation(), "GET_QUEUE_NUM", {"value": 2})
    altered = with_reply(altered, "GET_FEATURES", {"features": 1 << 32 | 1 << 30})
    book = Playbook(Side.FRONTEND, keep_going=True)
    book.run(live_views(altered, Side.BACKEND))
    assert [d.seq for d in book.player.divergences] == [2, 7]
    assert book.player.finished


def test_serving_strict_order_names_the_closest_alternative() -> None:
    skipped = [m for i, m in enumerate(conversation(), 1) if i != 15]  # no SET_VRING_BASE
    book = Playbook(Side.BACKEND)
    verdicts = book.run(live_views(skipped, Side.FRONTEND))
    divergence = verdicts[-1].divergence
    assert divergence is not None and divergence.seq == 15
    assert divergence.headline == (
        "diverged at #15 SET_VRING_BASE: the live front-end sent SET_VRING_ADDR instead"
    )
    assert divergence.closest is not None and divergence.closest.seq == 16
    assert divergence.closest.describe() == "#16 SET_VRING_ADDR, identical to the live message"


def test_serving_loose_order_matches_by_content() -> None:
    msgs = conversation()
    swapped = [*msgs[:13], msgs[14], msgs[13], *msgs[15:]]  # SET_VRING_BASE before _NUM
    book = Playbook(Side.BACKEND, loose=True)
    verdicts = book.run(live_views(swapped, Side.FRONTEND))
    assert all(v.outcome is Outcome.MATCHED for v in verdicts)
    assert book.player.finished
    strict = Playbook(Side.BACKEND)
    assert strict.run(live_views(swapped, Side.FRONTEND))[-1].outcome is Outcome.DIVERGED


def test_a_request_the_trace_does_not_have_is_for_the_policy() -> None:
    msgs = conversation()
    extra = [*msgs[:10], fe("SET_STATUS", {"status": 8}), *msgs[10:]]
    book = Playbook(Side.BACKEND)
    lives = live_views(extra, Side.FRONTEND)
    verdicts = []
    for live in lives:
        book.flush()
        verdict = book.peer(live)
        if verdict.outcome is Outcome.UNKNOWN:
            assert verdict.divergence is not None
            assert verdict.divergence.headline.startswith(
                "the live front-end sent SET_STATUS, which the recording does not have; "
                "expected #11 SET_FEATURES"
            )
            book.player.not_in_trace(verdict, handled="acknowledged")
        verdicts.append(verdict.outcome)
    book.flush()
    assert verdicts.count(Outcome.UNKNOWN) == 1 and book.player.finished
    handled = [c for c in book.player.all_checks() if c.status is Status.HANDLED]
    assert [(c.label, c.note) for c in handled] == [("live SET_STATUS", "acknowledged")]


def test_fail_policy_makes_it_a_divergence() -> None:
    book = Playbook(Side.BACKEND)
    book.flush()
    [status] = live_views([fe("SET_STATUS", {"status": 8})], Side.FRONTEND)
    verdict = book.peer(status)
    book.player.not_in_trace(verdict, handled=None)
    assert book.player.stopped
    assert [d.kind for d in book.player.divergences] == [Kind.NOT_IN_TRACE]


def test_peer_closing_early_names_the_first_missing_message() -> None:
    book = Playbook(Side.BACKEND)
    book.run(live_views(conversation()[:12], Side.FRONTEND))
    divergence = book.player.peer_closed()
    assert divergence is not None and divergence.kind is Kind.CLOSED and divergence.seq == 14
    assert divergence.headline.startswith(
        "the live front-end closed the connection before #14 SET_VRING_NUM (9 recorded "
        "messages of the front-end never came, 4 of ours not sent)"
    )


def test_peer_closing_at_the_end_is_fine() -> None:
    book = Playbook(Side.BACKEND)
    book.run(live_views(conversation(), Side.FRONTEND))
    assert book.player.finished
    assert book.player.peer_closed() is None
    assert book.player.all_checks()[-1].label == "end of session"


def test_timeout_names_what_was_awaited() -> None:
    book = Playbook(Side.FRONTEND)
    book.run(live_views(conversation(), Side.BACKEND)[:3])
    divergence = book.player.timed_out(5)
    assert divergence.headline == (
        "waited 5 s for #9 SET_BACKEND_REQ_FD reply from the back-end: it did not come"
    )
    assert book.player.checks[9].status is Status.DIVERGED


def test_still_open_when_the_peer_should_have_closed() -> None:
    [plan] = plan_sessions(analysed(conversation(), end="backend closed"), Side.FRONTEND)
    book = Playbook(Side.FRONTEND)
    book.plan, book.player = plan, Player(plan, build_rules())
    book.run(live_views(conversation(), Side.BACKEND))
    divergence = book.player.still_open(2)
    assert divergence.kind is Kind.STILL_OPEN and "(backend closed)" in divergence.headline


def test_unexpected_back_end_message_when_playing_the_front_end() -> None:
    book = Playbook(Side.FRONTEND)
    lives = live_views(conversation(), Side.BACKEND)
    book.flush()
    extra = replace(lives[0])
    assert book.peer(lives[0]).outcome is Outcome.MATCHED
    verdict = book.peer(extra)  # the same reply again: not expected now
    assert verdict.outcome is Outcome.UNKNOWN
