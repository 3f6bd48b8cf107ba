"""Podman and Podman+gVisor through the real podman: lifecycle, network, benchmarks through the
CLI, leftovers of a killed run, and a foreign container that must survive."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbench import paths
from sandbench.environments import podman
from sandbench.environments.base import Limits, SandboxSpec
from sandbench.results import read_failures, read_samples
from tests.conftest import REPO, env_or_skip, run_cli

pytestmark = pytest.mark.runtime

NAMES = ["podman", "podman-gvisor"]
BENCH_RANGE = ipaddress.ip_network("198.18.0.0/15")


def _podman_host_state() -> dict[str, set[str]]:
    """What Podman could leak: containers in sandbench's store, its bridge, its cgroups."""
    cp = subprocess.run(
        [*podman.PodmanStore.base_args(), "ps", "-aq"], capture_output=True, text=True,
        timeout=30,
    )
    cgroups = {str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{podman.CGROUP_PARENT}")}
    return {
        "containers": set(cp.stdout.split()),
        "bridge": {podman.BRIDGE} if Path(f"/sys/class/net/{podman.BRIDGE}").exists() else set(),
        "cgroups": cgroups,
        "network": {"conflist"}
        if (paths.STATE_DIR / "podman" / "cni" / f"{podman.NETWORK}.conflist").exists()
        else set(),
    }


@pytest.mark.parametrize("name", NAMES)
def test_lifecycle_network_and_nothing_left(name: str, clean_host: None) -> None:
    env = env_or_skip(name)
    before = _podman_host_state()
    try:
        with env.start(SandboxSpec()) as sb:
            assert "created" in sb.marks, "create and start are separate phases"
            done = sb.exec(["/sb/syscall", "1000", "1"])
            assert done.returncode == 0, done.stderr
            assert '"calls": 1000' in done.stdout
            pids = sb.host_pids()
            assert pids, "a running sandbox has host processes"
            assert ipaddress.ip_address(sb.address) in BENCH_RANGE
            assert ipaddress.ip_address(sb.host_address) in BENCH_RANGE
            # The host reaches a server in the sandbox at that address.
            port = 18080
            srv = sb.exec(["/bin/sh", "-c",
                           f"(/bin/busybox nc -l -p {port} -e /bin/echo pong "
                           f"|| nc -l -p {port} -e /bin/echo pong) >/dev/null 2>&1 &"])
            assert srv.returncode == 0, srv.stderr
            reply = b""
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and b"pong" not in reply:
                try:
                    with socket.create_connection((sb.address, port), timeout=2) as s:
                        reply = s.recv(64)
                except OSError:
                    time.sleep(0.2)
            assert b"pong" in reply, f"no answer from {sb.address}:{port}"
            assert sb.exec(["/bin/sh", "-c", "exit 7"]).returncode == 7
            # freeze pauses the container; thaw brings it back.
            sb.freeze()
            assert '"Paused":true' in sb.describe_state()
            sb.thaw()
            assert sb.exec(["/bin/true"]).returncode == 0
    finally:
        env.close()
    after = _podman_host_state()
    for key in after:
        assert not after[key] - before[key], f"left behind ({key}): {after[key] - before[key]}"
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"pid {pid} still runs"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"
    except OSError:
        return True


def test_seccomp_and_limits_applied(clean_host: None) -> None:
    env = env_or_skip("podman")
    try:
        spec = SandboxSpec(limits=Limits(cpus=1.0, memory_mib=256))
        with env.start(spec) as sb:
            status = sb.exec(["/bin/cat", "/proc/self/status"]).stdout
            assert "Seccomp:\t2" in status, "the default profile filters"
            got = sb.limits_enforced()
            assert got["cpus"] == 1.0 and got["memory_mib"] == 256, got
        with env.start(SandboxSpec(seccomp=False)) as sb:
            status = sb.exec(["/bin/cat", "/proc/self/status"]).stdout
            assert "Seccomp:\t0" in status, "seccomp=unconfined when the study turns it off"
    finally:
        env.close()
    assert env.limits_applied(Limits(cpus=1.0))["cpus"] == 1.0
    assert "containers-common" in env.facts()["seccomp"]


@pytest.mark.parametrize("name", NAMES)
def test_startup_and_syscall_through_the_cli(name: str, tmp_path: Path) -> None:
    env_or_skip(name)
    out = tmp_path / "run"
    before = _podman_host_state()
    cp = run_cli("run", "--env", name, "--bench", "startup,syscall", "--rounds", "2",
                 "--out", str(out), "--no-report", timeout=600)
    assert cp.returncode == 0, cp.stderr[-2000:] + cp.stdout[-2000:]
    assert not [f for f in read_failures(out) if f.env == name]
    samples = [s for s in read_samples(out) if s.env == name]
    startup = [s.value for s in samples if s.metric == "startup_time"]
    getpid = [s.value for s in samples if s.metric == "getpid_latency"]
    assert len(startup) == 2 and all(0 < v < 60 for v in startup), startup
    assert len(getpid) == 2 and all(10 < v < 1e6 for v in getpid), getpid
    print(f"{name}: startup {sorted(startup)} s, getpid {sorted(getpid)} ns")
    after = _podman_host_state()
    for key in after:
        assert not after[key] - before[key], f"left behind ({key}): {after[key] - before[key]}"


_KILLED_RUN = """
import os, sys, time
from sandbench.environments.registry import by_name
from sandbench.environments.base import SandboxSpec
sb = by_name(sys.argv[1]).start(SandboxSpec())
print(sb.name, flush=True)
time.sleep(600)
"""


def _foreign_container() -> str:
    """A container a user made in sandbench's store: no owner label (it inherits only the
    image's org.sandbench.owned label, which alone marks nothing as removable)."""
    env = env_or_skip("podman")
    assert isinstance(env, podman.PodmanEnvironment)
    from sandbench import images

    tag = env.store.ensure_image(images.ensure("minimal"))
    name = "foreign-" + os.urandom(3).hex()
    subprocess.run(
        [*env.command(), "create", "--name", name, "--network", "none", tag, "/sb/probe", "idle"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return name


@pytest.mark.parametrize("name", NAMES)
def test_leftovers_of_a_killed_run_found_and_removed(name: str) -> None:
    env = env_or_skip(name)
    base = env_or_skip("podman")  # leftovers are reported once, by the podman environment
    foreign = _foreign_container()
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, name], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        sandbox = proc.stdout.readline().strip()
        assert sandbox.startswith(paths.PREFIX), "the child did not start a sandbox"
        live = [str(x) for x in base.leftovers()]
        assert not any(sandbox in x for x in live), "a live run's container is no leftover"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        found = base.leftovers()
        text = [str(x) for x in found]
        assert any(sandbox in x for x in text), text
        assert any(x.startswith("podman network") for x in text), text
        assert not any(foreign in x for x in text), "a foreign container is never a leftover"
        for item in found:
            item.remove()
        assert not [str(x) for x in base.leftovers()]
        state = _podman_host_state()
        assert not state["bridge"] and not state["network"], state
        ps = subprocess.run([*podman.PodmanStore.base_args(), "ps", "-a", "--format",
                             "{{.Names}}"], capture_output=True, text=True, timeout=30)
        assert foreign in ps.stdout.split(), "the foreign container survived"
        assert sandbox not in ps.stdout.split()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run([*podman.PodmanStore.base_args(), "rm", "--force", foreign],
                       capture_output=True, timeout=60)
        env.close()
