"""The guest initramfs: the minimal image's files (busybox-static, /sb helpers), the guest
agent, /init (helpers/vminit.sh) and the virtio modules with everything they depend on, as a
gzip'd cpio (newc) archive written here without a cpio binary. Cached by the hash of inputs.

The same archive serves both boots: with no root disk the minimal image runs from it (the
agent is PID 1 and starts the first process); with `sandbench.root=vda` /init mounts the disk
and switches to it (agent or systemd as PID 1).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
from importlib import resources
from pathlib import Path

from sandbench import images, paths
from sandbench.errors import SandboxError
from sandbench.images.base import gcc_version
from sandbench.vm.kernel import Kernel

#: What a guest needs: virtio transports (MMIO for microvm/Firecracker, PCI for pc), block,
#: net (with failover) and console (virtio-serial, the agent's channel), vsock for Firecracker.
MODULES = [
    "virtio",
    "virtio_ring",
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "ext4",
    "crc32c_generic",
    "vmw_vsock_virtio_transport",
]
RECIPE = 3


def agent_source() -> str:
    return resources.files("sandbench.helpers").joinpath("agent.c").read_text()


def init_script() -> str:
    return resources.files("sandbench.helpers").joinpath("vminit.sh").read_text()


def build_agent(dest: Path) -> None:
    """Compile the guest agent as a static binary with the host's gcc."""
    src = dest.parent / ".agent.c"
    src.write_text(agent_source())
    try:
        cp = subprocess.run(
            ["gcc", "-static", "-O2", "-Wall", "-o", str(dest), str(src)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        src.unlink()
    if cp.returncode != 0:
        raise SandboxError(f"gcc failed for the guest agent: {cp.stderr.strip()[-400:]}")


# -- modules --------------------------------------------------------------------------------
def module_index(modules_dir: Path) -> dict[str, Path]:
    """Module name (underscores) -> .ko path."""
    out: dict[str, Path] = {}
    for ko in (modules_dir / "kernel").rglob("*.ko"):
        out[ko.name[:-3].replace("-", "_")] = ko
    return out


def module_depends(ko: Path) -> list[str]:
    """The `depends=` field of the module's .modinfo section."""
    data = ko.read_bytes()
    i = data.find(b"\0depends=")
    if i < 0:
        return []
    end = data.index(b"\0", i + 1)
    value = data[i + len(b"\0depends=") : end].decode()
    return [d.replace("-", "_") for d in value.split(",") if d]


def resolve_modules(modules_dir: Path, wanted: list[str]) -> list[tuple[str, Path]]:
    """Wanted modules that exist as .ko files (built-in ones are skipped) and their
    dependencies, in an order where each module follows what it depends on."""
    index = module_index(modules_dir)
    order: list[tuple[str, Path]] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in seen:
            return
        if name in chain:
            raise SandboxError(f"module dependency cycle: {' -> '.join((*chain, name))}")
        ko = index.get(name)
        if ko is None:
            return  # built into the kernel
        for dep in module_depends(ko):
            visit(dep, (*chain, name))
        seen.add(name)
        order.append((name, ko))

    for name in wanted:
        visit(name, ())
    return order


# -- cpio -----------------------------------------------------------------------------------
class CpioWriter:
    """A cpio "newc" archive (the format the kernel unpacks), entries owned by root."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1
        self.names: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes, mtime: int = 0) -> None:
        name = name.strip("/") or "."
        if name in self.names:
            return
        self.names.add(name)
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(
            f"{v:08x}"
            for v in (self.ino, mode, 0, 0, 1, mtime, len(data), 0, 0, 0, 0, len(nb), 0)
        )
        self.ino += 1
        self.buf.write(hdr.encode() + nb)
        self._pad()
        self.buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self.buf.write(b"\0" * (-self.buf.tell() % 4))

    def dir(self, name: str, perm: int = 0o755) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts)):
            self._entry("/".join(parts[:i]), stat.S_IFDIR | 0o755, b"")
        self._entry(name, stat.S_IFDIR | perm, b"")

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        parent = name.strip("/").rpartition("/")[0]
        if parent:
            self.dir(parent)
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def tree(self, root: Path, prefix: str = "") -> None:
        """A directory's contents (files, directories, symlinks), sorted for reproducibility."""
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel = os.path.relpath(dirpath, root)
            base = prefix if rel == "." else f"{prefix}/{rel}".strip("/")
            if base:
                self.dir(base, stat.S_IMODE(os.lstat(dirpath).st_mode))
            for entry in sorted(filenames + [d for d in dirnames if Path(dirpath, d).is_symlink()]):
                p = Path(dirpath, entry)
                name = f"{base}/{entry}".strip("/")
                st = os.lstat(p)
                if stat.S_ISLNK(st.st_mode):
                    self.symlink(name, os.readlink(p))
                elif stat.S_ISREG(st.st_mode):
                    self.file(name, p.read_bytes(), stat.S_IMODE(st.st_mode))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0, b"")
        self.names.discard("TRAILER!!!")
        return self.buf.getvalue()


# -- the archive ----------------------------------------------------------------------------
def key(kernel: Kernel, image_key: str) -> str:
    blob = json.dumps(
        {
            "recipe": RECIPE,
            "kernel": kernel.package,
            "image": image_key,
            "agent": agent_source(),
            "init": init_script(),
            "modules": MODULES,
            "gcc": gcc_version(),
        },
        sort_keys=True,
    ).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def ensure(kernel: Kernel) -> Path:
    """Path of the cached initramfs for this kernel (built first when missing)."""
    img = images.ensure("minimal")
    k = key(kernel, img.key)
    final = paths.cache("initramfs") / f"initramfs-{k}.cpio.gz"
    if final.exists():
        return final
    tmpdir = paths.cache("initramfs") / f".tmp-{k}-{os.getpid()}"
    shutil.rmtree(tmpdir, ignore_errors=True)
    tmpdir.mkdir(parents=True)
    try:
        build_agent(tmpdir / "agent")
        w = CpioWriter()
        w.tree(img.rootfs)
        for d in ("proc", "sys", "dev", "run", "tmp", "newroot", "data", "lib/modules"):
            w.dir(d)
        w.file("init", init_script().encode(), 0o755)
        w.file("sb/agent", (tmpdir / "agent").read_bytes(), 0o755)
        mods = resolve_modules(kernel.modules_dir, MODULES)
        for name, ko in mods:
            w.file(f"lib/modules/{name}.ko", ko.read_bytes())
        w.file("etc/sandbench/modules", ("\n".join(n for n, _ in mods) + "\n").encode())
        data = gzip.compress(w.finish(), compresslevel=6, mtime=0)
        (tmpdir / "out").write_bytes(data)
        os.rename(tmpdir / "out", final)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return final


def agent_binary() -> Path:
    """A cached static build of the agent, for root disks (keyed by its source)."""
    k = hashlib.sha256((agent_source() + gcc_version()).encode()).hexdigest()[:12]
    final = paths.cache("initramfs") / f"agent-{k}"
    if not final.exists():
        tmp = final.with_name(f".tmp-agent-{k}-{os.getpid()}")
        try:
            build_agent(tmp)
            os.rename(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
    return final
