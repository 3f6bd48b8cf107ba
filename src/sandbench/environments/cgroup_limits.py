"""Read back the CPU and memory limits a process actually runs under, from its cgroups.

What a runtime was asked for and what the kernel enforces can differ (a runtime may ignore a
field, a daemon may round); Sandbox.limits_enforced() reports what the cgroup files say.
Works on cgroup v1, v2 and hybrid hosts (v1 controllers plus /sys/fs/cgroup/unified).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

CGROUP_ROOT = Path("/sys/fs/cgroup")
_UNLIMITED_V1 = 1 << 62  # memory.limit_in_bytes reads back as a page-rounded huge value
T = TypeVar("T", int, float)


def _controller_dirs(pid: int) -> dict[str, Path]:
    """controller name ("cpu", "memory", or "" for v2) -> the process's cgroup directory."""
    dirs: dict[str, Path] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hid, ctrls, rel = line.split(":", 2)
        rel = rel.lstrip("/")
        if hid == "0" and ctrls == "":
            v2 = CGROUP_ROOT / "unified"
            base = v2 if (v2 / "cgroup.controllers").exists() else CGROUP_ROOT
            dirs[""] = base / rel
            continue
        for c in ctrls.split(","):
            for cand in (CGROUP_ROOT / ctrls, CGROUP_ROOT / c):
                if cand.is_dir():
                    dirs[c] = cand / rel
                    break
    return dirs


def _read(p: Path) -> str | None:
    try:
        return p.read_text().strip()
    except OSError:
        return None


def _up(d: Path) -> list[Path]:
    """d and its ancestors below the hierarchy's mount point (/sys/fs/cgroup/<ctrl>)."""
    out = [d]
    while d.parent != d and (d.parent / "cgroup.procs").exists():
        d = d.parent
        out.append(d)
    return out


def _cpus_v1(d: Path) -> float | None:
    quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
    return round(int(quota) / int(period), 3) if quota and period and int(quota) > 0 else None


def _mem_v1(d: Path) -> int | None:
    lim = _read(d / "memory.limit_in_bytes")
    return int(lim) // (1024 * 1024) if lim and int(lim) < _UNLIMITED_V1 else None


def _cpus_v2(d: Path) -> float | None:
    cpu_max = (_read(d / "cpu.max") or "max").split()
    return round(int(cpu_max[0]) / int(cpu_max[1]), 3) \
        if cpu_max[0] != "max" and len(cpu_max) == 2 else None


def _mem_v2(d: Path) -> int | None:
    mem_max = _read(d / "memory.max")
    return int(mem_max) // (1024 * 1024) if mem_max and mem_max != "max" else None


def _tightest(d: Path, read: Callable[[Path], T | None]) -> tuple[T | None, Path]:
    """The lowest limit on d or an ancestor (the kernel enforces every level: LXC and
    systemd-nspawn put the workload in a child of the cgroup that holds the limits), and
    the cgroup it is set on (d itself when none is)."""
    best: tuple[T | None, Path] = (None, d)
    for c in _up(d):
        v = read(c)
        if v is not None and (best[0] is None or v < best[0]):
            best = (v, c)
    return best


def limits_of(pid: int) -> dict[str, Any]:
    """{"cpus", "memory_mib", "cgroup_cpu", "cgroup_memory", "cgroup_version"} as enforced for
    pid, the tightest over its cgroup and their ancestors; a limit not set reads None, and
    cgroup_* name where the limit is set (the process's own cgroup when none is)."""
    dirs = _controller_dirs(pid)
    out: dict[str, Any] = {"cpus": None, "memory_mib": None}
    cpu, mem = dirs.get("cpu"), dirs.get("memory")
    if cpu is not None or mem is not None:
        out["cgroup_version"] = 1
        if cpu is not None:
            out["cpus"], where = _tightest(cpu, _cpus_v1)
            out["cgroup_cpu"] = str(where)
        if mem is not None:
            out["memory_mib"], where = _tightest(mem, _mem_v1)
            out["cgroup_memory"] = str(where)
        return out
    v2 = dirs.get("")
    if v2 is not None:
        out["cgroup_version"] = 2
        out["cpus"], cpu_at = _tightest(v2, _cpus_v2)
        out["memory_mib"], mem_at = _tightest(v2, _mem_v2)
        out["cgroup_cpu"], out["cgroup_memory"] = str(cpu_at), str(mem_at)
    return out
