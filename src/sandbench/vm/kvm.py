"""Whether hardware virtualization is usable here: a direct check for software hypervisors
behind /dev/kvm (kvm_pvm) and a bounded real boot for everything else.

kvm_problem() is cheap (sysfs and /proc only) and is shared by every environment that needs
KVM (QEMU, Firecracker, Kata, gVisor's KVM platform). accel() decides QEMU's accelerator.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sandbench import settings
from sandbench.binaries import version_of
from sandbench.environments import probe_cache
from sandbench.errors import SandboxError
from sandbench.sandbox_values import Availability
from sandbench.vm import initramfs, kernel

QEMU = "qemu-system-x86_64"
#: Kernel arguments microvm needs under TCG here (PLATFORM.md: without them the guest hangs
#: calibrating the TSC against a PIT it does not have).
MICROVM_TIMER_ARGS = ["tsc_early_khz=2000000", "lpj=4000000"]
KVM_PROBE_TIMEOUT_S = 12.0

PVM_REASON = (
    "/dev/kvm is served by kvm_pvm, a software hypervisor that emulates every instruction of a "
    "stock guest kernel (about 1,800x slower; stock kernels stop on an emulation failure)"
)


def qemu_path() -> str | None:
    return shutil.which(QEMU)


def _cpu_flags(cpuinfo: Path) -> set[str]:
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def kvm_problem(
    *,
    dev: Path = Path("/dev/kvm"),
    sys_module: Path = Path("/sys/module"),
    cpuinfo: Path = Path("/proc/cpuinfo"),
) -> str | None:
    """Why /dev/kvm cannot run a stock guest at hardware speed, or None when nothing says so
    (a real boot is still the final word: see accel()). Paths are parameters for the tests."""
    if not dev.exists():
        return "/dev/kvm is absent (no hardware virtualization, or the kvm module is not loaded)"
    if (sys_module / "kvm_pvm").exists():
        return PVM_REASON
    flags = _cpu_flags(cpuinfo)
    if flags and not flags & {"vmx", "svm"}:
        # /dev/kvm without VT-x/AMD-V: only a software hypervisor can be serving it.
        return (
            "/dev/kvm exists but the CPU advertises neither vmx nor svm: it is served by a "
            "software hypervisor (such as kvm_pvm) that cannot run a stock guest kernel at "
            "hardware speed"
        )
    if not os.access(dev, os.R_OK | os.W_OK):
        return "/dev/kvm is not accessible (permissions)"
    return None


@dataclass(frozen=True)
class Accel:
    mode: str  # "kvm" or "tcg"
    reason: str


_ACCEL: Accel | None = None


def probe_kvm_boot(qemu: str, k: kernel.Kernel, initrd: Path) -> Availability:
    """Boot a microvm with KVM and wait (bounded) for /init's first console line."""
    problem = kvm_problem()
    if problem is not None:
        return Availability.no(problem)
    with tempfile.TemporaryDirectory(prefix="sandbench-kvm-") as td:
        log = Path(td) / "console.log"
        argv = [
            qemu, "-M", "microvm,isa-serial=on,rtc=on", "-accel", "kvm", "-m", "256",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", str(k.vmlinuz), "-initrd", str(initrd),
            "-append", " ".join(["console=ttyS0", "panic=1", *MICROVM_TIMER_ARGS]),
            "-serial", f"file:{log}",
        ]  # fmt: skip
        t0 = time.monotonic()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            while time.monotonic() - t0 < KVM_PROBE_TIMEOUT_S:
                if log.exists() and "sandbench: init reached" in log.read_text(errors="replace"):
                    return Availability.yes()
                if proc.poll() is not None:
                    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                    return Availability.no(f"QEMU with KVM exited: {out.strip()[-300:]}")
                time.sleep(0.1)
            return Availability.no(
                f"a KVM guest did not reach init within {KVM_PROBE_TIMEOUT_S:g} s (guests stall "
                "under this hypervisor; needs working nested virtualization)"
            )
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            if proc.stdout:
                proc.stdout.close()


def accel() -> Accel:
    """KVM when nothing rules it out and a bounded probe boots a guest with it (cached until
    reboot), else TCG. SANDBENCH_QEMU_ACCEL=tcg|kvm overrides the probe."""
    global _ACCEL
    if _ACCEL is not None:
        return _ACCEL
    forced = (settings.value("SANDBENCH_QEMU_ACCEL") or "").lower()
    if forced in ("tcg", "kvm"):
        _ACCEL = Accel(forced, f"forced by SANDBENCH_QEMU_ACCEL={forced}")
        return _ACCEL
    qemu = qemu_path()
    if qemu is None:
        return Accel("tcg", f"{QEMU} not found")
    problem = kvm_problem()
    if problem is not None:
        # Named directly: no boot probe, no 12 s wait for a guest that cannot come up.
        _ACCEL = Accel("tcg", f"{problem}; QEMU runs under TCG (software emulation)")
        return _ACCEL
    k = kernel.ensure()
    initrd = initramfs.ensure(k)
    version = f"{version_of(qemu)}|{k.package}|{initrd.name}"
    av = probe_cache.probe("qemu-kvm", version, lambda: probe_kvm_boot(qemu, k, initrd))
    if av.ok:
        _ACCEL = Accel("kvm", "a KVM guest booted within the probe's bound")
    else:
        _ACCEL = Accel("tcg", f"KVM unusable ({av.reason}): software emulation (TCG)")
    return _ACCEL


def reset() -> None:
    """Forget the cached decision (tests)."""
    global _ACCEL
    _ACCEL = None


def kvm_unavailable(what: str) -> str | None:
    """Why `what` (a VMM that has no emulation fallback) cannot run here, or None."""
    problem = kvm_problem()
    if problem is not None:
        return f"{what} runs only on KVM: {problem}"
    try:
        a = accel()
    except (SandboxError, RuntimeError) as e:
        return f"cannot probe KVM: {e}"
    if a.mode != "kvm":
        return f"{what} runs only on KVM, unusable here: {a.reason}"
    return None
