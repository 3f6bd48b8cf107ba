"""Disks for VMs, made without loop mounts (`mkfs.ext4 -d DIR`):

- the root disk of an image: the image's rootfs (hard-linked copy, so the cached image is never
  written) plus the guest agent and two systemd units (agent, startup probe), as a raw ext4
  file cached per image and agent. VMs open it with `snapshot=on` (copy-on-write to a deleted
  temporary file), so no sandbox ever writes the cached file;
- a fresh sparse ext4 data disk per sandbox (the benchmark volume at /data): a raw image file
  on the volume's own file system, opened by QEMU with O_DIRECT; removed at stop.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from sandbench import images, paths, settings
from sandbench.errors import SandboxError
from sandbench.vm.initramfs import agent_binary, agent_source

RECIPE = 2
MKFS_TIMEOUT_S = 600.0
#: Size of the data disk when the spec does not say (sparse).
DEFAULT_DATA_GIB = 4

AGENT_UNIT = """\
[Unit]
Description=sandbench guest agent (virtio-serial port sandbench.agent)
DefaultDependencies=no
After=systemd-udevd.service local-fs.target

[Service]
ExecStart=/sb/agent
Restart=always
RestartSec=200ms

[Install]
WantedBy=sysinit.target
"""

PROBE_UNIT = """\
[Unit]
Description=sandbench first process (the startup probe), from sandbench.argv on the cmdline
ConditionKernelCommandLine=sandbench.argv

[Service]
ExecStart=/sb/agent --run-argv
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
"""

#: Services the image installs and enables that benchmarks start themselves when they need them
#: (not at boot: they would slow the boot and hold ports the benchmarks use).
DISABLED_AT_BOOT = [
    "mariadb.service",
    "mariadb.socket",
    "nginx.service",
    "e2scrub_reap.service",
]


def _mkfs(argv: list[str]) -> None:
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=MKFS_TIMEOUT_S)
    except FileNotFoundError:
        raise SandboxError("mkfs.ext4 not found; install Debian package e2fsprogs") from None
    except subprocess.TimeoutExpired:
        raise SandboxError(f"mkfs.ext4 did not finish within {MKFS_TIMEOUT_S:g} s") from None
    if cp.returncode != 0:
        raise SandboxError(f"mkfs.ext4 failed: {(cp.stderr or cp.stdout).strip()[-400:]}")


def _tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                continue
    return total


def _put(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file in the hard-linked copy without touching the original inode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.write_bytes(data)
    os.chmod(path, mode)


def _link(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target)


def root_key(image_key: str) -> str:
    parts = [str(RECIPE), image_key, agent_source(), AGENT_UNIT, PROBE_UNIT, *DISABLED_AT_BOOT]
    blob = "\0".join(parts)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def root_disk(image_name: str) -> Path:
    """The cached raw ext4 root disk of an image (built first when missing)."""
    img = images.ensure(image_name)
    k = root_key(img.key)
    final = paths.cache("disks") / f"{image_name}-{k}.ext4"
    if final.exists():
        return final
    agent = agent_binary()
    tmp = paths.cache("disks") / f".tmp-{image_name}-{k}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        tree = tmp / "tree"
        # Hard links: a copy in seconds that shares the cached image's inodes. Only new files
        # are added and links removed below, so the cached image is left as it was.
        cp = subprocess.run(
            ["cp", "-al", str(img.rootfs), str(tree)], capture_output=True, text=True, timeout=300
        )
        if cp.returncode != 0:
            raise SandboxError(f"cp -al of the image failed: {cp.stderr.strip()[-300:]}")
        _put(tree / "sb" / "agent", agent.read_bytes(), 0o755)
        units = tree / "etc" / "systemd" / "system"
        _put(units / "sandbench-agent.service", AGENT_UNIT.encode())
        _put(units / "sandbench-probe.service", PROBE_UNIT.encode())
        _link(units / "sysinit.target.wants" / "sandbench-agent.service",
              "/etc/systemd/system/sandbench-agent.service")
        _link(units / "multi-user.target.wants" / "sandbench-probe.service",
              "/etc/systemd/system/sandbench-probe.service")
        for svc in DISABLED_AT_BOOT:
            for wants in units.glob("*.wants"):
                if (wants / svc).is_symlink():
                    (wants / svc).unlink()
        _put(tree / "etc" / "fstab", b"# root is mounted by the sandbench initramfs\n")
        (tree / "data").mkdir(exist_ok=True)
        size = int(_tree_bytes(tree) * 1.3) + (384 << 20)
        size = (size + (1 << 20) - 1) & ~((1 << 20) - 1)
        out = tmp / "disk.ext4"
        _mkfs(["mkfs.ext4", "-q", "-F", "-L", "sbroot", "-m", "0", "-d", str(tree), str(out),
               str(size // 1024) + "k"])
        os.rename(out, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def data_disk(path: Path, size_mib: int) -> Path:
    """A fresh sparse ext4 file system of size_mib in a file (the VM's /data)."""
    path.unlink(missing_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(size_mib << 20)
    try:
        _mkfs(["mkfs.ext4", "-q", "-F", "-L", "sbdata", "-m", "0",
               "-E", "lazy_itable_init=1,lazy_journal_init=1", str(path)])
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def volume_disk(volume: Path, sandbox_id: str, size_mib: int | None) -> Path:
    """The VM's data disk: a raw image file ON the benchmark volume (the host file system the
    benchmark chose, never the tmpfs state directory), size_mib big (default DEFAULT_DATA_GIB
    or SANDBENCH_VM_DATA_GIB). Sparse, so the check is against what the guest may write."""
    if size_mib is None:
        size_mib = int(settings.value("SANDBENCH_VM_DATA_GIB") or DEFAULT_DATA_GIB) << 10
    st = os.statvfs(volume)
    free_mib = st.f_bavail * st.f_frsize >> 20
    if size_mib > free_mib:
        raise SandboxError(
            f"the VM data disk needs {size_mib} MiB on {volume} but its file system has "
            f"{free_mib} MiB free",
            {"volume": str(volume), "need_mib": size_mib, "free_mib": free_mib},
        )
    return data_disk(volume / f"{sandbox_id}.raw", size_mib)
