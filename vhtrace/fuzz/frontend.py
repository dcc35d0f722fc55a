"""The other direction: serve mutated back-end messages to a real front-end it starts (QEMU).

``vhtrace fuzz TRACE --frontend-cmd 'qemu-system-x86_64 ... path={sock} ...'``: each
iteration mutates the recorded back-end's side of the trace's first session (replies:
field, header, fd mutations, dropped or duplicated; back-end-channel requests inserted:
CONFIG_CHANGE_MSG, VRING_HOST_NOTIFIER_MSG, IOTLB_MSG, see ``backchannel``), writes it as a
trace (``served``), serves it with the replay's :func:`~vhtrace.replay.backend.serve_backend`
on ``{sock}`` (``--loose`` matching, ``--unknown ack``, going on past a difference), and
starts the front-end, which connects there.

Two modes. Realize only (a paused QEMU, ``-S``): the replies of device realize are parsed
and the front-end is left running ``wait`` seconds. Guest (the command has ``{qmp}``, where
the fuzzer puts a QMP socket; ``vhtrace.lab.qemu.firmware_guest_command``): the VM runs its
firmware, whose virtio-blk driver brings the device up (memory table, ring setup, a kick),
then the fuzzer stops the VM (GET_VRING_BASE), resumes it (the rings start again from the
base we replied) and stops it again over QMP, and asks its status.

Oracles: it died by a signal (crash) or wrote panic/assertion text (panic); its QMP monitor
gave no answer within ``timeout`` while it stayed alive (hang: it blocks on a reply, or
spins); it exited with a status (it refused the device: correct); else ``ok`` (the fuzzer
stops it, its own process). The reproducer is the served trace (``vhtrace replay REPRO
--serve SOCK`` serves it again), and a minimized one: delta debugging over the mutated and
inserted messages (each put back as recorded, or left out), then the served session cut
after the last message still needed, keeping the signature.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vhtrace.fuzz.backchannel import SERVED_FAMILIES, SERVED_WEIGHTS
from vhtrace.fuzz.case import Case, Message, Region, Template
from vhtrace.fuzz.minimize import Budget, ddmin
from vhtrace.fuzz.mutate import iteration_rng, mutate
from vhtrace.fuzz.oracle import Run, SessionRun, Verdict, judge
from vhtrace.fuzz.served import write_served
from vhtrace.fuzz.target import Target
from vhtrace.lab.qmp import QmpClient, QmpError, QmpTimeout
from vhtrace.protocol import payloads
from vhtrace.protocol.conversation import Role
from vhtrace.protocol.spec import Channel, Side
from vhtrace.replay import ReplayOptions, serve_backend
from vhtrace.replay.options import ReplayInputError, load
from vhtrace.replay.report import ReplayResult, Status

FAMILIES = tuple(SERVED_FAMILIES)
QMP = "{qmp}"
MINIMIZE_TESTS = 40
"""Runs spent minimizing one finding by default: each starts a front-end (about a second)."""
GUEST_STEPS = ("stop", "cont", "stop", "query-status")
"""What the fuzzer asks a guest-mode front-end's monitor: stop the VM (the rings stop:
GET_VRING_BASE), resume it (they start again from our base), stop it, its status."""


@dataclass
class Minimized:
    case: Case
    mutations: tuple[str, ...]
    messages: int
    tests: int
    reproducer: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "mutations": list(self.mutations),
            "messages": self.messages,
            "tests": self.tests,
            "reproducer": str(self.reproducer) if self.reproducer else None,
        }


@dataclass
class FrontendFinding:
    verdict: Verdict
    iteration: int
    mutations: tuple[str, ...]
    reproducer: Path | None = None
    count: int = 1
    reproduced: bool | None = None
    minimized: Minimized | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.verdict.kind,
            "signature": self.verdict.signature,
            "detail": self.verdict.detail,
            "iteration": self.iteration,
            "count": self.count,
            "mutations": list(self.mutations),
            "reproducer": str(self.reproducer) if self.reproducer else None,
            "reproduced": self.reproduced,
            "minimized": self.minimized.to_dict() if self.minimized else None,
        }


@dataclass
class FrontendReport:
    trace: str
    frontend: list[str]
    seed: int
    mode: str = "realize"
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
            "mode": self.mode,
            "iterations": self.iterations,
            "elapsed": round(self.elapsed, 3),
            "rate": round(self.iterations / self.elapsed, 2) if self.elapsed else 0.0,
            "outcomes": dict(self.kinds),
            "findings": [f.to_dict() for f in self.findings],
            "result": "found" if self.found else "nothing found",
        }


def reply_template(trace: str | Path) -> Template:
    """The recorded back-end's replies on the main channel of the first session, and what
    the served-side mutators aim with (the front-end's messages, regions, queue count)."""
    loaded = load(trace, Side.BACKEND, ReplayOptions(timeout=None))
    plan = loaded.plans[0]
    replies, requests, regions = [], [], []
    queue_num = 1
    for step in plan.steps:
        v = step.view
        if v.channel is not Channel.MAIN:
            continue
        if not step.ours:
            requests.append((step.seq, v.name))
            if v.fields and v.name in ("ADD_MEM_REG", "SET_MEM_TABLE"):
                for r in v.fields.get("regions", [v.fields]):
                    regions.append(Region(*(int(r[k]) for k in payloads.REGION_FIELDS)))
        elif v.role == Role.REPLY:
            if v.name == "GET_QUEUE_NUM" and v.fields:
                queue_num = max(1, int(v.fields.get("value", 1)))
            replies.append(Message(step.raw, tuple(step.fds), v.layout, v.context, step.seq,
                                   v.fields))  # fmt: skip
    return Template(
        Case((tuple(replies),)), plan.steps[0].view.context.device, tuple(regions), queue_num,
        requests=tuple(requests),
    )  # fmt: skip


@dataclass(frozen=True)
class Edit:
    """One difference between a served case and the recording: what minimization drops."""

    kind: str
    """``changed`` (a reply mutated), ``dropped`` (a reply left out), ``inserted`` (a
    duplicate, or a back-end-channel request)."""
    origin: int | None
    """The recorded reply it is about (inserted: the one it comes after; None: first)."""
    message: Message | None = None

    def describe(self, template: Template) -> str:
        if self.message is not None and self.message.channel is Channel.BACKEND:
            return f"backend: {self.message.describe()}"
        if self.message is not None and not self.message.mutation:
            return f"sequence: duplicated {self.message.describe()}"
        if self.message is not None:
            return self.message.describe()
        reply = next(m for m in template.case.messages if m.origin == self.origin)
        return f"sequence: dropped {reply.describe()}"


def edits(case: Case, template: Template) -> list[Edit]:
    """What the case does to the template's replies, one edit each."""
    recorded = {m.origin for m in template.case.messages}
    seen: set[int] = set()
    out: list[Edit] = []
    last: int | None = None
    for message in case.messages:
        if message.origin in recorded and message.origin not in seen:
            assert message.origin is not None
            seen.add(message.origin)
            last = message.origin
            if message.mutation:
                out.append(Edit("changed", message.origin, message))
        else:
            out.append(Edit("inserted", last, message))
    for reply in template.case.messages:
        if reply.origin not in seen:
            out.append(Edit("dropped", reply.origin))
    return out


def apply(template: Template, chosen: list[Edit]) -> Case:
    """The template's replies with only the ``chosen`` edits made."""
    changed = {e.origin: e.message for e in chosen if e.kind == "changed"}
    dropped = {e.origin for e in chosen if e.kind == "dropped"}
    inserted: dict[int | None, list[Message]] = {}
    for e in chosen:
        if e.kind == "inserted" and e.message is not None:
            inserted.setdefault(e.origin, []).append(e.message)
    messages = list(inserted.get(None, []))
    for reply in template.case.messages:
        if reply.origin not in dropped:
            messages.append(changed.get(reply.origin) or reply)
        messages += inserted.get(reply.origin, [])
    return Case((tuple(messages),), tuple(e.describe(template) for e in chosen))


def kept_edits(found: list[Edit], kept: list[Any]) -> list[Edit]:
    return [found[k] for k, _ in kept]


class FrontendCampaign:
    """Fuzz a front-end program with mutated back-end messages."""

    def __init__(
        self,
        trace: str | Path,
        argv: list[str],
        *,
        seed: int = 0,
        start: int = 0,
        iterations: int | None = 100,
        time_limit: float | None = None,
        wait: float = 2.0,
        timeout: float = 2.0,
        families: tuple[str, ...] | None = None,
        out: Path | None = None,
        minimize: bool = True,
        minimize_tests: int = MINIMIZE_TESTS,
        progress: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.trace = str(trace)
        try:
            self.template = reply_template(trace)
        except (ReplayInputError, IndexError) as exc:
            raise ReplayInputError(f"{trace}: no back-end replies to mutate ({exc})") from None
        unknown = set(families or ()) - set(FAMILIES)
        if unknown:
            raise ReplayInputError(
                f"--mutate: {', '.join(sorted(unknown))}: the front-end direction's families "
                f"are {', '.join(FAMILIES)}"
            )
        self.program = Target(argv)
        self.guest = any(QMP in arg for arg in argv)
        self.qmp = self.program.dir / "qmp.sock"
        self.program.argv = [arg.replace(QMP, str(self.qmp)) for arg in self.program.argv]
        self.families = families or FAMILIES
        self.seed, self.iterations, self.time_limit = seed, iterations, time_limit
        self.first = start
        self.wait, self.timeout, self.out, self.progress = wait, timeout, out, progress
        self.minimize, self.minimize_tests = minimize, minimize_tests
        self.stop = stop or threading.Event()
        self.report = FrontendReport(self.trace, self.program.argv, seed,
                                     "guest" if self.guest else "realize")  # fmt: skip
        self._by_signature: dict[str, FrontendFinding] = {}
        self.served: ReplayResult | None = None
        """How the last run's serving went (what the front-end asked, what matched)."""
        self._replaced = frozenset(m.origin for m in self.template.case.messages
                                   if m.origin is not None)  # fmt: skip

    def run(self) -> FrontendReport:
        start = time.monotonic()
        i = self.first
        try:
            while not self._done(i - self.first, start):
                self._iteration(i)
                i += 1
                self.report.iterations = done = i - self.first
                self.report.elapsed = time.monotonic() - start
                if self.progress is not None:
                    rate = done / max(self.report.elapsed, 1e-9)
                    self.progress(
                        f"vhtrace fuzz: {done} iterations, {rate:.2f}/s, {dict(self.report.kinds)}"
                    )
        finally:
            self.program.close()
        return self.report

    def _done(self, i: int, start: float) -> bool:
        if self.stop.is_set() or (self.iterations is not None and i >= self.iterations):
            return True
        return self.time_limit is not None and time.monotonic() - start >= self.time_limit

    def _info(self, i: int, case: Case) -> dict[str, Any]:
        return {"source": self.trace, "frontend": self.program.argv, "seed": self.seed,
                "iteration": i, "mutations": list(case.mutations)}  # fmt: skip

    def _iteration(self, i: int) -> None:
        case = mutate(iteration_rng(self.seed, i), self.template, self.families,
                      SERVED_FAMILIES, SERVED_WEIGHTS)  # fmt: skip
        served = self.program.dir / "served.vht"
        write_served(self.trace, case, served, self._info(i, case), self._replaced)
        verdict = self.serve(served)
        self.report.kinds[verdict.kind] += 1
        if not verdict.finding:
            return
        known = self._by_signature.get(verdict.signature)
        if known is not None:
            known.count += 1
            return
        finding = FrontendFinding(verdict, i, case.mutations)
        self._by_signature[verdict.signature] = finding
        self.report.findings.append(finding)
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True, mode=0o700)
        number = len(self.report.findings)
        finding.reproducer = self.out / f"frontend-{verdict.kind}-{number}.vht"
        served.replace(finding.reproducer)
        finding.reproduced = self.serve(finding.reproducer).signature == verdict.signature
        if self.minimize and finding.reproduced:
            finding.minimized = self._minimize(case, verdict, i)
            path = self.out / f"frontend-{verdict.kind}-{number}.min.vht"
            info = {**self._info(i, finding.minimized.case), "signature": verdict.signature}
            write_served(self.trace, finding.minimized.case, path, info, self._replaced)
            finding.minimized.reproducer = path

    # -- one run ----------------------------------------------------------------------------

    def serve(self, served: Path) -> Verdict:
        """Serve ``served`` to a newly started front-end; what it did."""
        done = threading.Event()
        options = ReplayOptions(timeout=None, loose=True, unknown="ack", close_timeout=0.5,
                                keep_going=True)  # fmt: skip
        ready = threading.Event()
        results: list[ReplayResult] = []
        server = threading.Thread(
            target=lambda: results.append(serve_backend(
                served, self.program.socket, options, stop=done, on_ready=lambda _: ready.set()
            )),
            daemon=True,
        )  # fmt: skip
        server.start()
        ready.wait(5)
        with contextlib.suppress(FileNotFoundError):
            self.qmp.unlink()
        self.program.launch()
        hang = self._drive() if self.guest else None
        status = self.program.exit_status(0.2 if self.guest else self.wait)
        output = self.program.new_output()
        if status is None:
            self.program.stop(grace=0.5)  # survived: ours to stop
        done.set()
        server.join(10)
        self.served = results[0] if results else None
        ending = "hang" if hang else "done" if status is None else "closed"
        run = Run([SessionRun(ending, "realize", waited_for=hang)], status, output)
        verdict = judge(run)
        if verdict.kind == "hang":
            why = self._waiting()
            detail = f"QEMU's monitor did not answer ({hang}) within {self.timeout:g} s, {why}"
            verdict = Verdict("hang", f"hang {hang}: {why}", detail)
        if status is not None and status > 0 and verdict.kind == "exit":
            verdict = Verdict("exit", verdict.signature, f"refused the device (status {status})")
        return verdict

    def _waiting(self) -> str:
        """What a hung front-end waits for: the reply the served back-end owed it and never
        sent (a reply withheld: QEMU waits for ever by design), or nothing owed after the
        last message the serving saw (a hang of its own)."""
        sessions = self.served.sessions if self.served else []
        owed = [name for s in sessions for name in s.unanswered]
        if owed:
            return f"waiting for the reply to {owed[-1]} (owed, not served)"
        checks = [c for s in sessions for c in s.checks
                  if c.seq is not None and c.status in (Status.OK, Status.HANDLED)]  # fmt: skip
        last = "the start"
        if checks:
            label = checks[-1].label.removeprefix("live ")
            last = label.split(" ", 1)[1] if label.startswith("#") else label
        return f"after {last}, no reply owed to it"

    def _drive(self) -> str | None:
        """Guest mode: take the VM through stop, resume, stop over QMP. What QEMU did not
        answer within the timeout while alive (a hang), or None (answered, or exited)."""
        client = QmpClient(self.qmp, timeout=self.timeout)
        what = "the QMP greeting"
        try:
            client.connect(wait=self.timeout)
            time.sleep(self.wait / 4)  # the firmware brings the device up meanwhile
            for command in GUEST_STEPS:
                what = f"QMP {command}"
                client.execute(command)
            return None
        except QmpTimeout:
            return what if self._alive() else None
        except (QmpError, OSError, ValueError):  # the monitor went away: did QEMU?
            if not self._alive():
                return None
            return f"{what}: the monitor closed while QEMU runs"
        finally:
            client.close()

    def _alive(self) -> bool:
        """Still running a moment later (a QEMU that is exiting closes its monitor first)."""
        return self.program.exit_status(1.0) is None

    # -- minimization ------------------------------------------------------------------------

    def _still(self, case: Case, verdict: Verdict, i: int, budget: Budget) -> bool:
        if not budget.take():
            return False
        path = self.program.dir / "minimizing.vht"
        write_served(self.trace, case, path, self._info(i, case), self._replaced)
        return self.serve(path).signature == verdict.signature

    def _minimize(self, case: Case, verdict: Verdict, i: int) -> Minimized:
        """ddmin over the case's edits of the recording (each mutated reply put back as
        recorded, each dropped one restored, each inserted message left out), then the
        served session cut after the last message still needed."""
        budget = Budget(self.minimize_tests)
        found = edits(case, self.template)
        units = [(k, e.message or case.sessions[0][0]) for k, e in enumerate(found)]

        def still(items: list[Any]) -> bool:
            chosen = [found[k] for k, _ in items]
            return self._still(apply(self.template, chosen), verdict, i, budget)

        kept = ddmin(units, still, budget) if len(units) > 1 else units
        best = apply(self.template, kept_edits(found, kept))
        messages = list(best.sessions[0])
        needed = [n + 1 for n, m in enumerate(messages) if m.mutation or m.origin is None]
        for edit in kept_edits(found, kept):  # a dropped reply: the messages before its place
            if edit.kind == "dropped":
                needed.append(sum(1 for m in messages if (m.origin or 0) < (edit.origin or 0)))
        low, high = max(needed, default=len(messages)), len(messages)
        while low < high and budget.left:
            middle = (low + high) // 2
            shorter = replace(best, sessions=(tuple(messages[:middle]),))
            if self._still(shorter, verdict, i, budget):
                high = middle
            else:
                low = middle + 1
        mutations = best.mutations
        if high < len(messages):
            mutations += (f"sequence: served the first {high} of {len(messages)} replies",)
        best = Case((tuple(messages[:high]),), mutations)
        return Minimized(best, mutations, best.count(), budget.used)
