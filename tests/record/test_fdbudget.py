"""The relay's fd budget: reading waits while a message's fds might not fit."""

from __future__ import annotations

import resource

from vhtrace.protocol.spec import SCM_MAX_FD
from vhtrace.record.fdbudget import RESERVE, FdBudget


def test_what_is_left_is_the_limit_less_what_was_open_and_the_reserve() -> None:
    assert FdBudget(1024, 10).available == 1024 - 10 - RESERVE
    assert FdBudget(50, 10).available == 0, "never negative"


def test_a_read_waits_until_a_whole_message_worth_of_fds_fits() -> None:
    budget = FdBudget(limit=1000, open_at_start=0, reserve=0)
    assert budget.may_read(in_flight=1000 - SCM_MAX_FD - 10, endpoints=10)
    assert not budget.may_read(in_flight=1000 - SCM_MAX_FD - 10, endpoints=11)


def test_with_nothing_in_flight_a_read_always_goes_ahead() -> None:
    budget = FdBudget(limit=96, open_at_start=30)
    assert not budget.may_read(in_flight=1, endpoints=2)
    assert budget.may_read(in_flight=0, endpoints=2), "else nothing would ever move"


def test_copies_for_the_recorder_leave_room_for_the_next_read() -> None:
    budget = FdBudget(limit=2000, open_at_start=0, reserve=0)
    assert budget.may_copy(in_flight=0, endpoints=0, count=2000 - SCM_MAX_FD)
    assert not budget.may_copy(in_flight=1, endpoints=0, count=2000 - SCM_MAX_FD)


def test_this_process_gets_its_hard_limit() -> None:
    budget = FdBudget.of_this_process()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == hard or hard == resource.RLIM_INFINITY
    assert budget.limit == soft or soft == resource.RLIM_INFINITY
    assert 0 < budget.available < budget.limit
