"""Every environment sandbench knows, in the order reports show them.

The built-in drivers are listed below. Others join without a change here: a package declares
an entry point in the group "sandbench.environments" (a callable returning one Environment or
a list of them), or code calls register() (tests do). Everything else (doctor, run, report,
clean) takes its environments from all_environments().
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable

from sandbench.environments.base import Environment
from sandbench.environments.bubblewrap import BubblewrapEnvironment
from sandbench.environments.docker import DockerEnvironment
from sandbench.environments.firecracker import FirecrackerEnvironment
from sandbench.environments.firejail import FirejailEnvironment
from sandbench.environments.host import HostEnvironment
from sandbench.environments.kata import KATA_VARIANTS, KataEnvironment
from sandbench.environments.lxc import LxcEnvironment
from sandbench.environments.nspawn import NspawnEnvironment
from sandbench.environments.oci import VARIANTS, OciEnvironment
from sandbench.environments.podman import PodmanEnvironment
from sandbench.environments.qemu import MACHINES, QemuEnvironment

Factory = Callable[[], "Environment | list[Environment]"]
_REGISTERED: dict[str, Factory] = {}
ENTRY_POINT_GROUP = "sandbench.environments"


def register(key: str, factory: Factory) -> None:
    """Add environments made by factory after the built-in ones (key: to unregister)."""
    _REGISTERED[key] = factory


def unregister(key: str) -> None:
    _REGISTERED.pop(key, None)


def _extra() -> list[Environment]:
    factories = list(_REGISTERED.values())
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        factories.append(ep.load())
    out: list[Environment] = []
    for make in factories:
        made = make()
        out += made if isinstance(made, list) else [made]
    return out


def all_environments() -> list[Environment]:
    envs: list[Environment] = [HostEnvironment()]
    envs += [OciEnvironment(v) for v in VARIANTS]
    envs.append(BubblewrapEnvironment())
    envs.append(FirejailEnvironment())
    envs.append(NspawnEnvironment())
    envs.append(LxcEnvironment())
    envs.append(DockerEnvironment(None))
    envs += [DockerEnvironment(p) for p in ("ptrace", "systrap", "kvm")]
    envs += [PodmanEnvironment(gvisor=False), PodmanEnvironment(gvisor=True)]
    envs += [QemuEnvironment(m) for m in MACHINES]
    envs.append(FirecrackerEnvironment())
    envs += [KataEnvironment(v) for v in KATA_VARIANTS]
    envs += _extra()
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
