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
`emulated`. Root disks are opened with snapshot=on, so sandboxes never write the cached image;
the data disk is a raw image on the benchmark volume opened with O_DIRECT (cache.direct=on,
aio=native). QEMU starts paused (-S) with a QMP socket: launch marks "created" when the
monitor answers and lets the guest run with `cont`; freeze is QMP `stop`/`cont`. The lifecycle
shared with Firecracker is vm/sandbox.py.
"""

from __future__ import annotations

import re
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbench import images
from sandbench.binaries import version_of
from sandbench.environments.base import Availability, SandboxSpec
from sandbench.errors import SandboxError, StepTimeout
from sandbench.vm import disk, initramfs, kernel
from sandbench.vm.kvm import MICROVM_TIMER_ARGS, QEMU, Accel, accel, qemu_path
from sandbench.vm.qmp import Qmp
from sandbench.vm.sandbox import LAUNCH_TIMEOUT_S, AgentVmEnvironment, AgentVmSandbox, Drive

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
#: Migration bandwidth for a checkpoint (bytes/s): the disk, not QEMU's throttle, bounds it.
MIGRATE_BANDWIDTH = 8 << 30
#: Bound of a save or a load (a VM's boot bound, if longer: emulation is slow).
MIGRATE_TIMEOUT_S = 120.0


class QemuEnvironment(AgentVmEnvironment):
    resource_flags = "-smp N, -m MiB"

    def __init__(self, machine: Machine) -> None:
        self.m = machine
        self.name = machine.name
        self.description = machine.description
        self.paper_lineage = "qemu"
        self.default_memory_mib = machine.memory_mib
        self.default_boot_timeout_s = machine.boot_timeout_s

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

    def restore_unavailable(self, image: str) -> str:
        # A root disk is a throw-away overlay (snapshot=on) that dies with the QEMU process:
        # a migration to a file carries RAM and devices, not that overlay's writes.
        if self.m.systemd or image != "minimal":
            what = "the full image" if self.m.systemd else f"the {image!r} image"
            return (f"{self.name} boots {what} from a root disk whose writes live in a "
                    "throw-away overlay (snapshot=on) that a migration to a file does not "
                    "carry; QEMU's restore is measured on the initramfs guest (the minimal "
                    "image)")
        return ""

    def facts(self) -> dict[str, Any]:
        qemu = qemu_path()
        f: dict[str, Any] = {
            **self.vm_facts(),
            "binary": qemu,
            "version": version_of(qemu) if qemu else None,
            "driver": "qemu (QMP: started paused, then cont)",
            "machine": "microvm" if self.m.microvm else "pc",
            "devices": "virtio-mmio" if self.m.microvm else "virtio-pci",
            "agent": "virtio-serial",
            "data_disk_cache": "cache.direct=on,aio=native (O_DIRECT on the volume)",
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


class QemuSandbox(AgentVmSandbox):
    vmm = "QEMU"

    def __init__(self, env: QemuEnvironment, spec: SandboxSpec) -> None:
        self.m = env.m
        self.guest_init = "systemd" if env.m.systemd else "agent"
        super().__init__(env, spec, agent_socket="agent.sock")
        self.qmp = Qmp(self.dir / "qmp.sock")

    def prepare_vmm(self) -> None:
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
            root: Path | None = disk.root_disk("full")
        elif self.spec.image == "minimal":
            images.ensure("minimal")
            root = None
        else:
            root = disk.root_disk(self.spec.image)
        if root is not None:
            self.drives.append(Drive("root", root, "root", snapshot=True))

    def vmm_kernel_args(self) -> list[str]:
        args = ["console=ttyS0", "panic=1", "net.ifnames=0"]
        return args + MICROVM_TIMER_ARGS if self.m.microvm else args

    def vmm_command(self, argv: list[str]) -> list[str]:
        assert self.tap is not None
        dev = "device" if self.m.microvm else "pci"
        cmd = [self.qemu]
        if self.m.microvm:
            cmd += ["-M", "microvm,isa-serial=on,rtc=on"]
        else:
            cmd += ["-M", "pc"]
        # -S: the machine is created paused; launch lets it run over QMP (create vs start).
        cmd += ["-accel", self.accel.mode, "-m", str(self.memory_mib), "-smp", str(self.vcpus),
                "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-S",
                "-name", self.name,
                "-kernel", str(self.kernel.vmlinuz), "-initrd", str(self.initrd),
                "-append", " ".join(self.kernel_args(argv)),
                "-qmp", f"unix:{self.qmp.path},server=on,wait=off",
                "-chardev", f"file,id=con,path={self.log},append=on", "-serial", "chardev:con",
                "-chardev", f"socket,id=agent,path={self.socket},server=on,wait=off",
                "-device", f"virtio-serial-{dev}",
                "-device", f"virtserialport,chardev=agent,name={AGENT_PORT}",
                "-netdev", f"tap,id=n0,ifname={self.tap.dev},script=no,downscript=no",
                "-device", f"virtio-net-{dev},netdev=n0,mac={self.tap.mac}"]  # fmt: skip
        for d in self.drives:
            # A read-mostly root over a shared cached image: host caching is harmless. The
            # benchmark's data disk: O_DIRECT on the volume, so the guest's direct I/O reaches
            # the host's device rather than host RAM.
            opts = "cache=unsafe,snapshot=on" if d.snapshot else "cache.direct=on,aio=native"
            cmd += ["-drive", f"id={d.id},file={d.path},format=raw,if=none,{opts}",
                    "-device", f"virtio-blk-{dev},drive={d.id}"]  # fmt: skip
        return cmd

    def vmm_configure(self, argv: list[str]) -> None:
        # The monitor answers once QEMU has set up its devices: a created, paused machine.
        self.qmp.wait(LAUNCH_TIMEOUT_S, self._alive)

    def vmm_start(self) -> None:
        self.qmp.execute("cont")

    # -- checkpoint and restore: migration to a file ------------------------------------------
    checkpoint_how = (
        "QMP stop, migrate-set-parameters max-bandwidth=8 GiB/s, migrate to "
        "exec:cat > FILE, QEMU ended; restore: the same command line plus -incoming defer, "
        "QMP migrate-incoming exec:cat FILE, cont (QEMU 7.2 has no file: URI)")

    def vmm_save(self, image_dir: Path) -> None:
        state = image_dir / "vmstate"
        self.qmp.execute("stop")
        # The default migration bandwidth (128 MiB/s in QEMU 7.2) would bound the save.
        self.qmp.execute("migrate-set-parameters", {"max-bandwidth": MIGRATE_BANDWIDTH})
        self.qmp.execute("migrate", {"uri": f"exec:cat > {shlex.quote(str(state))}"})
        self._migrated("the checkpoint", lambda: self.qmp.execute("query-migrate"))

    def vmm_load(self, image_dir: Path) -> None:
        state = image_dir / "vmstate"
        self._spawn([*self.vmm_command(self.argv), "-incoming", "defer"])
        self.qmp.wait(LAUNCH_TIMEOUT_S, self._alive)
        self.qmp.execute("migrate-incoming", {"uri": f"exec:cat {shlex.quote(str(state))}"})
        self._migrated("the restore", lambda: self.qmp.execute("query-migrate"))
        self.qmp.execute("cont")

    def _migrated(self, what: str, query: Callable[[], Any]) -> None:
        """Until query-migrate says completed; failed or cancelled raise with QEMU's error."""
        deadline = time.monotonic() + max(MIGRATE_TIMEOUT_S, self.boot_timeout_s)
        last: Any = None
        while time.monotonic() < deadline:
            if not self._alive():
                raise SandboxError(f"QEMU exited during {what}")
            last = query()
            status = last.get("status") if isinstance(last, dict) else None
            if status == "completed":
                return
            if status in ("failed", "cancelled"):
                raise SandboxError(f"{what} failed: {last.get('error-desc', status)}")
            time.sleep(0.01)
        raise StepTimeout(f"{what} did not complete within the bound (last: {last})")

    def vmm_pause(self) -> None:
        self.qmp.execute("stop")

    def vmm_resume(self) -> None:
        self.qmp.execute("cont")

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
        raise StepTimeout(
            f"systemd did not report a finished boot within {timeout:g} s: {last}",
            self.evidence(last_systemd_analyze=last),
        )


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
