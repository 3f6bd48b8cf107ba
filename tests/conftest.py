"""Shared fixtures: the real environments this machine has, and a check that the host is left
exactly as it was (processes, namespaces, links, mounts, containers, cgroups)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from sandbench import net, paths
from sandbench.cleanup import cgroup_dirs
from sandbench.environments.base import Environment
from sandbench.environments.registry import all_environments

REPO = Path(__file__).resolve().parent.parent
SANDBENCH = [sys.executable, "-m", "sandbench.cli"]

_AVAIL: dict[str, Any] = {}


def env_or_skip(name: str) -> Environment:
    """The named environment, or a skip carrying the reason it cannot run here."""
    if name not in _AVAIL:
        env = next(e for e in all_environments() if e.name == name)
        _AVAIL[name] = (env, env.available())
    env, av = _AVAIL[name]
    if not av.ok:
        pytest.skip(f"{name} unavailable here: {av.reason}")
    assert isinstance(env, Environment)
    return env


ENV_NAMES = [e.name for e in all_environments()]


def host_state() -> dict[str, Any]:
    """What a run could leak, as comparable sets."""
    procs = set()
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        name = p.info["name"] or ""
        if (
            name.startswith(("runsc", "containerd-shim", "dockerd", "qemu-system"))
            or "/sb/probe" in cmd
            or str(paths.STATE_DIR) in cmd
        ):
            procs.add((p.pid, name))
    mounts = set()
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            mounts.add(line.split()[4])
    # iproute2 makes /run/netns a shared mount the first time any namespace is added on a
    # boot; it is the system's, not a leak.
    mounts.discard("/run/netns")
    from sandbench.environments.docker_daemon import cli, socket_path

    docker = ""
    if socket_path().exists():  # sandbench's own dockerd runs (the only one it drives)
        docker = subprocess.run(
            cli("ps", "-aq"), capture_output=True, text=True, timeout=30
        ).stdout
    return {
        "processes": procs,
        "netns": set(os.listdir("/var/run/netns")) if os.path.isdir("/var/run/netns") else set(),
        "links": set(os.listdir("/sys/class/net")),
        "mounts": mounts,
        "containers": set(docker.split()),
        "cgroups": {str(p) for p in cgroup_dirs()},
        "sandbench_links": set(net.owned_links()),
        "bundles": set(os.listdir(paths.STATE_DIR / "bundles"))
        if (paths.STATE_DIR / "bundles").exists()
        else set(),
    }


def assert_same_host(before: dict[str, Any], after: dict[str, Any]) -> None:
    for key in before:
        new = after[key] - before[key]
        assert not new, f"left behind ({key}): {sorted(new)[:10]}"


@pytest.fixture
def clean_host() -> Iterator[None]:
    """Fails the test if it leaves anything the tool could have created."""
    before = host_state()
    yield
    assert_same_host(before, host_state())


def run_cli(*args: str, timeout: float = 900, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SANDBENCH, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, **kw
    )
