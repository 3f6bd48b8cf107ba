"""Every environment sandbench knows, in the order reports show them."""

from __future__ import annotations

from sandbench.environments.base import Environment
from sandbench.environments.docker import DockerEnvironment
from sandbench.environments.firecracker import FirecrackerEnvironment
from sandbench.environments.host import HostEnvironment
from sandbench.environments.kata import KATA_VARIANTS, KataEnvironment
from sandbench.environments.oci import VARIANTS, OciEnvironment
from sandbench.environments.podman import PodmanEnvironment
from sandbench.environments.qemu import MACHINES, QemuEnvironment


def all_environments() -> list[Environment]:
    envs: list[Environment] = [HostEnvironment()]
    envs += [OciEnvironment(v) for v in VARIANTS]
    envs.append(DockerEnvironment(None))
    envs += [DockerEnvironment(p) for p in ("ptrace", "systrap", "kvm")]
    envs += [PodmanEnvironment(gvisor=False), PodmanEnvironment(gvisor=True)]
    envs += [QemuEnvironment(m) for m in MACHINES]
    envs.append(FirecrackerEnvironment())
    envs += [KataEnvironment(v) for v in KATA_VARIANTS]
    names = [e.name for e in envs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise RuntimeError(f"environment names registered twice: {sorted(dup)}")
    return envs


def names() -> list[str]:
    return [e.name for e in all_environments()]


def by_name(name: str) -> Environment:
    for e in all_environments():
        if e.name == name:
            return e
    raise KeyError(name)
