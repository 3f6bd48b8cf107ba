"""Firecracker microVMs, for a Firecracker binary and guest kernel the user installed.

Firecracker is not packaged in Debian nor on PyPI: the driver finds `firecracker` on PATH (or
SANDBENCH_FIRECRACKER) and a guest kernel with virtio-mmio, virtio-blk/net and vsock built in
(SANDBENCH_FC_KERNEL, an uncompressed vmlinux). The guest boots the tool's initramfs (vm/
initramfs.py) which mounts a private copy of the image's root disk (virtio-blk), configures eth0
on a tap from vmnet.py, and runs the guest agent as init, serving Firecracker's vsock (the host
connects to `uds_path` and sends `CONNECT <port>\\n`). Firecracker needs working KVM.

Each VM is started with `firecracker --api-sock` and set up over the API with the objects of
the documented --config-file JSON (vm_config(): boot-source, drives, network-interfaces,
machine-config, vsock; fc_api.requests_for()); launch marks "created" once the API has accepted them
and returns after InstanceStart. Freeze is PATCH /vm Paused/Resumed. The lifecycle shared
with QEMU is vm/sandbox.py.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from sandbench import images, settings
from sandbench.binaries import version_of
from sandbench.environments.base import Availability, SandboxSpec, run_cmd
from sandbench.errors import SandboxError
from sandbench.vm import disk, initramfs, kernel
from sandbench.vm.fc_api import (
    FirecrackerApi,
    requests_for,
    snapshot_create_requests,
    snapshot_load_request,
)
from sandbench.vm.kvm import kvm_unavailable
from sandbench.vm.sandbox import LAUNCH_TIMEOUT_S, AgentVmEnvironment, AgentVmSandbox, Drive

VSOCK_PORT = 52
GUEST_CID = 3
MEMORY_MIB = 256
BOOT_TIMEOUT_S = 60.0
#: Firecracker's documented boot arguments (getting-started.md), then the tool's.
BASE_BOOT_ARGS = ["console=ttyS0", "reboot=k", "panic=1", "pci=off"]


def firecracker_path() -> str | None:
    env = settings.value("SANDBENCH_FIRECRACKER")
    if env:
        return env if os.access(env, os.X_OK) else None
    return shutil.which("firecracker")


def guest_kernel() -> Path | None:
    env = settings.value("SANDBENCH_FC_KERNEL")
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


class FirecrackerEnvironment(AgentVmEnvironment):
    name = "firecracker"
    paper_lineage = "firecracker"
    description = "Firecracker microVM (user-installed binary and kernel), vsock agent, tap"
    default_memory_mib = MEMORY_MIB
    default_boot_timeout_s = BOOT_TIMEOUT_S
    resource_flags = "machine-config vcpu_count, mem_size_mib"

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
        if not Path("/dev/net/tun").exists():
            return Availability.no("/dev/net/tun is absent: the VM's tap network needs it")
        why = kvm_unavailable("Firecracker")
        return Availability.no(why) if why else Availability.yes()

    def facts(self) -> dict[str, Any]:
        fc = firecracker_path()
        k = guest_kernel()
        return {
            **self.vm_facts(),
            "binary": fc,
            "version": version_of(fc) if fc else None,
            "driver": "firecracker --api-sock (configured over the API, then InstanceStart)",
            "guest_kernel": str(k) if k else None,
            "agent": "vsock",
            "data_disk_cache": "Firecracker's virtio-block (host page cache, no O_DIRECT)",
            "accel": "kvm",
        }

    def restore_unavailable(self, image: str) -> str:
        # Its drives are files of the VM's own (a private copy of the root per VM, kept in the
        # sandbox's directory across a snapshot), so a snapshot restores consistently.
        return ""

    def prepare(self, spec: SandboxSpec) -> FirecrackerSandbox:
        return FirecrackerSandbox(self, spec)


class FirecrackerSandbox(AgentVmSandbox):
    vmm = "Firecracker"
    #: Firecracker opens drive files without O_DIRECT (its block device goes through the host
    #: page cache; direct I/O is not a drive option of the released API).
    direct_io = False
    direct_io_note = "Firecracker's virtio-block serves the disk through the host page cache"

    def __init__(self, env: FirecrackerEnvironment, spec: SandboxSpec) -> None:
        super().__init__(env, spec, agent_socket="vsock.sock", vsock_port=VSOCK_PORT)
        self.vsock = self.socket
        self.api = FirecrackerApi(self.dir / "api.sock")

    def prepare_vmm(self) -> None:
        fc, k = firecracker_path(), guest_kernel()
        if fc is None or k is None:
            raise SandboxError(self.env.available().reason)
        self.fc, self.kernel_image = fc, k
        self.initrd = initramfs.ensure(kernel.ensure())
        if self.spec.image != "minimal":
            # Firecracker has no copy-on-write drives: a private sparse copy per VM.
            root = self.dir / "root.ext4"
            src = disk.root_disk(self.spec.image)
            run_cmd(["cp", "--reflink=auto", "--sparse=always", str(src), str(root)], timeout=300)
            self.drives.append(Drive("rootfs", root, "root"))
        else:
            images.ensure("minimal")

    def vmm_kernel_args(self) -> list[str]:
        return [*BASE_BOOT_ARGS, f"sandbench.vsock={VSOCK_PORT}"]

    def config(self, argv: list[str]) -> dict[str, Any]:
        assert self.tap is not None
        return vm_config(
            kernel_image=self.kernel_image,
            initrd=self.initrd,
            boot_args=self.kernel_args(argv),
            drives=[(d.id, d.path, False) for d in self.drives],
            tap=self.tap.dev,
            mac=self.tap.mac,
            vcpus=self.vcpus,
            memory_mib=self.memory_mib,
            vsock_uds=self.vsock,
        )

    def vmm_command(self, argv: list[str]) -> list[str]:
        return [self.fc, "--api-sock", str(self.api.path)]

    def vmm_configure(self, argv: list[str]) -> None:
        cfg = self.config(argv)
        # The same objects as a --config-file: kept for a person reading a failure.
        (self.dir / "vm.json").write_text(json.dumps(cfg, indent=2))
        self.api.wait(LAUNCH_TIMEOUT_S, self._alive)
        for method, url, body in requests_for(cfg):
            self.api.call(method, url, body)

    def vmm_start(self) -> None:
        self.api.call("PUT", "/actions", {"action_type": "InstanceStart"})

    # -- checkpoint and restore: Firecracker's full snapshot ---------------------------------
    checkpoint_how = ("PATCH /vm Paused, PUT /snapshot/create Full (state + memory files), "
                      "process ended; restore: a fresh firecracker --api-sock, PUT "
                      "/snapshot/load with a File memory backend and resume_vm")

    def vmm_save(self, image_dir: Path) -> None:
        for method, url, body in snapshot_create_requests(image_dir):
            self.api.call(method, url, body)

    def vmm_load(self, image_dir: Path) -> None:
        # The snapshot names the vsock's socket path; the old process's file must be gone.
        self.vsock.unlink(missing_ok=True)
        self.api.path.unlink(missing_ok=True)
        self._spawn(self.vmm_command(self.argv))
        self.api.wait(LAUNCH_TIMEOUT_S, self._alive)
        self.api.call(*snapshot_load_request(image_dir))

    def vmm_pause(self) -> None:
        self.api.call("PATCH", "/vm", {"state": "Paused"})

    def vmm_resume(self) -> None:
        self.api.call("PATCH", "/vm", {"state": "Resumed"})
