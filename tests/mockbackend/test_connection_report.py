"""The end-of-connection report: what counts as a failure, how it reads, its JSON form."""

from __future__ import annotations

from mockbackend.connection_report import MAX_VIOLATIONS, Report
from vhtrace.protocol.findings import Finding, Severity

ERROR = Finding(3, "SET_VRING_NUM", "ring-size", "num 3 is not a power of two")
WARNING = Finding(4, "REM_MEM_REG", "fd", "carries an fd", Severity.WARNING)


def test_a_clean_report_is_ok_and_says_how_the_connection_ended() -> None:
    report = Report(messages=12, closed_by="front-end")
    assert report.ok() and report.ok(fail_on_violations=True)
    assert report.render() == "mockbackend: 12 messages; connection front-end"
    assert Report().render() == "mockbackend: 0 messages; connection ended"


def test_violations_fail_only_when_asked_and_only_errors_count() -> None:
    report = Report()
    report.add_violation(WARNING)
    assert report.ok(fail_on_violations=True)
    report.add_violation(ERROR)
    assert report.errors_found == [ERROR]
    assert report.ok() and not report.ok(fail_on_violations=True)


def test_expectations_and_script_errors_always_fail() -> None:
    assert not Report(expectation_failures=["GET_FEATURES: expected 1, got 0"]).ok()
    assert not Report(script_errors=["s.py, line 3: ValueError"]).ok()
    assert Report(errors=["ring 0 broke"], unused_faults=["Drop on GET_STATUS"]).ok()


def test_violations_beyond_the_cap_are_counted_not_kept() -> None:
    report = Report()
    for _ in range(MAX_VIOLATIONS + 5):
        report.add_violation(ERROR)
    assert len(report.violations) == MAX_VIOLATIONS and report.violations_not_kept == 5
    assert "(5 more violations not kept)" in report.render()


def test_render_lists_each_section_with_its_count() -> None:
    report = Report(messages=2, expectation_failures=["a", "b"], errors=["c"])
    report.add_violation(ERROR)
    assert report.render().splitlines() == [
        "mockbackend: 2 messages; connection ended",
        "front-end violations (1):",
        f"  {ERROR}",
        "expectations not met (2):",
        "  a",
        "  b",
        "errors (1):",
        "  c",
    ]


def test_the_dict_form_has_every_field() -> None:
    report = Report(messages=1, own=[WARNING], closed_by="us")
    report.add_violation(ERROR)
    data = report.to_dict()
    assert data["violations"] == [ERROR.to_dict()] and data["own"] == [WARNING.to_dict()]
    assert (data["messages"], data["closed_by"], data["violations_not_kept"]) == (1, "us", 0)
    assert set(data) == {"messages", "violations", "own", "expectation_failures",
                         "unused_faults", "errors", "script_errors", "closed_by",
                         "violations_not_kept"}  # fmt: skip
