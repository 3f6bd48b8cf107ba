"""The agent-VM base shared by QEMU and Firecracker: the kvm_pvm check, leftovers of killed
runs, the resources taken from the run's limits, and (real guest, under the runtime lock) a
QEMU data disk on the volume opened with O_DIRECT and a frozen VM that takes no CPU."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from sandbench import paths, volume
from sandbench.environments.base import Limits, SandboxSpec
from sandbench.environments.qemu import MACHINES, QemuEnvironment, QemuSandbox
from sandbench.vm import kvm
from sandbench.vm.sandbox import state_root
from tests.conftest import env_or_skip


def fake_host(tmp_path: Path, flags: str, pvm: bool) -> dict[str, Path]:
    tmp_path.mkdir()
    (tmp_path / "kvm").touch()
    (tmp_path / "sys").mkdir()
    if pvm:
        (tmp_path / "sys" / "kvm_pvm").mkdir()
    (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: fpu {flags} sse2\n")
    return {"dev": tmp_path / "kvm", "sys_module": tmp_path / "sys",
            "cpuinfo": tmp_path / "cpuinfo"}  # fmt: skip


def test_kvm_problem_names_kvm_pvm(tmp_path: Path) -> None:
    reason = kvm.kvm_problem(**fake_host(tmp_path / "a", "hypervisor", pvm=True))
    assert reason is not None and "kvm_pvm" in reason and "software hypervisor" in reason
    # No module visible, but /dev/kvm without VT-x/AMD-V can only be a software hypervisor.
    reason = kvm.kvm_problem(**fake_host(tmp_path / "b", "hypervisor", pvm=False))
    assert reason is not None and "neither vmx nor svm" in reason
    assert kvm.kvm_problem(**fake_host(tmp_path / "c", "vmx", pvm=False)) is None
    absent = kvm.kvm_problem(dev=tmp_path / "none")
    assert absent is not None and "absent" in absent


def test_accel_names_kvm_pvm_without_a_boot_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    if not Path("/sys/module/kvm_pvm").exists():
        pytest.skip("this host's /dev/kvm is not kvm_pvm")
    monkeypatch.delenv("SANDBENCH_QEMU_ACCEL", raising=False)
    kvm.reset()
    try:
        t0 = time.monotonic()
        a = kvm.accel()
        assert time.monotonic() - t0 < 2  # no 12 s boot probe
        assert a.mode == "tcg" and "kvm_pvm" in a.reason and "TCG" in a.reason
        why = kvm.kvm_unavailable("Firecracker")
        assert why == f"Firecracker runs only on KVM: {kvm.PVM_REASON}"
    finally:
        kvm.reset()


def test_resources_follow_the_run_limits() -> None:
    vm = QemuEnvironment(MACHINES[0])
    assert vm.limits_applied(Limits(cpus=1.5, memory_mib=2048))["cpus"] == 2
    assert vm.limits_applied(Limits(cpus=0.2))["cpus"] == 1
    assert vm.limits_applied(Limits())["memory_mib"] == 700
    assert vm.memory_reserved_mib(Limits(memory_mib=1024)) == 1024
    assert vm.memory_reserved_mib(Limits()) == 700


def test_leftovers_are_dead_runs_state_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(paths, "STATE_DIR", tmp_path)
    env = QemuEnvironment(MACHINES[1])
    root = state_root(env.name)
    dead, live = root / "sb0000000001", root / "sb0000000002"
    for d in (dead, live):
        d.mkdir(parents=True)
    # A pid that cannot exist (above pid_max) stands for a run that was killed.
    (dead / "owner").write_text("4194400 1.0\n")
    (dead / "pid").write_text(f"{os.getpid()}\n")  # alive, but its cmdline does not name dead/
    me = psutil.Process()
    (live / "owner").write_text(f"{me.pid} {me.create_time()!r}\n")
    found = env.leftovers()
    assert [str(x) for x in found] == [f"state {dead}"]
    for x in found:
        x.remove()
    assert not dead.exists() and live.exists()
    assert QemuEnvironment(MACHINES[0]).leftovers() == []  # other environment, other root


# -- a real guest ------------------------------------------------------------------------------
def _cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


@pytest.mark.runtime
def test_qemu_data_disk_on_volume_direct_io_resources_and_freeze(tmp_path: Path) -> None:
    env = env_or_skip("qemu-microvm")
    assert isinstance(env, QemuEnvironment)
    with volume.volume(256 << 20) as vol:
        spec = SandboxSpec(volume=vol.path, volume_size_mib=256, log=tmp_path / "console.log",
                           limits=Limits(cpus=1.5, memory_mib=320))  # fmt: skip
        with env.start(spec) as sb:
            assert isinstance(sb, QemuSandbox)
            assert "created" in sb.marks and sb.data_disk is not None
            assert sb.data_disk.parent == vol.path
            block = sb.qmp.execute("query-block")
            (data,) = [b for b in block if b["device"] == "data"]
            assert data["inserted"]["file"] == str(sb.data_disk)
            assert data["inserted"]["cache"]["direct"] is True
            assert sb.exec(["nproc"]).stdout.strip() == "2"
            mem_kib = int(sb.exec(["sh", "-c", "grep MemTotal /proc/meminfo"]).stdout.split()[1])
            assert 200 * 1024 < mem_kib <= 320 * 1024
            assert sb.limits_enforced()["cpus"] == 2 and sb.volume_kind == "virtio-disk"
            assert all(x.ident.find(sb.name) < 0 for x in env.leftovers())  # in use: not listed
            pid = sb.host_pids()[0]
            sb.freeze()
            assert sb.qmp.execute("query-status")["status"] == "paused"
            time.sleep(0.5)
            before = _cpu_s(pid)
            time.sleep(2.0)
            used = _cpu_s(pid) - before
            assert used < 0.1, f"a frozen VM used {used:.3f} s of CPU in 2 s"
            sb.thaw()
            assert sb.exec(["echo", "back"]).stdout == "back\n"
            disk_file = sb.data_disk
        assert not disk_file.exists()
        assert all(x.ident.find(sb.name) < 0 for x in env.leftovers())
