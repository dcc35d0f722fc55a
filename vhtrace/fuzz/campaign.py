"""The fuzzing loop: mutate, run, judge, keep what was found; then minimize and save.

Iteration *i* of seed *S* always sends the same case (``mutate.iteration_rng``), so a
finding is named by its seed and iteration. The back-end is started once and restarted
only when it died or hung; a death noticed only at the next iteration (the program
exited after the connection closed) is put down to the iteration before. Findings are
deduplicated by signature; the first case of each signature is confirmed against a
fresh back-end, minimized (``minimize``) and saved as reproducer traces (``repro``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vhtrace.fuzz.case import Case, Template, describe_case, template
from vhtrace.fuzz.driver import DriveOptions, Transcript, run_case
from vhtrace.fuzz.minimize import minimize
from vhtrace.fuzz.mutate import FAMILIES, iteration_rng, mutate
from vhtrace.fuzz.oracle import Run, Verdict, judge
from vhtrace.fuzz.repro import write_reproducer
from vhtrace.fuzz.target import Target
from vhtrace.protocol.spec import Side
from vhtrace.replay.memsource import MemorySource, SnapshotSource
from vhtrace.replay.options import ReplayInputError, ReplayOptions, load

PANIC_GRACE = 0.5
"""After panic text: how long to wait for the program to die of it (then: a crash)."""


CONFIRM_TRIES = 2
"""Runs on a fresh back-end that may confirm a finding (a crash can depend on timing)."""
OTHER_CASES = 3
"""Later cases of a signature kept, to confirm with when the first one does not."""


class FuzzInputError(Exception):
    """The trace or the options cannot be fuzzed with (exit code 2)."""


@dataclass(frozen=True)
class FuzzOptions:
    iterations: int | None = 1000
    time_limit: float | None = None
    seed: int = 0
    start: int = 0
    """The first iteration run: ``--start 6921 --iterations 1`` runs iteration 6921 of the
    seed alone, as the campaign that found something ran it."""
    timeout: float = 2.0
    """How long an owed reply may take before it is a hang."""
    families: tuple[str, ...] | None = None
    minimize: bool = True
    minimize_tests: int = 150
    out: Path | None = None
    """Where reproducers go (None: not written)."""
    sessions: tuple[int, ...] | None = None
    probe: bool = True
    """Check after each case that the back-end still answers (see ``driver.probe``)."""
    confirm: bool = True
    """After the loop, confirm each finding on a fresh back-end, minimize it, save it."""


@dataclass
class Finding:
    verdict: Verdict
    iteration: int
    case: Case
    transcript: Transcript
    count: int = 1
    reproduced: bool | None = None
    """Seen again on a fresh back-end (None: not checked)."""
    minimized: Case | None = None
    minimize_tests: int = 0
    reproducer: Path | None = None
    minimized_reproducer: Path | None = None
    others: list[tuple[int, Case]] = field(default_factory=list)
    """Later cases with the same signature: tried when the first does not reproduce."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.verdict.kind,
            "signature": self.verdict.signature,
            "detail": self.verdict.detail,
            "iteration": self.iteration,
            "count": self.count,
            "mutations": list(self.case.mutations),
            "messages": self.case.count(),
            "reproduced": self.reproduced,
            "reproducer": str(self.reproducer) if self.reproducer else None,
        }
        if self.minimized is not None:
            out["minimized"] = {
                "messages": self.minimized.count(),
                "mutations": list(self.minimized.mutations),
                "case": describe_case(self.minimized),
                "tests": self.minimize_tests,
                "reproducer": str(self.minimized_reproducer) if self.minimized_reproducer else None,
            }
        return out


@dataclass
class Progress:
    iterations: int = 0
    elapsed: float = 0.0
    crashes: int = 0
    hangs: int = 0
    findings: int = 0
    outcomes: int = 0
    """Distinct outcome signatures seen."""
    restarts: int = 0

    @property
    def rate(self) -> float:
        return self.iterations / self.elapsed if self.elapsed > 0 else 0.0

    def line(self) -> str:
        return (
            f"vhtrace fuzz: {self.iterations} iterations, {self.rate:.0f}/s, "
            f"{self.crashes} crashes, {self.hangs} hangs, {self.findings} distinct findings, "
            f"{self.outcomes} distinct outcomes, {self.restarts} restarts"
        )


@dataclass
class FuzzReport:
    trace: str
    backend: list[str]
    seed: int
    iterations: int = 0
    elapsed: float = 0.0
    starts: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    interrupted: bool = False
    baseline: str = ""
    """What the unmutated trace got (it should be ``ok``)."""

    @property
    def found(self) -> bool:
        return bool(self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace": self.trace,
            "backend": self.backend,
            "seed": self.seed,
            "iterations": self.iterations,
            "elapsed": round(self.elapsed, 3),
            "rate": round(self.iterations / self.elapsed, 1) if self.elapsed else 0.0,
            "backend_starts": self.starts,
            "baseline": self.baseline,
            "outcomes": dict(self.kinds),
            "distinct_outcomes": len(self.outcomes),
            "findings": [f.to_dict() for f in self.findings],
            "interrupted": self.interrupted,
            "result": "found" if self.found else "nothing found",
        }


def load_template(trace: str | os.PathLike[str], sessions: tuple[int, ...] | None) -> Template:
    try:
        loaded = load(trace, Side.FRONTEND, ReplayOptions(sessions=sessions))
    except ReplayInputError as exc:
        raise FuzzInputError(str(exc)) from None
    found = template(loaded.plans)
    if not found.case.count():
        raise FuzzInputError(f"{trace}: no front-end message to fuzz with")
    return found


class Campaign:
    """One fuzzing run of a trace against a back-end command."""

    def __init__(
        self,
        trace: str | os.PathLike[str],
        target: Target,
        options: FuzzOptions,
        *,
        progress: Callable[[Progress], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        if options.families:
            unknown = set(options.families) - set(FAMILIES)
            if unknown:
                raise FuzzInputError(
                    f"--mutate {','.join(sorted(unknown))}: one of {', '.join(FAMILIES)}"
                )
        self.trace = str(trace)
        self.template = load_template(trace, options.sessions)
        self.memory: MemorySource = SnapshotSource.of_trace(trace)
        self.target = target
        self.options = options
        self.drive = DriveOptions(timeout=options.timeout, probe=options.probe)
        self.progress_cb = progress
        self.stop = stop or threading.Event()
        self.report = FuzzReport(self.trace, target.argv, options.seed)
        self.by_signature: dict[str, Finding] = {}
        self.stats = Progress()

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> FuzzReport:
        start = time.monotonic()
        last_shown = 0.0
        try:
            self.target.start()
            self.report.baseline = self._baseline()
            previous: tuple[int, Case, Run, Transcript, Verdict] | None = None
            i = self.options.start
            while not self._done(i, start):
                if not self.target.alive():
                    self._died_between(previous)
                    previous = None
                    self.target.ensure_running()
                case = mutate(
                    iteration_rng(self.options.seed, i), self.template, self.options.families
                )
                transcript = Transcript()
                run = run_case(self.target, case, self.memory, self.drive, transcript)
                verdict = self._judge(run)
                self._count(i, case, run, transcript, verdict)
                if verdict.kind in ("hang", "crash", "panic") and self.target.alive():
                    self.target.restart()  # a hung program is ours to kill
                previous = (i, case, run, transcript, verdict)
                i += 1
                now = time.monotonic()
                self.stats.elapsed = now - start
                if self.progress_cb is not None and now - last_shown >= 0.5:
                    last_shown = now
                    self.progress_cb(self.stats)
            if previous is not None and self.target.exit_status(0.05) is not None:
                self._died_between(previous)
            self.report.iterations = i - self.options.start
            self.report.elapsed = time.monotonic() - start
            self.stats.elapsed = self.report.elapsed
            if self.progress_cb is not None:
                self.progress_cb(self.stats)
            self.report.interrupted = self.stop.is_set()
            for finding in self.report.findings if self.options.confirm else ():
                self._settle(finding)
        finally:
            self.report.starts = self.target.starts
            if self.report.findings and self.options.out is not None:
                self._keep_log()
            self.target.close()
        return self.report

    def _done(self, i: int, start: float) -> bool:
        if self.stop.is_set():
            return True
        done = i - self.options.start
        if self.options.iterations is not None and done >= self.options.iterations:
            return True
        limit = self.options.time_limit
        return limit is not None and time.monotonic() - start >= limit

    def _baseline(self) -> str:
        run = run_case(self.target, self.template.case, self.memory, self.drive)
        verdict = judge(run)
        if not self.target.alive():
            self.target.ensure_running()
        return f"{verdict.kind}: {verdict.detail}"

    def _judge(self, run: Run) -> Verdict:
        verdict = judge(run)
        if verdict.kind == "panic" and run.exit_status is None:
            run.exit_status = self.target.exit_status(PANIC_GRACE)
            run.output += self.target.new_output()
            verdict = judge(run)
        return verdict

    def _died_between(self, previous: tuple[int, Case, Run, Transcript, Verdict] | None) -> None:
        """The program died after the last run was judged: that run's doing."""
        if previous is None:
            return
        i, case, run, transcript, old = previous
        if old.kind in ("crash", "hang"):
            return
        run.exit_status = self.target.exit_status(0.5)
        run.output += self.target.new_output()
        verdict = judge(run)
        if verdict.kind != old.kind:
            self.report.kinds[old.kind] -= 1
            self._count(i, case, run, transcript, verdict, again=True)

    def _count(self, i: int, case: Case, run: Run, transcript: Transcript, verdict: Verdict,
               again: bool = False) -> None:  # fmt: skip
        if not again:
            self.stats.iterations += 1
        self.report.kinds[verdict.kind] += 1
        self.report.outcomes[verdict.signature] += 1
        self.stats.outcomes = len(self.report.outcomes)
        self.stats.restarts = max(0, self.target.starts - 1)
        if not verdict.finding:
            return
        self.stats.crashes += verdict.kind == "crash"
        self.stats.hangs += verdict.kind == "hang"
        known = self.by_signature.get(verdict.signature)
        if known is not None:
            known.count += 1
            if len(known.others) < OTHER_CASES:
                known.others.append((i, case))
            return
        finding = Finding(verdict, i, case, transcript)
        self.by_signature[verdict.signature] = finding
        self.report.findings.append(finding)
        self.stats.findings = len(self.report.findings)

    # -- after the loop: confirm, minimize, save -----------------------------------------

    def fresh_run(self, case: Case, transcript: Transcript | None = None) -> Verdict:
        """``case`` against a freshly started back-end."""
        self.target.restart()
        run = run_case(self.target, case, self.memory, self.drive, transcript)
        verdict = self._judge(run)
        if verdict.kind in ("ok", "disconnect") and self.target.exit_status(0.05) is not None:
            run.exit_status = self.target.exit_status()
            run.output += self.target.new_output()
            verdict = judge(run)
        return verdict

    def _settle(self, finding: Finding) -> None:
        signature = finding.verdict.signature
        out = self.options.out
        info = self._info(finding)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True, mode=0o700)
            number = self.report.findings.index(finding) + 1
            path = out / f"{finding.verdict.kind}-{number}.vht"
            finding.reproducer = write_reproducer(
                path, finding.transcript, device=self._device(), info=info
            )
        if self.stop.is_set():
            return
        finding.reproduced = False
        for iteration, case in [(finding.iteration, finding.case), *finding.others]:
            for _ in range(CONFIRM_TRIES):
                transcript = Transcript()
                if self.fresh_run(case, transcript).signature == signature:
                    finding.reproduced = True
                    break
            if finding.reproduced:
                if case is not finding.case:  # a later case of the signature: the one kept
                    finding.iteration, finding.case = iteration, case
                    if finding.reproducer is not None:
                        info = self._info(finding)
                        write_reproducer(finding.reproducer, transcript, device=self._device(),
                                         info=info)  # fmt: skip
                break
        if not finding.reproduced or not self.options.minimize:
            return
        last: list[tuple[Case, Transcript]] = []

        def still_fails(case: Case) -> bool:
            transcript = Transcript()
            if self.stop.is_set() or self.fresh_run(case, transcript).signature != signature:
                return False
            last[:] = [(case, transcript)]
            return True

        smallest, tests = minimize(finding.case, still_fails, self.options.minimize_tests)
        finding.minimized, finding.minimize_tests = smallest, tests
        if not last or last[0][0].sessions != smallest.sessions:
            still_fails(smallest)  # the transcript of the smallest case itself
        if out is not None and last and last[0][0].sessions == smallest.sessions:
            number = self.report.findings.index(finding) + 1
            path = out / f"{finding.verdict.kind}-{number}.min.vht"
            info = {**info, "mutations": list(smallest.mutations), "minimized": True}
            finding.minimized_reproducer = write_reproducer(
                path, last[0][1], device=self._device(), info=info
            )

    def _keep_log(self) -> None:
        """The back-end's output of the whole run, next to the reproducers."""
        self.options.out.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(OSError):
            shutil.copyfile(self.target.log_path, self.options.out / "backend.log")

    def _device(self) -> str | None:
        device = self.template.device
        return device.value if device is not None else None

    def _info(self, finding: Finding) -> dict[str, Any]:
        return {
            "source": self.trace,
            "backend": " ".join(self.target.template),
            "seed": self.options.seed,
            "iteration": finding.iteration,
            "signature": finding.verdict.signature,
            "detail": finding.verdict.detail,
            "mutations": list(finding.case.mutations),
        }
