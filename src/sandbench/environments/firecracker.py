"""Firecracker microVMs, for a Firecracker binary and guest kernel the user installed.

Firecracker is not packaged in Debian nor on PyPI: the driver finds `firecracker` on PATH (or
SANDBENCH_FIRECRACKER) and a guest kernel with virtio-mmio, virtio-blk/net and vsock built in
(SANDBENCH_FC_KERNEL, an uncompressed vmlinux). Each VM is started with
`firecracker --no-api --config-file vm.json` (the documented JSON: boot-source, drives,
network-interfaces, machine-config, vsock). The guest boots the tool's initramfs (vm/
initramfs.py) which mounts a private copy of the image's root disk (virtio-blk), configures eth0
on a tap from vmnet.py, and runs the guest agent as init, serving Firecracker's vsock (the host
connects to `uds_path` and sends `CONNECT <port>\\n`). Firecracker needs working KVM.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import time
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
from sandbench.errors import SandboxError
from sandbench.vm import disk, initramfs, kernel
from sandbench.vm.agent_client import AgentClient, encode_argv
from sandbench.vm.kvm import accel

VSOCK_PORT = 52
GUEST_CID = 3
MEMORY_MIB = 256
BOOT_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
#: Firecracker's documented boot arguments (getting-started.md), then the tool's.
BASE_BOOT_ARGS = ["console=ttyS0", "reboot=k", "panic=1", "pci=off"]


def firecracker_path() -> str | None:
    env = os.environ.get("SANDBENCH_FIRECRACKER")
    if env:
        return env if os.access(env, os.X_OK) else None
    return shutil.which("firecracker")


def guest_kernel() -> Path | None:
    env = os.environ.get("SANDBENCH_FC_KERNEL")
    return Path(env) if env and Path(env).is_file() else None


def vm_config(
    *,
    kernel_image: Path,
    initrd: Path | None,
    boot_args: list[str],
    drives: list[tuple[str, Path, bool]],
    tap: str,
    mac: str,
    vcpus: int,
    memory_mib: int,
    vsock_uds: Path,
    guest_cid: int = GUEST_CID,
) -> dict[str, Any]:
    """The --config-file JSON (same objects as the API's PUT bodies). drives: (id, path,
    read_only); the first is the root device."""
    boot: dict[str, Any] = {
        "kernel_image_path": str(kernel_image),
        "boot_args": " ".join(boot_args),
    }
    if initrd is not None:
        boot["initrd_path"] = str(initrd)
    return {
        "boot-source": boot,
        "drives": [
            {
                "drive_id": drive_id,
                "path_on_host": str(path),
                "is_root_device": False,  # the initramfs mounts the root itself
                "is_read_only": ro,
            }
            for drive_id, path, ro in drives
        ],
        "network-interfaces": [{"iface_id": "eth0", "host_dev_name": tap, "guest_mac": mac}],
        "machine-config": {"vcpu_count": vcpus, "mem_size_mib": memory_mib, "smt": False},
        "vsock": {"guest_cid": guest_cid, "uds_path": str(vsock_uds)},
    }


class FirecrackerEnvironment(Environment):
    name = "firecracker"
    description = "Firecracker microVM (user-installed binary and kernel), vsock agent, tap"
    family = "vm"
    boot_timeout_s = BOOT_TIMEOUT_S

    def available(self) -> Availability:
        fc = firecracker_path()
        if fc is None:
            return Availability.no(
                "firecracker not installed (not packaged in Debian or on PyPI): put the release "
                "binary on PATH or set SANDBENCH_FIRECRACKER=/path/to/firecracker"
            )
        if guest_kernel() is None:
            return Availability.no(
                "no Firecracker guest kernel: set SANDBENCH_FC_KERNEL to an uncompressed vmlinux "
                "with virtio-mmio, virtio-blk, virtio-net and vsock built in (Debian's kernels "
                "build them as modules)"
            )
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            return Availability.no("Firecracker needs /dev/kvm (absent or not accessible)")
        if not Path("/dev/net/tun").exists():
            return Availability.no("/dev/net/tun is absent: the VM's tap network needs it")
        try:
            a = accel()
        except (SandboxError, RuntimeError) as e:
            return Availability.no(f"cannot probe KVM: {e}")
        if a.mode != "kvm":
            return Availability.no(f"Firecracker runs only on KVM, unusable here: {a.reason}")
        return Availability.yes()

    def facts(self) -> dict[str, Any]:
        fc = firecracker_path()
        k = guest_kernel()
        return {
            "binary": fc,
            "version": version_of(fc) if fc else None,
            "driver": "firecracker --no-api --config-file",
            "guest_kernel": str(k) if k else None,
            "guest_memory_mib": MEMORY_MIB,
            "vcpus": 1,
            "network": "tap",
            "agent": "vsock",
            "accel": "kvm",
        }

    def prepare(self, spec: SandboxSpec) -> FirecrackerSandbox:
        return FirecrackerSandbox(self, spec)


class FirecrackerSandbox(Sandbox):
    def __init__(self, env: FirecrackerEnvironment, spec: SandboxSpec) -> None:
        super().__init__(paths.new_id(), env.name)
        self.env = env
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self.tap: vmnet.Tap | None = None
        self.network_path = "tap"
        self.dir = paths.state("vm", self.name)
        self.vsock = self.dir / "vsock.sock"
        self.log = spec.log or (self.dir / "console.log")
        self.agent = AgentClient(self.vsock, alive=self._alive, vsock_port=VSOCK_PORT)
        self.memory_mib = spec.limits.memory_mib or MEMORY_MIB
        self.vcpus = max(1, math.ceil(spec.limits.cpus)) if spec.limits.cpus else 1
        self.drives: list[tuple[str, Path, bool]] = []
        try:
            fc, k = firecracker_path(), guest_kernel()
            if fc is None or k is None:
                raise SandboxError(env.available().reason)
            self.fc, self.kernel_image = fc, k
            self.initrd = initramfs.ensure(kernel.ensure())
            if spec.image != "minimal":
                # Firecracker has no copy-on-write drives: a private sparse copy per VM.
                root = self.dir / "root.ext4"
                subprocess.run(
                    ["cp", "--reflink=auto", "--sparse=always", str(disk.root_disk(spec.image)),
                     str(root)],
                    check=True, capture_output=True, timeout=300,
                )  # fmt: skip
                self.drives.append(("rootfs", root, False))
            else:
                images.ensure("minimal")
            if spec.volume is not None:
                self.drives.append(("data", disk.data_disk(self.dir / "data.ext4"), False))
            t0 = time.perf_counter_ns()
            self.tap = vmnet.create(self.name)
            self.prepare_time_s = (time.perf_counter_ns() - t0) / 1e9
        except BaseException:
            self._stop()
            raise
        self._address = self.tap.guest_ip
        self.host_address = self.tap.host_ip

    def boot_args(self, argv: list[str]) -> list[str]:
        assert self.tap is not None
        args = [*BASE_BOOT_ARGS, "quiet", *self.tap.kernel_args()]
        args += [f"sandbench.hostname={self.name}", f"sandbench.vsock={VSOCK_PORT}"]
        names = [d[0] for d in self.drives]
        if "rootfs" in names:
            args += ["sandbench.root=vda", "sandbench.init=agent"]
        if "data" in names:
            args.append(f"sandbench.data=vd{'abc'[names.index('data')]}")
        args.append(f"sandbench.argv={encode_argv(argv)}")
        return args

    def config(self, argv: list[str]) -> dict[str, Any]:
        assert self.tap is not None
        return vm_config(
            kernel_image=self.kernel_image,
            initrd=self.initrd,
            boot_args=self.boot_args(argv),
            drives=self.drives,
            tap=self.tap.dev,
            mac=self.tap.mac,
            vcpus=self.vcpus,
            memory_mib=self.memory_mib,
            vsock_uds=self.vsock,
        )

    def _alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def launch(self, argv: list[str] | None = None) -> None:
        cfg = self.dir / "vm.json"
        cfg.write_text(json.dumps(self.config(argv or self.spec.argv or IDLE_ARGV), indent=2))
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [self.fc, "--no-api", "--config-file", str(cfg)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            )  # fmt: skip
        time.sleep(0.05)
        if self.proc.poll() is not None:
            raise SandboxError(f"firecracker exited {self.proc.returncode}: {tail_file(self.log)}")

    def wait_ready(self, timeout: float = BOOT_TIMEOUT_S) -> float:
        return self.agent.wait_ready(timeout)

    def exec(self, argv: list[str], timeout: float = 60.0) -> Completed:
        self.wait_ready()
        return self.agent.run(argv, self.spec.env, timeout)

    def host_pids(self) -> list[int]:
        return [self.proc.pid] if self._alive() and self.proc is not None else []

    def _stop(self) -> None:
        self.agent.close()
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        if self.tap is not None:
            vmnet.destroy(self.tap)
        shutil.rmtree(self.dir, ignore_errors=True)
