"""Ctrl-C at any instant leaves nothing: runs of host, runc, gVisor and Docker sandboxes are
interrupted at delays spread over their whole life (daemon and image set-up, prepare,
create, start, measurement, teardown), and after each `clean --dry-run` finds nothing.

Each environment's run is timed once uninterrupted; the interrupts then fall at fractions of
that time, so that the instants cover every phase whatever this machine's speed."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, SANDBENCH, assert_same_host, env_or_skip, host_state, run_cli

pytestmark = pytest.mark.runtime

ENVS = ("host", "runc", "gvisor-systrap", "docker")
#: Interrupts per environment: with four environments, 20 instants in all.
PER_ENV = 5


def _run_args(env: str, out: Path) -> list[str]:
    return [*SANDBENCH, "run", "--env", env, "--bench", "startup", "--rounds", "3",
            "--no-report", "--out", str(out)]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _begun(proc: subprocess.Popen[str], out: Path, timeout: float = 120) -> None:
    """Until the run made its results directory (its first act, inside the handler that
    sweeps at the end). Before that an interrupt lands in Python's imports, which on a loaded
    machine can last over a second and tests nothing of sandbench."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not out.exists():
        time.sleep(0.002)


@pytest.mark.parametrize("env_name", ENVS)
def test_interrupt_at_many_instants_leaves_nothing(env_name: str, tmp_path: Path) -> None:
    env_or_skip(env_name)
    pre = run_cli("clean", "--dry-run", timeout=300)
    assert "nothing left behind" in pre.stdout, f"the host was not clean before: {pre.stdout}"
    before = host_state()
    full = subprocess.Popen(_run_args(env_name, tmp_path / "full"), cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _begun(full, tmp_path / "full")
    t0 = time.monotonic()  # the run's life from its first act
    fout, ferr = full.communicate(timeout=600)
    whole = time.monotonic() - t0
    assert full.returncode == 0, fout[-2000:] + ferr[-2000:]
    outcomes = []
    for i in range(PER_ENV):
        delay = whole * (i + 0.5) / PER_ENV
        out = tmp_path / f"int{i}"
        proc = subprocess.Popen(_run_args(env_name, out), cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=_default_sigint)  # noqa: PLW1509 - no threads here
        _begun(proc, out)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=300)
        outcomes.append((round(delay, 2), proc.returncode))
        # 130: interrupted and torn down; 0: it ended first; killed by the SIGINT itself only
        # once the run was over (its last line printed): late in the interpreter's exit
        # Python restores the handler it inherited, here the default.
        finished = "results directory:" in stdout
        assert proc.returncode in (0, 130) or (finished and proc.returncode == -signal.SIGINT), \
            (delay, proc.returncode, stdout[-1500:], stderr[-1500:])
        dry = run_cli("clean", "--dry-run", timeout=300)
        assert "nothing left behind" in dry.stdout, (env_name, delay, dry.stdout, stderr[-1500:])
    assert any(rc == 130 for _d, rc in outcomes), f"no run was interrupted: {outcomes}"
    assert_same_host(before, host_state())
