"""``make dev``: ``dagster dev`` that stops, whole, within a bounded time on Ctrl-C or SIGTERM.

``dagster dev`` runs a webserver, a daemon and code servers as child processes; a signal that
arrives while they start (or a SIGTERM from a supervisor) can leave some of them running. This
launcher starts ``dagster dev`` in its own process group and, on SIGINT or SIGTERM, interrupts the
whole group, then terminates and finally kills whatever is still alive after its grace periods.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

#: Seconds given to a clean shutdown after SIGINT, then after SIGTERM, before SIGKILL.
INTERRUPT_GRACE_S = 15.0
TERMINATE_GRACE_S = 5.0
POLL_S = 0.2


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _wait_group(proc: subprocess.Popen, pgid: int, seconds: float) -> bool:
    """True once the leader has exited and no process of the group is left (reaping the leader)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        proc.poll()
        if proc.returncode is not None and not _group_alive(pgid):
            return True
        time.sleep(POLL_S)
    return False


def stop_group(
    proc: subprocess.Popen,
    interrupt_grace_s: float = INTERRUPT_GRACE_S,
    terminate_grace_s: float = TERMINATE_GRACE_S,
) -> str:
    """Interrupt, then terminate, then kill the process group of ``proc``; returns what stopped it."""
    pgid = proc.pid
    for sig, grace, label in (
        (signal.SIGINT, interrupt_grace_s, "interrupt"),
        (signal.SIGTERM, terminate_grace_s, "terminate"),
    ):
        _signal_group(pgid, sig)
        if _wait_group(proc, pgid, grace):
            return label
    _signal_group(pgid, signal.SIGKILL)
    _wait_group(proc, pgid, terminate_grace_s)
    return "kill"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(argv if argv is not None else sys.argv[1:]) or ["-w", "workspace.yaml"]
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.Popen([str(dagster), "dev", *args], start_new_session=True)
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while proc.poll() is None and not stopping:
        time.sleep(POLL_S)
    if not stopping:
        return proc.returncode or 0
    how = stop_group(proc)
    print(f"midfreq dev: stopped ({how})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
