"""What one iteration sends: a cut message ends its connection."""

from __future__ import annotations

from vhtrace.fuzz.case import Case, Message, build
from vhtrace.protocol.spec import lookup_request

GET_FEATURES = lookup_request("GET_FEATURES")[1]
SET_FEATURES = lookup_request("SET_FEATURES")[1]


def test_a_cut_message_is_the_last_of_its_session() -> None:
    """Found by a campaign: the minimizer kept a message after a cut one, the peer read it
    as the cut one's payload and waited for the rest (right), and that was called a hang."""
    whole = Message(build(SET_FEATURES, 1, bytes(8)))
    cut = whole.with_raw(whole.raw[:15], "cut after 15 of 20 bytes")
    after = Message(build(GET_FEATURES, 1, b""))
    case = Case(((whole, cut, after), (after,)))
    assert cut.cut and not whole.cut and not after.cut
    assert case.sessions == ((whole, cut), (after,)), "the next session is not touched"


def test_a_header_cut_short_is_cut_too() -> None:
    header_only = Message(build(GET_FEATURES, 1, b"")[:7])
    assert header_only.cut
    assert Case(((header_only, Message(build(GET_FEATURES, 1, b""))),)).count() == 1
