"""Read back the CPU and memory limits a process actually runs under, from its cgroups.

What a runtime was asked for and what the kernel enforces can differ (a runtime may ignore a
field, a daemon may round); Sandbox.limits_enforced() reports what the cgroup files say.
Works on cgroup v1, v2 and hybrid hosts (v1 controllers plus /sys/fs/cgroup/unified).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")
_UNLIMITED_V1 = 1 << 62  # memory.limit_in_bytes reads back as a page-rounded huge value


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


def limits_of(pid: int) -> dict[str, Any]:
    """{"cpus", "memory_mib", "cgroup_cpu", "cgroup_memory", "cgroup_version"} as enforced for
    pid; a limit that is not set reads None."""
    dirs = _controller_dirs(pid)
    out: dict[str, Any] = {"cpus": None, "memory_mib": None}
    cpu, mem = dirs.get("cpu"), dirs.get("memory")
    if cpu is not None or mem is not None:
        out["cgroup_version"] = 1
        if cpu is not None:
            out["cgroup_cpu"] = str(cpu)
            quota, period = _read(cpu / "cpu.cfs_quota_us"), _read(cpu / "cpu.cfs_period_us")
            if quota and period and int(quota) > 0:
                out["cpus"] = round(int(quota) / int(period), 3)
        if mem is not None:
            out["cgroup_memory"] = str(mem)
            lim = _read(mem / "memory.limit_in_bytes")
            if lim and int(lim) < _UNLIMITED_V1:
                out["memory_mib"] = int(lim) // (1024 * 1024)
        return out
    v2 = dirs.get("")
    if v2 is not None:
        out["cgroup_version"] = 2
        out["cgroup_cpu"] = out["cgroup_memory"] = str(v2)
        cpu_max = (_read(v2 / "cpu.max") or "max").split()
        if cpu_max[0] != "max" and len(cpu_max) == 2:
            out["cpus"] = round(int(cpu_max[0]) / int(cpu_max[1]), 3)
        mem_max = _read(v2 / "memory.max")
        if mem_max and mem_max != "max":
            out["memory_mib"] = int(mem_max) // (1024 * 1024)
    return out
