"""The demo: record a real session and look at it, the way a user would.

Boots a Linux guest under QEMU with a vhost-user-blk disk served by
qemu-storage-daemon, with ``vhtrace record`` in between, lets the guest read and
write the disk, then runs ``vhtrace stats`` and ``vhtrace show`` on the trace.

``scripts/demo`` runs it after ``scripts/install-deps``. Repo-side, not in the installed
package: its scenario is the system tests' (``tests/support/scenarios.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import scenarios
from vhtrace.lab import missing
from vhtrace.lab.workspace import Workspace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__)
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("demo.vht"),
        help="where to keep the trace (default demo.vht)",
    )
    args = parser.parse_args(argv)
    absent = missing("qemu", "qsd", "qemu-img", "busybox", "kernel")
    if absent:
        print("demo: cannot run: " + "; ".join(absent), file=sys.stderr)
        print("demo: scripts/install-deps installs them", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="vhtrace-demo-"))
    try:
        with Workspace(work / "data", work / "cache") as lab:
            print(
                "demo: booting a Linux guest on QEMU (TCG) with a vhost-user-blk disk from "
                "qemu-storage-daemon, vhtrace record in between ...",
                file=sys.stderr,
            )
            outcome = scenarios.blk_io(lab)
            assert outcome.markers is not None
            pattern = outcome.notes["pattern"]
            assert isinstance(pattern, bytes)
            same = outcome.markers["md5"] == outcome.notes["image_md5"]
            wrote = outcome.markers["pattern_readback_md5"] == hashlib.md5(pattern).hexdigest()
            print(
                f"demo: guest read the disk: md5 {'matches' if same else 'DIFFERS'}; "
                f"guest write read back: {'ok' if wrote else 'WRONG'}",
                file=sys.stderr,
            )
            shutil.copyfile(outcome.trace, args.output)
            args.output.chmod(0o600)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    vhtrace = [sys.executable, "-m", "vhtrace.cli.main"]
    print(f"\n$ vhtrace stats {args.output}", flush=True)
    subprocess.run([*vhtrace, "stats", str(args.output)], check=False)
    print(f"\n$ vhtrace show {args.output}", flush=True)
    subprocess.run([*vhtrace, "show", str(args.output)], check=False)
    print(f"\n$ vhtrace rings {args.output} --at 2", flush=True)
    subprocess.run([*vhtrace, "rings", str(args.output), "--at", "2"], check=False)
    print(
        f"\nThe trace is {args.output}. Try: vhtrace show -V {args.output} -r SET_VRING_ADDR, "
        f"vhtrace show --json {args.output} | head",
        flush=True,
    )
    return 0 if same and wrote else 1


if __name__ == "__main__":
    sys.exit(main())
