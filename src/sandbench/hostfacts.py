"""Facts about the machine, recorded with every result (pyperf's habit)."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

import psutil

from sandbench import __version__


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def host_facts() -> dict[str, Any]:
    flags = cpu_flags()
    os_release = {}
    for line in _read("/etc/os-release").splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            os_release[k] = v.strip('"')
    return {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "os": os_release.get("PRETTY_NAME", "unknown"),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "memory_mib": psutil.virtual_memory().total // (1024 * 1024),
        # The host itself is a VM when the CPU reports the hypervisor flag: then every VM we
        # start is nested and every container number includes the outer hypervisor's cost.
        "virtualized": "hypervisor" in flags,
        "hypervisor": _read("/sys/class/dmi/id/sys_vendor") or None,
        "cpu_virt_extensions": bool(flags & {"vmx", "svm"}),
        "dev_kvm": Path("/dev/kvm").exists(),
        "cgroup": "v2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "v1/hybrid",
        "python": sys.version.split()[0],
        "sandbench": __version__,
        "boot_id": _read("/proc/sys/kernel/random/boot_id"),
        "machine_id": _read("/etc/machine-id") or None,
    }
