"""Every environment sandbench knows, in the order reports show them."""

from __future__ import annotations

from sandbench.environments.base import Environment
from sandbench.environments.docker import DockerEnvironment
from sandbench.environments.host import HostEnvironment
from sandbench.environments.oci import VARIANTS, OciEnvironment


def all_environments() -> list[Environment]:
    envs: list[Environment] = [HostEnvironment()]
    envs += [OciEnvironment(v) for v in VARIANTS]
    envs.append(DockerEnvironment(None))
    envs += [DockerEnvironment(p) for p in ("ptrace", "systrap", "kvm")]
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
