"""``vhtrace fuzz --frontend-cmd`` in guest mode against a real QEMU 7.2: its firmware brings
the vhost-user-blk device up, QMP stops and resumes the VM, so the served conversation goes
past realize (memory table, ring setup, GET_VRING_BASE at stop, the rings started again);
a reply QEMU waits for that never comes is a hang (its monitor stops answering), told apart
from ``ok``; a finding is minimized to the edit that makes it."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vhtrace.fuzz.case import Case
from vhtrace.fuzz.frontend import Edit, FrontendCampaign, apply, edits
from vhtrace.fuzz.oracle import CORRECT_KINDS, FINDING_KINDS
from vhtrace.fuzz.served import write_served
from vhtrace.lab import Workspace
from vhtrace.lab.qemu import firmware_guest_command
from vhtrace.lab.qmp import QmpClient, QmpTimeout
from vhtrace.replay.report import Status
from vhtrace.trace.reader import TraceReader

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE_TRACE = ROOT / "traces" / "qemu-qsd-blk-firmware.vht"
GET_QUEUE_NUM_REPLY = 7
"""The recorded reply QEMU waits for at realize (before its monitor runs)."""


def _campaign(lab: Workspace, **options: object) -> FrontendCampaign:
    return FrontendCampaign(FIRMWARE_TRACE, firmware_guest_command(), out=lab.path("found"),
                            timeout=3.0, **options)  # type: ignore[arg-type]  # fmt: skip


def _served(campaign: FrontendCampaign, case: Case, path: Path) -> Path:
    return write_served(campaign.trace, case, path, {"test": True}, campaign._replaced)


@pytest.mark.lab_needs("qemu")
def test_the_firmware_takes_the_served_conversation_past_realize(lab: Workspace) -> None:
    campaign = _campaign(lab)
    try:
        verdict = campaign.serve(_served(campaign, campaign.template.case, lab.path("as.vht")))
    finally:
        campaign.program.close()
    assert verdict.kind == "ok", verdict
    served = campaign.served
    assert served is not None and served.sessions, served
    matched = [c.label for c in served.sessions[0].checks if c.status is Status.OK]
    for request in ("ADD_MEM_REG", "SET_VRING_ADDR", "SET_VRING_KICK", "GET_VRING_BASE"):
        assert any(request in label for label in matched), (request, matched)
    # the rings started again after the resume (the second ring setup of the recording)
    assert sum("SET_VRING_KICK" in label for label in matched) == 2, matched


@pytest.mark.lab_needs("qemu")
def test_a_reply_qemu_waits_for_is_a_hang_and_replay_serves_it_again(lab: Workspace) -> None:
    campaign = _campaign(lab)
    dropped = apply(campaign.template, [Edit("dropped", GET_QUEUE_NUM_REPLY)])
    repro = _served(campaign, dropped, lab.path("hang.vht"))
    try:
        verdict = campaign.serve(repro)
        again = campaign.serve(_served(campaign, campaign.template.case, lab.path("ok.vht")))
    finally:
        campaign.program.close()
    assert verdict.kind == "hang", verdict
    assert verdict.signature == (
        "hang the QMP greeting: waiting for the reply to GET_QUEUE_NUM (owed, not served)"
    ), verdict
    assert again.kind == "ok", again
    # the reproducer, served by `vhtrace replay --serve`, hangs a QEMU started by hand
    sock, qmp = lab.sock("served"), lab.sock("qmp")
    server = subprocess.Popen(
        [sys.executable, "-m", "vhtrace", "replay", str(repro), "--serve", str(sock), "--loose",
         "--unknown", "ack", "--keep-going"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    qemu = None
    try:
        deadline = time.monotonic() + 30
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        qemu = subprocess.Popen(firmware_guest_command(str(sock), str(qmp)),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        client = QmpClient(qmp, timeout=3.0)
        with pytest.raises(QmpTimeout):
            client.connect(wait=10)
        client.close()
        assert qemu.poll() is None  # alive, and not answering: hung
    finally:
        if qemu is not None:
            qemu.kill()
            qemu.wait(10)
        server.kill()
        server.wait(10)


@pytest.mark.lab_needs("qemu")
def test_a_finding_is_minimized_to_the_edit_that_makes_it(lab: Workspace) -> None:
    campaign = _campaign(lab)
    template = campaign.template
    benign = next(m for m in template.case.messages if m.name == "GET_MAX_MEM_SLOTS")
    fields = dict(benign.fields() or {})
    changed = benign.with_raw(benign.raw[:-8] + (int(fields["value"]) - 1).to_bytes(8, "little"),
                              "num 32 -> 31")  # fmt: skip
    noisy = [Edit("changed", benign.origin, changed), Edit("dropped", GET_QUEUE_NUM_REPLY)]
    case = apply(template, noisy)
    assert len(edits(case, template)) == 2
    try:
        verdict = campaign.serve(_served(campaign, case, lab.path("noisy.vht")))
        assert verdict.kind == "hang", verdict
        small = campaign._minimize(case, verdict, 0)
    finally:
        campaign.program.close()
    # the GET_MAX_MEM_SLOTS change is not needed, and what comes after the dropped reply
    # is not either: the two replies before it are served
    assert small.mutations == (
        "sequence: dropped #7 GET_QUEUE_NUM",
        f"sequence: served the first 2 of {template.case.count() - 1} replies",
    ), small.mutations
    assert [m.origin for m in small.case.messages] == [2, 4]
    assert 0 < small.tests <= campaign.minimize_tests


@pytest.mark.lab_needs("qemu")
def test_fuzz_qemu_in_guest_mode_from_the_command_line(lab: Workspace) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vhtrace", "fuzz", str(FIRMWARE_TRACE), "--frontend-cmd",
         shlex.join(firmware_guest_command()), "--seed", "1", "--iterations", "6",
         "--mutate", "field,backend", "--json", "--out", str(lab.path("found"))],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["mode"] == "guest"
    assert report["iterations"] == 6 and sum(report["outcomes"].values()) == 6
    assert set(report["outcomes"]) <= set(FINDING_KINDS + CORRECT_KINDS)
    for finding in report["findings"]:
        with TraceReader(finding["reproducer"]) as reader:
            assert reader.header["fuzz"]["iteration"] == finding["iteration"]
