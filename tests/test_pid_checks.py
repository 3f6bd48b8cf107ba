"""Teardown and lock checked by evidence and start time (issue 20): Podman rm, run lock."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from sandbench import procs
from sandbench.environments.podman import _wait_gone
from sandbench.errors import SandboxError


def test_wait_gone_raises_with_evidence_when_a_process_survives() -> None:
    cid = "sbtestwaitgone0123456789abcdef"
    # A real process whose argv names the id stands in for a conmon that rm left alive.
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", cid])
    try:
        # Seen by the search before the check (a loaded CI machine once made it look gone).
        deadline = time.monotonic() + 10
        while p.pid not in procs.find_by_cmdline(cid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.poll() is None and p.pid in procs.find_by_cmdline(cid), p.poll()
        with pytest.raises(SandboxError) as e:
            _wait_gone(cid, 2.0, "podman rm exited 125: boom")
        assert cid in str(e.value)
        ev = e.value.evidence
        assert p.pid in ev["pids"] and "boom" in ev["rm_error"]
    finally:
        p.kill()
        p.wait()
    _wait_gone(cid, 0.3)  # gone now: returns quietly


def test_run_lock_of_a_reused_pid_is_not_alive(tmp_path: object) -> None:
    """The run lock trusts a pid only with the start time it wrote (issue 20 item 5)."""
    import os

    from sandbench import study

    assert study._lock_alive(os.getpid(), "")  # old lock files without a time: pid alone
    assert not study._lock_alive(os.getpid(), "1.0")  # same pid, other start time: reused
