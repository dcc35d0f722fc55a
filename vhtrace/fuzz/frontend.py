"""The other direction: serve mutated replies to a real front-end it starts (QEMU).

``vhtrace fuzz TRACE --frontend-cmd 'qemu-system-x86_64 ... path={sock} ...'``: each
iteration mutates the recorded back-end's replies of the trace's first session (field,
header and fd mutations, ``mutate``), writes them as a trace, serves that trace with the
replay's :func:`~vhtrace.replay.backend.serve_backend` (requests the trace does not have
get a plausible answer: ``--unknown ack``, matching ``--loose``) on ``{sock}``, and
starts the front-end, which connects there. The front-end parses every reply at device
realize (GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_MAX_MEM_SLOTS,
GET_CONFIG...). Oracles: it died by a signal (crash) or wrote panic/assertion text
(panic); it exited with a status (it refused the device: correct behaviour); it is still
running after ``wait`` seconds (``ok``: then the fuzzer kills it, its own process). The
reproducer is the served trace: ``vhtrace replay REPRO --serve SOCK`` serves it again.

Not done: minimization, hangs, and the messages of ring setup with a guest (the front-end
is only taken through device realize).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vhtrace.fuzz.case import Case, Message, Template
from vhtrace.fuzz.mutate import iteration_rng, mutate
from vhtrace.fuzz.oracle import Run, SessionRun, Verdict, judge
from vhtrace.fuzz.target import Target
from vhtrace.protocol.conversation import Role
from vhtrace.protocol.spec import Channel, Side
from vhtrace.replay import ReplayOptions, serve_backend
from vhtrace.replay.options import ReplayInputError, load
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import EventRecord, MessageRecord
from vhtrace.trace.writer import TraceWriter

FAMILIES = ("field", "header", "fd")


@dataclass
class FrontendFinding:
    verdict: Verdict
    iteration: int
    mutations: tuple[str, ...]
    reproducer: Path | None = None
    count: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.verdict.kind,
            "signature": self.verdict.signature,
            "detail": self.verdict.detail,
            "iteration": self.iteration,
            "count": self.count,
            "mutations": list(self.mutations),
            "reproducer": str(self.reproducer) if self.reproducer else None,
        }


@dataclass
class FrontendReport:
    trace: str
    frontend: list[str]
    seed: int
    iterations: int = 0
    elapsed: float = 0.0
    kinds: Counter[str] = field(default_factory=Counter)
    findings: list[FrontendFinding] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace": self.trace,
            "frontend": self.frontend,
            "seed": self.seed,
            "iterations": self.iterations,
            "elapsed": round(self.elapsed, 3),
            "outcomes": dict(self.kinds),
            "findings": [f.to_dict() for f in self.findings],
            "result": "found" if self.found else "nothing found",
        }


def reply_template(trace: str | Path) -> Template:
    """The recorded back-end's replies on the main channel of the first session."""
    loaded = load(trace, Side.BACKEND, ReplayOptions(timeout=None))
    plan = loaded.plans[0]
    replies = tuple(
        Message(
            step.raw,
            tuple(step.fds),
            step.view.layout,
            step.view.context,
            step.seq,
            step.view.fields,
        )
        for step in plan.steps
        if step.ours and step.channel is Channel.MAIN and step.view.role == Role.REPLY
    )
    return Template(Case((replies,)), plan.steps[0].view.context.device)


def write_served(source: str | Path, case: Case, path: Path, info: dict[str, Any]) -> Path:
    """The source trace's first session with the case's replies in place of the recorded."""
    replaced = {m.origin: m for m in case.messages if m.origin is not None}
    with TraceReader(source) as reader:
        header = {**reader.header, "fuzz": info}
        writer = TraceWriter(str(path), header)
        session = None
        for record in reader:
            if isinstance(record, MessageRecord):
                session = session or record.session
                if record.session != session:
                    break
                message = replaced.get(record.seq)
                if message is not None:
                    record = record._replace(raw=message.raw, fds=message.fds)
                writer.message(*record)
            elif isinstance(record, EventRecord) and record.session in (session, None, 1):
                writer.event(*record)
    writer.close()
    return path


class FrontendCampaign:
    """Fuzz a front-end program with mutated back-end replies."""

    def __init__(
        self,
        trace: str | Path,
        argv: list[str],
        *,
        seed: int = 0,
        iterations: int | None = 100,
        time_limit: float | None = None,
        wait: float = 2.0,
        out: Path | None = None,
        progress: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.trace = str(trace)
        try:
            self.template = reply_template(trace)
        except (ReplayInputError, IndexError) as exc:
            raise ReplayInputError(f"{trace}: no back-end replies to mutate ({exc})") from None
        self.program = Target(argv)
        self.seed, self.iterations, self.time_limit = seed, iterations, time_limit
        self.wait, self.out, self.progress = wait, out, progress
        self.stop = stop or threading.Event()
        self.report = FrontendReport(self.trace, self.program.argv, seed)
        self._by_signature: dict[str, FrontendFinding] = {}

    def run(self) -> FrontendReport:
        start = time.monotonic()
        i = 0
        try:
            while not self._done(i, start):
                self._iteration(i)
                i += 1
                self.report.iterations = i
                self.report.elapsed = time.monotonic() - start
                if self.progress is not None:
                    self.progress(f"vhtrace fuzz: {i} iterations, {dict(self.report.kinds)}")
        finally:
            self.program.close()
        return self.report

    def _done(self, i: int, start: float) -> bool:
        if self.stop.is_set() or (self.iterations is not None and i >= self.iterations):
            return True
        return self.time_limit is not None and time.monotonic() - start >= self.time_limit

    def _iteration(self, i: int) -> None:
        case = mutate(iteration_rng(self.seed, i), self.template, FAMILIES)
        served = self.program.dir / "served.vht"
        info = {"source": self.trace, "seed": self.seed, "iteration": i,
                "mutations": list(case.mutations)}  # fmt: skip
        write_served(self.trace, case, served, info)
        done = threading.Event()
        options = ReplayOptions(timeout=self.wait, loose=True, unknown="ack", close_timeout=0.5)
        ready = threading.Event()
        server = threading.Thread(
            target=serve_backend,
            args=(served, self.program.socket, options),
            kwargs={"stop": done, "on_ready": lambda _: ready.set()},
            daemon=True,
        )
        server.start()
        ready.wait(5)
        self.program.launch()
        status = self.program.exit_status(self.wait)
        output = self.program.new_output()
        if status is None:
            self.program.stop(grace=0.5)  # survived realize: ours to stop
        done.set()
        server.join(10)
        run = Run([SessionRun("done" if status is None else "closed", "realize")], status, output)
        verdict = judge(run)
        if status is not None and status > 0 and verdict.kind == "exit":
            verdict = Verdict("exit", verdict.signature, f"refused the device (status {status})")
        self.report.kinds[verdict.kind] += 1
        if not verdict.finding:
            return
        known = self._by_signature.get(verdict.signature)
        if known is not None:
            known.count += 1
            return
        finding = FrontendFinding(verdict, i, case.mutations)
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True, mode=0o700)
            number = len(self.report.findings) + 1
            finding.reproducer = self.out / f"frontend-{verdict.kind}-{number}.vht"
            served.replace(finding.reproducer)
        self._by_signature[verdict.signature] = finding
        self.report.findings.append(finding)
