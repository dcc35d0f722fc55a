"""A replay's result for CI systems: JSON, and JUnit XML (one test case per check).

JUnit: one ``testsuite`` per replayed session; one ``testcase`` per recorded message of
the peer that was compared (``#2 GET_FEATURES reply``), per live message the trace does
not have, and for the end of the session. A divergence is a ``failure`` whose text is
the divergence report; messages never reached are ``skipped``; differences the rules
excused go to ``system-out`` so a reviewer sees what was not compared.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

from vhtrace.replay.report import ReplayResult, Status


def to_json(result: ReplayResult) -> str:
    return json.dumps(result.to_dict(), indent=2, default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    return str(value)


def to_junit(result: ReplayResult) -> str:
    """The result as a JUnit XML document (what GitLab, Jenkins, GitHub actions read)."""
    suites = ET.Element("testsuites", name=f"vhtrace replay {result.trace}")
    if result.error is not None:
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=f"replay {result.trace}",
            tests="1",
            failures="0",
            errors="1",
            skipped="0",
        )
        case = ET.SubElement(suite, "testcase", name="replay", classname="vhtrace.replay")
        ET.SubElement(case, "error", message=result.error).text = result.error
    for session in result.sessions:
        checks = session.checks
        failures = sum(1 for c in checks if c.status is Status.DIVERGED)
        skipped = sum(1 for c in checks if c.status is Status.NOT_REACHED)
        stray = [d for d in session.divergences if not any(c.divergence is d for c in checks)]
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=f"{result.trace} session {session.session} (as {result.play})",
            tests=str(len(checks) + len(stray)),
            failures=str(failures + len(stray)),
            errors="0",
            skipped=str(skipped),
            time=f"{session.elapsed:.6f}",
        )
        classname = f"vhtrace.replay.session{session.session}"
        for check in checks:
            case = ET.SubElement(suite, "testcase", name=check.label, classname=classname)
            if check.status is Status.DIVERGED and check.divergence is not None:
                lines = check.divergence.lines()
                ET.SubElement(
                    case, "failure", message=lines[0], type=str(check.divergence.kind)
                ).text = "\n".join(lines)
            elif check.status is Status.DIVERGED:
                ET.SubElement(case, "failure", message=check.note or "diverged")
            elif check.status is Status.NOT_REACHED:
                ET.SubElement(case, "skipped", message="not reached: the replay stopped before")
            out = [check.note] if check.note else []
            out += [
                f"ignored {d.field}: recorded {d.recorded}, live {d.live} ({d.ignored})"
                for d in check.ignored
            ]
            if out:
                ET.SubElement(case, "system-out").text = "\n".join(out)
        for divergence in stray:
            case = ET.SubElement(suite, "testcase", name=divergence.where, classname=classname)
            lines = divergence.lines()
            ET.SubElement(
                case, "failure", message=lines[0], type=str(divergence.kind)
            ).text = "\n".join(lines)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
