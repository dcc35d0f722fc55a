"""The fuzz report in words (the JSON form is ``FuzzReport.to_dict``)."""

from __future__ import annotations

from vhtrace.fuzz.campaign import FuzzReport
from vhtrace.fuzz.case import describe_case


def render_text(report: FuzzReport, *, verbose: bool = False) -> list[str]:
    rate = report.iterations / report.elapsed if report.elapsed else 0.0
    lines = [
        f"vhtrace fuzz: {report.trace} against {' '.join(report.backend)}",
        f"seed {report.seed}: {report.iterations} iterations in {report.elapsed:.1f} s "
        f"({rate:.0f}/s), back-end started {report.starts} time(s)"
        + (", interrupted" if report.interrupted else ""),
        f"unmutated trace: {report.baseline}",
        "outcomes: "
        + ", ".join(f"{kind} {count}" for kind, count in sorted(report.kinds.items()) if count)
        + f" ({len(report.outcomes)} distinct)",
    ]
    if not report.findings:
        lines.append("result: nothing found, exit 0")
        return lines
    lines.append(f"findings: {len(report.findings)} distinct")
    for number, finding in enumerate(report.findings, 1):
        verdict = finding.verdict
        lines.append(
            f"  {number}. {verdict.kind}: {verdict.detail} "
            f"(iteration {finding.iteration}, seen {finding.count} time(s))"
        )
        lines.append(f"     signature: {verdict.signature}")
        for mutation in finding.case.mutations:
            lines.append(f"     mutation: {mutation}")
        if finding.reproduced is not None:
            again = "yes" if finding.reproduced else "no (depends on earlier iterations?)"
            lines.append(f"     reproduced on a fresh back-end: {again}")
        if finding.reproducer:
            lines.append(f"     reproducer: {finding.reproducer} ({finding.case.count()} messages)")
        if finding.minimized is not None:
            where = finding.minimized_reproducer or "(not saved)"
            lines.append(
                f"     minimized: {where} ({finding.minimized.count()} messages, "
                f"{finding.minimize_tests} tests)"
            )
            if verbose:
                lines += ["       " + line for line in describe_case(finding.minimized)]
    lines.append(f"result: {len(report.findings)} finding(s), exit 1")
    return lines
