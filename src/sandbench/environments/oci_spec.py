"""OCI runtime spec (config.json) for a sandbox bundle.

Modelled on `runc spec`, with Docker's default capability set so that the same workloads
(nginx, MariaDB drop privileges) run in every environment and the comparison with Docker is
like for like. No host mounts except the benchmark volume at /data.
"""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

from sandbench.environments.base import Limits

# Docker's default capabilities (moby oci/caps/defaults.go).
DEFAULT_CAPS = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]

MASKED = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
]
READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CPU_PERIOD_US = 100_000


#: Open files every sandbox gets (the same in runc/crun bundles, Docker and Podman): enough
#: for the paper's 1,000 wrk connections to nginx.
NOFILE = 20000


def nofile_limit() -> int:
    """NOFILE, or the host's hard limit where that is lower: raising a hard limit needs
    CAP_SYS_RESOURCE, which a root in a container may lack."""
    return min(NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1])


def build(
    *,
    rootfs: Path,
    args: list[str],
    env: dict[str, str],
    netns_path: str | None,
    cgroups_path: str | None,
    limits: Limits,
    volume: Path | None,
    hostname: str,
    seccomp: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """config.json for one sandbox; `seccomp` is a resolved linux.seccomp object (see
    sandbench.seccomp) or None for no filter."""
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        # The root file system is shared read-only between sandboxes; these are private.
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]},
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"]},
    ]
    if volume is not None:
        mounts.append(
            {
                "destination": "/data",
                "type": "bind",
                "source": str(volume),
                "options": ["rbind", "rw"],
            }
        )
    namespaces: list[dict[str, str]] = [
        {"type": "pid"},
        {"type": "ipc"},
        {"type": "uts"},
        {"type": "mount"},
    ]
    if netns_path is not None:
        namespaces.append({"type": "network", "path": netns_path})
    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if limits.cpus is not None:
        resources["cpu"] = {"quota": int(limits.cpus * CPU_PERIOD_US), "period": CPU_PERIOD_US}
    if limits.memory_mib is not None:
        resources["memory"] = {"limit": limits.memory_mib * 1024 * 1024}
    linux: dict[str, Any] = {
        "resources": resources,
        "namespaces": namespaces,
        "maskedPaths": MASKED,
        "readonlyPaths": READONLY,
    }
    if cgroups_path is not None:
        linux["cgroupsPath"] = cgroups_path
    if seccomp is not None:
        linux["seccomp"] = seccomp
    nofile = nofile_limit()
    return {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": [PATH_ENV, *(f"{k}={v}" for k, v in sorted(env.items()))],
            "cwd": "/",
            "capabilities": {
                "bounding": DEFAULT_CAPS,
                "effective": DEFAULT_CAPS,
                "permitted": DEFAULT_CAPS,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
    }
