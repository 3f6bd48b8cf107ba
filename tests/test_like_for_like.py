"""Issue 11: every environment measured under the same conditions: the same seccomp baseline,
the same CPU and memory limits, the same phase boundaries, and frozen while another is
measured. Real runtimes (pytest -m runtime, under flock /tmp/sandbench-rt.lock)."""

from __future__ import annotations

import json
import os
import platform
import stat
import time

import psutil
import pytest

from sandbench import seccomp
from sandbench.environments import oci_spec
from sandbench.environments.base import Limits, Sandbox, SandboxSpec
from tests.conftest import env_or_skip

BUSY = ["/bin/sh", "-c", "while :; do :; done"]
LIMITS = Limits(cpus=1.0, memory_mib=256)


def _profile() -> dict[str, object]:
    if problem := seccomp.profile_problem():
        pytest.skip(problem)
    if platform.machine() != "x86_64":
        pytest.skip("the expectations below are for x86_64")
    loaded: dict[str, object] = json.loads(seccomp.PROFILE.read_text())
    return loaded


def _rules(out: dict[str, object], action: str) -> set[str]:
    calls = out["syscalls"]
    assert isinstance(calls, list)
    return {n for r in calls if r["action"] == action and not r.get("args") for n in r["names"]}


def test_seccomp_translation_resolves_arch_and_caps() -> None:
    out = seccomp.translate(_profile(), oci_spec.DEFAULT_CAPS, "x86_64", (6, 1))
    assert out["defaultAction"] == "SCMP_ACT_ERRNO"
    assert out["defaultErrnoRet"] == 38  # ENOSYS, as Docker and Podman return
    assert out["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    allowed, denied = _rules(out, "SCMP_ACT_ALLOW"), _rules(out, "SCMP_ACT_ERRNO")
    assert {"getpid", "read", "arch_prctl", "modify_ldt", "chroot", "socket"} <= allowed
    # Capabilities the bundle does not grant keep their syscalls denied.
    assert {"bpf", "init_module", "kexec_load", "iopl"} <= denied
    assert not {"bpf", "init_module", "iopl"} & allowed
    names = {n for r in out["syscalls"] for n in r["names"]}
    assert not {"s390_runtime_instr", "cacheflush", "sync_file_range2"} & names
    # The conditional socket rules only apply without CAP_AUDIT_WRITE.
    assert not [r for r in out["syscalls"] if r["names"] == ["socket"] and r.get("args")]


def test_seccomp_translation_without_a_capability() -> None:
    caps = [c for c in oci_spec.DEFAULT_CAPS if c not in ("CAP_SYS_CHROOT", "CAP_AUDIT_WRITE")]
    out = seccomp.translate(_profile(), caps, "x86_64", (6, 1))
    assert "chroot" in _rules(out, "SCMP_ACT_ERRNO")
    assert "chroot" not in _rules(out, "SCMP_ACT_ALLOW")
    conditional = [r for r in out["syscalls"] if r["names"] == ["socket"]]
    assert conditional and all(r.get("args") for r in conditional)


def _seccomp_mode(pid: int) -> str:
    with open(f"/proc/{pid}/status") as fh:
        return next(ln.split()[1] for ln in fh if ln.startswith("Seccomp:"))


def _workload_pid(sb: Sandbox) -> int:
    """The sandbox's first process as the host sees it (the busy shell)."""
    for pid in sb.host_pids():
        try:
            if psutil.Process(pid).cmdline()[:2] == BUSY[:2]:
                return pid
        except psutil.Error:
            continue
    raise AssertionError(f"no busy shell among {sb.host_pids()}")


pytestmark_runtime = pytest.mark.runtime


@pytestmark_runtime
@pytest.mark.parametrize("name", ["runc", "crun", "docker"])
@pytest.mark.parametrize("on", [True, False], ids=["seccomp", "unconfined"])
def test_container_runs_under_the_default_profile(name: str, on: bool, clean_host: None) -> None:
    env = env_or_skip(name)
    try:
        with env.start(SandboxSpec(argv=BUSY, seccomp=on)) as sb:
            assert _seccomp_mode(_workload_pid(sb)) == ("2" if on else "0")
            # The filter lets the workload's ordinary calls through.
            done = sb.exec(["/sb/syscall", "1000", "1"])
            assert done.returncode == 0 and '"calls": 1000' in done.stdout, done
        facts = env.facts()
        assert "seccomp" in facts and "seccomp_when_off" in facts
    finally:
        env.close()


def _cpu_s(sb: Sandbox) -> float:
    total = 0.0
    for pid in sb.host_pids():
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def _cpu_rate(sb: Sandbox, seconds: float = 1.0) -> float:
    a = _cpu_s(sb)
    time.sleep(seconds)
    return (_cpu_s(sb) - a) / seconds


@pytestmark_runtime
@pytest.mark.parametrize("name", ["host", "runc", "crun", "gvisor-systrap", "gvisor-ptrace",
                                  "docker", "docker-gvisor-systrap"])
def test_same_conditions(name: str, clean_host: None) -> None:
    """Phases, limits and freezing of one busy sandbox; stop while frozen leaves nothing."""
    env = env_or_skip(name)
    try:
        t0 = time.perf_counter_ns()
        sb = env.prepare(SandboxSpec(argv=BUSY, limits=LIMITS))
        prepared = time.perf_counter_ns()
        with sb:
            sb.launch()
            launched = time.perf_counter_ns()
            if "create" in sb.folded_phases:
                assert "created" not in sb.marks
            else:
                assert prepared < sb.marks["created"] < launched, (t0, sb.marks)

            applied = env.limits_applied(LIMITS)
            assert applied["cpus"] == 1.0 and applied["memory_mib"] == 256 and applied["how"]
            enforced = sb.limits_enforced()
            assert enforced["cpus"] == 1.0, enforced
            assert enforced["memory_mib"] == 256, enforced

            time.sleep(0.3)
            running = _cpu_rate(sb)
            assert running > 0.5, f"busy sandbox used only {running:.2f} CPU-s/s"
            sb.freeze()
            assert sb.frozen
            time.sleep(0.2)
            frozen = _cpu_rate(sb)
            # gVisor's paused sentry still runs its Go runtime's timers (about 2 %).
            assert frozen < 0.05, f"frozen sandbox used {frozen:.3f} CPU-s/s"
            sb.thaw()
            time.sleep(0.2)
            assert _cpu_rate(sb) > 0.5
            sb.freeze()  # and stop() must take a frozen sandbox down
    finally:
        env.close()


@pytestmark_runtime
@pytest.mark.parametrize("name", ["gvisor-systrap", "docker-gvisor-systrap"])
def test_gvisor_declares_its_direct_io(name: str, clean_host: None) -> None:
    env = env_or_skip(name)
    try:
        with env.prepare(SandboxSpec()) as sb:
            assert sb.direct_io is False
            assert "O_DIRECT" in sb.direct_io_note
        facts = env.facts()
        overhead = facts["wrapper_overhead_ms"]
        assert set(overhead) == {"create", "other"}
    finally:
        env.close()


@pytestmark_runtime
def test_host_sandbox_declarations(clean_host: None) -> None:
    env = env_or_skip("host")
    with env.start(SandboxSpec()) as sb:
        assert sb.bind_address == "127.0.0.1"
        assert sb.volume_kind == "host-directory"
        scratch = sb.scratch_dir
        assert stat.S_IMODE(os.stat(scratch).st_mode) == 0o700
        assert sb.data_dir == scratch  # no volume: the scratch directory
        assert sb.exec([sb.helper("syscall"), "10", "1"]).returncode == 0
    assert not os.path.exists(scratch)
