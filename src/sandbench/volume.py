"""The disk benchmark's dedicated volume: a fresh host directory, mounted at /data in a sandbox.

Volumes live under VOLUME_ROOT (/var/lib/sandbench/volumes/<id>), on the host's disk: not
under /tmp or /run, which may be tmpfs (memory, and no O_DIRECT on older kernels). Before a
volume is handed out, the free space of its file system is checked against what the caller
needs (SandboxError naming both numbers), the file system is checked not to be memory-backed,
and O_DIRECT is tried on it. The directory is removed when the context exits, whatever
happened; `leftovers()` lists what a killed run left, for `sandbench clean`.

The volume directory may be a user's disk (SANDBENCH_VOLUME_DIR): it is checked like the
state directory (absolute, no system directory, made by sandbench and marked, or empty when
first used), and a volume is only a directory named like a sandbox id (sb + 10 hex digits)
holding an owner file. A directory without an owner file is never a volume, so clean leaves
it alone (a user's sbackup/ survives).

Kinds: "host-dir" (a directory bind-mounted by the container drivers). A VM driver gives the
guest a virtio disk of `size_bytes` at /data instead; the field is there for it.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from sandbench import paths, procs, settings
from sandbench.errors import SandboxError, UsageError
from sandbench.sandbox_values import Leftover

DEFAULT_ROOT = Path("/var/lib/sandbench/volumes")
VOLUME_ROOT = Path(settings.value("SANDBENCH_VOLUME_DIR") or str(DEFAULT_ROOT))
#: File systems that hold data in memory: a disk benchmark on them measures RAM.
MEMORY_FS = frozenset({"tmpfs", "ramfs", "devtmpfs", "hugetlbfs"})
_ALIGN = 4096
#: Holds the pid of the run using a volume.
OWNER_FILE = ".sandbench-owner"


@dataclass(frozen=True)
class Volume:
    """A volume handed to a sandbox (SandboxSpec.volume = volume.path)."""

    id: str
    #: Host directory (kind "host-dir"), mounted read-write at /data by the drivers.
    path: Path
    kind: str
    #: Bytes the benchmark needs on it; a VM driver sizes its virtio disk from this.
    size_bytes: int
    #: File system type and free bytes found when the volume was created.
    fs_type: str
    free_bytes: int

    def describe(self) -> dict[str, Any]:
        """What results record about the volume."""
        return {
            "kind": self.kind,
            "fs_type": self.fs_type,
            "size_bytes": self.size_bytes,
            "free_bytes": self.free_bytes,
        }


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on path's file system."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fs_type(path: Path) -> str:
    """Type of the file system holding path, from the longest matching mount point."""
    target = os.path.realpath(path)
    best, kind = "", "unknown"
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            mnt = fields[4].replace("\\040", " ")
            # Optional fields end at "-"; the type follows it.
            fstype = fields[fields.index("-") + 1]
            inside = target == mnt or target.startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best):
                best, kind = mnt, fstype
    return kind


def human(n: int) -> str:
    """Bytes as a short binary-unit figure: 10.0 GiB, 256.0 MiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def check_space(path: Path, need_bytes: int) -> int:
    """Free bytes at path; SandboxError naming both numbers when below need_bytes."""
    free = free_bytes(path)
    if free < need_bytes:
        raise SandboxError(
            f"not enough free space for the disk benchmark on {path}: needs {human(need_bytes)} "
            f"({need_bytes} bytes), {human(free)} ({free} bytes) free; free some space, use a "
            f"smaller profile or point SANDBENCH_VOLUME_DIR at a new directory on a larger "
            "disk (sandbench creates it)",
            {"volume_dir": str(path), "need_bytes": need_bytes, "free_bytes": free},
        )
    return free


def check_direct_io(directory: Path) -> None:
    """Write one aligned block with O_DIRECT; SandboxError when the file system refuses."""
    probe = directory / ".odirect-probe"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_DIRECT", 0)
    try:
        fd = os.open(probe, flags, 0o600)
        try:
            buf = mmap.mmap(-1, _ALIGN)  # page aligned, as O_DIRECT wants
            try:
                os.write(fd, buf)
            finally:
                buf.close()
        finally:
            os.close(fd)
    except OSError as exc:
        what = "does not support O_DIRECT" if exc.errno == errno.EINVAL else exc.strerror
        raise SandboxError(
            f"volume directory {directory} ({fs_type(directory)}): {what}; the disk benchmark "
            "needs direct I/O (set SANDBENCH_VOLUME_DIR to a directory on a disk file system)",
            {"volume_dir": str(directory), "fs_type": fs_type(directory), "errno": exc.errno},
        ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            probe.unlink()


@contextlib.contextmanager
def volume(size_bytes: int, need_bytes: int | None = None, root: Path | None = None
           ) -> Iterator[Volume]:
    """A fresh, empty volume for one sandbox session, removed on exit.

    need_bytes (default: size_bytes) is checked against the free space before anything is
    created; a shortfall raises SandboxError naming both numbers.
    """
    if size_bytes <= 0:
        raise ValueError(f"volume size must be positive, not {size_bytes}")
    need = size_bytes if need_bytes is None else need_bytes
    base = root or VOLUME_ROOT
    kind = fs_type(base)
    if kind in MEMORY_FS:
        raise SandboxError(
            f"volume directory {base} is on {kind} (memory): a disk benchmark there measures "
            "RAM; set SANDBENCH_VOLUME_DIR to a directory on a disk file system",
            {"volume_dir": str(base), "fs_type": kind},
        )
    try:
        paths.owned_dir(base, "SANDBENCH_VOLUME_DIR", adopt=base == DEFAULT_ROOT)
    except UsageError as e:
        raise SandboxError(str(e), {"volume_dir": str(base)}) from None
    free = check_space(base, need)
    vid = paths.new_id()
    path = base / vid
    path.mkdir(mode=0o755)
    try:
        # Owner pid: lets `sandbench clean` tell a live run's volume from a leftover.
        (path / OWNER_FILE).write_text(str(os.getpid()))
        check_direct_io(path)
        yield Volume(vid, path, "host-dir", size_bytes, kind, free)
    finally:
        remove(path)


def remove(path: Path) -> None:
    """Remove a volume directory and everything in it."""
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():  # e.g. a file still busy: try once more, loudly
        shutil.rmtree(path)


def leftovers(root: Path | None = None) -> list[Path]:
    """Volumes whose owning process is gone (killed runs), for `sandbench clean`: directories
    named like a sandbox id that hold an owner file. Without `root`, only in VOLUME_ROOT when
    it carries sandbench's mark (or is the built-in default)."""
    if root is None:
        base = VOLUME_ROOT
        if paths.unsafe_dir_reason(base) is not None or not base.is_dir() or not (
            paths.is_marked(base) or base == DEFAULT_ROOT
        ):
            return []
    else:
        base = root
    if not base.is_dir():
        return []
    found = []
    for entry in sorted(base.iterdir()):
        if entry.is_symlink() or not entry.is_dir() or not paths.is_sandbox_id(entry.name):
            continue
        if (entry / OWNER_FILE).is_file() and not _owner_alive(entry):
            found.append(entry)
    return found


def leftover_items() -> list[Leftover]:
    return [Leftover("volume", str(p), partial(remove, p)) for p in leftovers()]


def _owner_alive(path: Path) -> bool:
    """Whether the pid in the owner file runs; an unreadable file counts as alive (never
    remove what cannot be judged)."""
    return procs.pid_file_alive(path / OWNER_FILE)
