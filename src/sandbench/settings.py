"""Settings that are not part of a study's plan: where sandbench keeps things and which
user-installed binaries it drives. One documented place; every module reads them here, and
`sandbench doctor` prints the ones in effect.

A setting comes from the process environment (so that a service manager or CI can set it);
none of them changes what a benchmark measures, only where and with what.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    meaning: str


SETTINGS: tuple[Setting, ...] = (
    Setting("SANDBENCH_STATE_DIR", "/run/sandbench",
            "runtime state: OCI roots, bundles, address slots, run locks, probe verdicts "
            "(checked: an absolute directory sandbench created and marked, never a system "
            "directory such as / or /run)"),
    Setting("SANDBENCH_CACHE_DIR", "/var/cache/sandbench",
            "built images, the guest kernel and initramfs"),
    Setting("SANDBENCH_VOLUME_DIR", "/var/lib/sandbench/volumes",
            "benchmark volumes (fio files, MariaDB data, VM data disks): put it on the disk "
            "you want measured; never tmpfs"),
    Setting("SANDBENCH_DOCKER_HOST", None,
            "measure Docker with this daemon (e.g. unix:///var/run/docker.sock) instead of "
            "the one sandbench starts with its own store; the user's store is then used"),
    Setting("SANDBENCH_SECCOMP_PROFILE", "/usr/share/containers/seccomp.json",
            "the Docker/Podman default seccomp profile given to runc and crun bundles"),
    Setting("SANDBENCH_QEMU_ACCEL", None,
            "tcg or kvm: skip the KVM probe and force QEMU's accelerator"),
    Setting("SANDBENCH_VM_BOOT_TIMEOUT", None,
            "seconds a VM may take to boot before its start fails (default: per machine "
            "type, longer under emulation)"),
    Setting("SANDBENCH_VM_DATA_GIB", None,
            "size of a VM's data disk when the benchmark does not say"),
    Setting("SANDBENCH_VM_KERNEL_PACKAGE", None,
            "the Debian kernel package the guest kernel comes from (default: the newest "
            "linux-image-*-cloud-amd64)"),
    Setting("SANDBENCH_FIRECRACKER", None, "path of a firecracker binary not on PATH"),
    Setting("SANDBENCH_FC_KERNEL", None,
            "a guest kernel for Firecracker with virtio-mmio built in"),
    Setting("SANDBENCH_KATA_CONFIG_DIR", None, "directory of Kata's configuration files"),
    Setting("SANDBENCH_CHROMIUM", "/usr/bin/chromium",
            "the browser that renders the report for its check and screenshot"),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def value(name: str) -> str | None:
    """The setting's value: the environment's if set and not empty, else its default."""
    if name not in _BY_NAME:
        raise KeyError(f"unknown setting {name!r}; known: {', '.join(_BY_NAME)}")
    given = os.environ.get(name, "").strip()
    return given or _BY_NAME[name].default


def in_effect() -> list[tuple[str, str, bool]]:
    """(name, value, set by the user) of every setting that has a value."""
    out = []
    for s in SETTINGS:
        v = value(s.name)
        if v is not None:
            out.append((s.name, v, bool(os.environ.get(s.name, "").strip())))
    return out
