"""Virtual machines under QEMU, through the same Sandbox interface as containers.

Two machines:
  qemu-microvm  `-M microvm`, direct kernel boot, virtio-mmio devices, no PCI, no firmware.
                The minimal image runs from the initramfs with the guest agent as PID 1 (it
                starts the first process); other images boot from a virtio disk, agent as init.
  qemu-vm       the paper's traditional VM: `-M pc`, virtio-pci devices, 700 MB, the full
                Debian image booted by systemd from a virtio disk (whatever image the
                benchmark asks for: the full image holds the minimal image's helpers too);
                systemd units start the agent and the first process (the startup probe).

Both use Debian's cloud kernel with a tool-built initramfs (vm/initramfs.py), a tap in the host
namespace (vmnet.py) and the guest agent over virtio-serial (no vhost-vsock here). KVM is used
only when a bounded probe boots a guest with it; otherwise TCG, and every sample is flagged
`emulated`. Root disks are opened with snapshot=on, so sandboxes never write the cached image.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbench import images, paths, vmnet
from sandbench.binaries import version_of
from sandbench.environments.base import (
    IDLE_ARGV,
    Availability,
    Completed,
    Environment,
    Sandbox,
    SandboxSpec,
    tail_file,
)
from sandbench.errors import SandboxError, StepTimeout
from sandbench.vm import disk, initramfs, kernel
from sandbench.vm.agent_client import AgentClient, encode_argv
from sandbench.vm.kvm import MICROVM_TIMER_ARGS, QEMU, Accel, accel, qemu_path

LAUNCH_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
AGENT_PORT = "sandbench.agent"


@dataclass(frozen=True)
class Machine:
    name: str
    description: str
    microvm: bool
    memory_mib: int
    systemd: bool
    #: Bound on boot until the agent answers, under TCG (KVM boots in a fraction of it).
    boot_timeout_s: float


MACHINES = [
    Machine(
        "qemu-vm",
        "QEMU traditional VM: -M pc, virtio-pci, 700 MB, Debian booted by systemd",
        microvm=False,
        memory_mib=700,
        systemd=True,
        boot_timeout_s=300.0,
    ),
    Machine(
        "qemu-microvm",
        "QEMU microvm: direct kernel boot, virtio-mmio, no PCI, agent as init",
        microvm=True,
        memory_mib=256,
        systemd=False,
        boot_timeout_s=90.0,
    ),
]


# -- the environment ------------------------------------------------------------------------
class QemuEnvironment(Environment):
    family = "vm"

    def __init__(self, machine: Machine) -> None:
        self.m = machine
        self.name = machine.name
        self.description = machine.description

    def available(self) -> Availability:
        qemu = qemu_path()
        if qemu is None:
            return Availability.no(f"{QEMU} not found; install Debian package qemu-system-x86")
        if not Path("/dev/net/tun").exists():
            return Availability.no("/dev/net/tun is absent: the VM's tap network needs it")
        if shutil.which("gcc") is None:
            return Availability.no("gcc not found (builds the guest agent); install gcc")
        if shutil.which("mkfs.ext4") is None:
            return Availability.no("mkfs.ext4 not found; install Debian package e2fsprogs")
        try:
            k = kernel.ensure()
            initramfs.ensure(k)
        except (SandboxError, RuntimeError) as e:
            return Availability.no(f"guest kernel/initramfs: {e}")
        accel()
        return Availability.yes()

    def accel(self) -> Accel:
        return accel()

    @property
    def boot_timeout_s(self) -> float:
        """Bound on a boot (launch until the guest answers) under TCG: startup.py should wait
        for the probe at least this long (systemd under TCG takes tens of seconds)."""
        return float(os.environ.get("SANDBENCH_VM_BOOT_TIMEOUT", self.m.boot_timeout_s))

    def facts(self) -> dict[str, Any]:
        qemu = qemu_path()
        f: dict[str, Any] = {
            "binary": qemu,
            "version": version_of(qemu) if qemu else None,
            "driver": "qemu",
            "machine": "microvm" if self.m.microvm else "pc",
            "devices": "virtio-mmio" if self.m.microvm else "virtio-pci",
            "guest_memory_mib": self.m.memory_mib,
            "vcpus": 1,
            "network": "tap",
            "agent": "virtio-serial",
            "init": "systemd" if self.m.systemd else "sandbench agent",
            "rootfs": (
                "full image on a virtio disk (snapshot=on)"
                if self.m.systemd
                else "minimal image in the initramfs; other images on a virtio disk"
            ),
        }
        try:
            f["guest_kernel"] = kernel.ensure().package
            a = accel()
            f["accel"], f["accel_reason"] = a.mode, a.reason
        except (SandboxError, RuntimeError) as e:
            f["accel"], f["accel_reason"] = "unknown", str(e)
        return f

    def flags(self) -> list[str]:
        try:
            return ["emulated"] if accel().mode == "tcg" else []
        except (SandboxError, RuntimeError):
            return ["emulated"]

    def prepare(self, spec: SandboxSpec) -> QemuSandbox:
        return QemuSandbox(self, spec)


class QemuSandbox(Sandbox):
    def __init__(self, env: QemuEnvironment, spec: SandboxSpec) -> None:
        super().__init__(paths.new_id(), env.name)
        self.env = env
        self.m = env.m
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self.tap: vmnet.Tap | None = None
        self.data_disk: Path | None = None
        self.network_path = "tap"
        self.dir = paths.state("vm", self.name)
        self.socket = self.dir / "agent.sock"
        self.log = spec.log or (self.dir / "console.log")
        self.agent = AgentClient(self.socket, alive=self._alive)
        self.boot_timeout_s = env.boot_timeout_s
        self.memory_mib = spec.limits.memory_mib or self.m.memory_mib
        self.vcpus = max(1, math.ceil(spec.limits.cpus)) if spec.limits.cpus else 1
        try:
            qemu = qemu_path()
            if qemu is None:
                raise SandboxError(f"{QEMU} not found")
            self.qemu = qemu
            self.accel = accel()
            self.kernel = kernel.ensure()
            self.initrd = initramfs.ensure(self.kernel)
            # qemu-vm always boots the full Debian image with systemd; microvm runs the
            # minimal image from the initramfs and any other image from a disk.
            if self.m.systemd:
                self.root: Path | None = disk.root_disk("full")
            elif spec.image == "minimal":
                images.ensure("minimal")
                self.root = None
            else:
                self.root = disk.root_disk(spec.image)
            if spec.volume is not None:
                self.data_disk = disk.data_disk(self.dir / "data.ext4")
            t0 = time.perf_counter_ns()
            self.tap = vmnet.create(self.name)
            self.prepare_time_s = (time.perf_counter_ns() - t0) / 1e9
        except BaseException:
            self._stop()
            raise
        self._address = self.tap.guest_ip
        self.host_address = self.tap.host_ip

    # -- command line ------------------------------------------------------------------------
    def kernel_args(self, argv: list[str]) -> list[str]:
        assert self.tap is not None
        args = ["console=ttyS0", "panic=1", "quiet", "net.ifnames=0"]
        if self.m.microvm:
            args += MICROVM_TIMER_ARGS
        args += self.tap.kernel_args()
        args.append(f"sandbench.hostname={self.name}")
        disks = []
        if self.root is not None:
            disks.append("root")
            init = "systemd" if self.m.systemd else "agent"
            args += ["sandbench.root=vda", f"sandbench.init={init}"]
        if self.data_disk is not None:
            args.append(f"sandbench.data=vd{'ab'[len(disks)]}")
        args.append(f"sandbench.argv={encode_argv(argv)}")
        line = " ".join(args)
        if len(line) > 2000:
            raise SandboxError("the first process's argv is too long for the kernel command line")
        return args

    def command(self, argv: list[str]) -> list[str]:
        assert self.tap is not None
        dev = "device" if self.m.microvm else "pci"
        cmd = [self.qemu]
        if self.m.microvm:
            cmd += ["-M", "microvm,isa-serial=on,rtc=on"]
        else:
            cmd += ["-M", "pc"]
        cmd += ["-accel", self.accel.mode, "-m", str(self.memory_mib), "-smp", str(self.vcpus),
                "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                "-name", self.name,
                "-kernel", str(self.kernel.vmlinuz), "-initrd", str(self.initrd),
                "-append", " ".join(self.kernel_args(argv)),
                "-chardev", f"file,id=con,path={self.log},append=on", "-serial", "chardev:con",
                "-chardev", f"socket,id=agent,path={self.socket},server=on,wait=off",
                "-device", f"virtio-serial-{dev}",
                "-device", f"virtserialport,chardev=agent,name={AGENT_PORT}",
                "-netdev", f"tap,id=n0,ifname={self.tap.dev},script=no,downscript=no",
                "-device", f"virtio-net-{dev},netdev=n0,mac={self.tap.mac}"]  # fmt: skip
        drives = [(self.root, True)] if self.root is not None else []
        if self.data_disk is not None:
            drives.append((self.data_disk, False))
        for i, (path, snap) in enumerate(drives):
            opts = f"id=d{i},file={path},format=raw,if=none,cache=unsafe"
            if snap:
                opts += ",snapshot=on"
            cmd += ["-drive", opts, "-device", f"virtio-blk-{dev},drive=d{i}"]
        return cmd

    # -- lifecycle ---------------------------------------------------------------------------
    def _alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def launch(self, argv: list[str] | None = None) -> None:
        args = argv or self.spec.argv or IDLE_ARGV
        cmd = self.command(args)
        (self.dir / "cmdline").write_text("\n".join(cmd) + "\n")
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        # QEMU creates the agent socket once its devices are set up: a started machine.
        deadline = time.monotonic() + LAUNCH_TIMEOUT_S
        while not self.socket.exists():
            if self.proc.poll() is not None:
                raise SandboxError(
                    f"{self.env.name}: QEMU exited {self.proc.returncode}: {tail_file(self.log)}"
                )
            if time.monotonic() > deadline:
                raise StepTimeout(f"{self.env.name}: QEMU did not start within "
                                  f"{LAUNCH_TIMEOUT_S:g} s")
            time.sleep(0.005)

    def wait_ready(self, timeout: float | None = None) -> float:
        """Bounded wait until the guest agent answers; seconds waited."""
        try:
            return self.agent.wait_ready(timeout or self.boot_timeout_s)
        except StepTimeout as e:
            raise StepTimeout(f"{self.env.name}: {e}; console: {tail_file(self.log)}") from None

    def exec(self, argv: list[str], timeout: float = 60.0) -> Completed:
        self.wait_ready()
        return self.agent.run(argv, self.spec.env, timeout)

    def background(self, argv: list[str]) -> int:
        """Start argv detached inside the guest (stdio /dev/null); its guest pid."""
        self.wait_ready()
        return self.agent.background(argv, self.spec.env)

    def guest_boot_report(self, timeout: float = 180.0) -> dict[str, Any]:
        """`systemd-analyze time` from the guest (qemu-vm), waiting until systemd reports the
        boot finished; {} for machines without systemd. Guest clocks are emulated under TCG."""
        if not self.m.systemd:
            return {}
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            left = max(5.0, deadline - time.monotonic())
            done = self.exec(["systemd-analyze", "time"], timeout=min(60.0, left))
            text = (done.stdout + done.stderr).strip()
            if done.returncode == 0 and "Startup finished" in text:
                return parse_systemd_analyze(text)
            last = text
            time.sleep(1.0)
        raise StepTimeout(f"systemd did not report a finished boot within {timeout:g} s: {last}")

    def host_pids(self) -> list[int]:
        # QEMU's private memory includes the guest's RAM (as the paper counted it).
        return [self.proc.pid] if self._alive() and self.proc is not None else []

    def _stop(self) -> None:
        self.agent.close()
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        if self.tap is not None:
            vmnet.destroy(self.tap)
        shutil.rmtree(self.dir, ignore_errors=True)


def _seconds(text: str) -> float:
    total = 0.0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(min|ms|s|us)\b", text):
        v, unit = float(m.group(1)), m.group(2)
        total += v * {"min": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}[unit]
    return total


def parse_systemd_analyze(text: str) -> dict[str, Any]:
    """'Startup finished in 1.2s (kernel) + 30.5s (userspace) = 31.7s' -> seconds per phase."""
    line = next((ln for ln in text.splitlines() if "Startup finished" in ln), text)
    out: dict[str, Any] = {"systemd_analyze": line.strip()}
    body = line.split(" in ", 1)[-1]
    phases, _, total = body.partition("=")
    for part in phases.split("+"):
        m = re.match(r"\s*(.+?)\s*\((\w[\w ]*)\)\s*$", part)
        if m:
            out[f"guest_{m.group(2).replace(' ', '_')}_s"] = round(_seconds(m.group(1)), 6)
    if total:
        out["guest_boot_total_s"] = round(_seconds(total.split("\n")[0]), 6)
    return out
