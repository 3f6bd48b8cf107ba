"""LXC through the real lxc-start and lxc-attach: the workload's seccomp mode and bounding set
read from /proc, the prepared network path, limits read back through LXC's child cgroups,
the lxc-start monitor counted apart, the cgroup freezer over payload/ and monitor/, exec by
lxc-attach, and a killed run's leftovers removed by clean while a foreign container with a
sandbench-like name in another lxcpath survives."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from sandbench import paths
from sandbench.environments.base import Limits, SandboxSpec
from sandbench.environments.lxc import LOCK_ROOT, lxcpath
from tests.conftest import REPO, env_or_skip, run_cli
from tests.sandbox_probes import name as _name
from tests.sandbox_probes import probe_pid as _probe_pid
from tests.sandbox_probes import status as _status
from tests.sandbox_probes import status_of as _status_of

pytestmark = pytest.mark.runtime

CAP_SYS_MODULE = 1 << 16
CAP_SYS_ADMIN = 1 << 21


@pytest.mark.parametrize("seccomp_on", [True, False])
def test_lxc_security_baseline(seccomp_on: bool, clean_host: None) -> None:
    env = env_or_skip("lxc")
    with env.start(SandboxSpec(image="minimal", seccomp=seccomp_on)) as sb:
        st = _status(_probe_pid(sb))
        attached = sb.exec(["/bin/cat", "/proc/self/status"]).check().stdout
        mounts = sb.exec(["/bin/cat", "/proc/self/mountinfo"]).check().stdout
    assert st["Seccomp"] == ("2" if seccomp_on else "0")
    assert _status_of(attached)["Seccomp"] == st["Seccomp"], "lxc-attach applies the filter"
    bnd = int(st["CapBnd"], 16)
    assert bnd & CAP_SYS_MODULE == 0, "common.conf drops CAP_SYS_MODULE"
    assert bnd & CAP_SYS_ADMIN, "LXC's privileged default keeps CAP_SYS_ADMIN (facts say so)"
    root = next(ln for ln in mounts.splitlines() if ln.split()[4] == "/")
    assert "ro" in root.split()[5].split(","), root


def test_lxc_network_limits_monitor_freeze_exec(clean_host: None, tmp_path: Path) -> None:
    env = env_or_skip("lxc")
    spec = SandboxSpec(image="full", limits=Limits(cpus=1.0, memory_mib=384), volume=tmp_path,
                       env={"SB_TEST": "x y"})
    with env.start(spec) as sb:
        probe = _probe_pid(sb)
        addr = sb.exec(["/bin/sh", "-c", "ip -4 -o addr show eth0"]).check().stdout
        assert sb.address in addr and sb.address.startswith("198.18.")
        assert sb.host_address in sb.exec(["/bin/sh", "-c", "ip route show default"]).stdout
        link = sb.link  # type: ignore[attr-defined]
        assert os.stat(f"/proc/{probe}/ns/net").st_ino == os.stat(link.netns_path).st_ino
        got = sb.limits_enforced()
        assert (got["cpus"], got["memory_mib"]) == (1.0, 384)
        # The workload is in LXC's payload cgroup, below the one holding the limits.
        assert "/payload" in Path(f"/proc/{probe}/cgroup").read_text()
        out = sb.exec(["/bin/sh", "-c", 'echo "$1|$SB_TEST|$HOME"; echo hi >/data/f', "sh",
                       "a  'b'"]).check().stdout
        assert out.strip() == "a  'b'|x y|", "--clear-env: only PATH and spec.env"
        assert (tmp_path / "f").read_text() == "hi\n"
        assert sb.exec(["/bin/sh", "-c", "exit 3"]).returncode == 3
        sb.exec(["/bin/sh", "-c", "/sb/probe idle >/dev/null 2>&1 &"]).check()
        time.sleep(0.3)
        pids = sb.host_pids()
        assert sum(_name(p) == "probe" for p in pids) == 2, "a daemon outlives its exec"
        assert sb.monitor_pids() == [sb.proc.pid]  # type: ignore[attr-defined]
        assert _name(sb.monitor_pids()[0]) == "lxc-start"
        sb.freeze()
        frozen = sb._cg_frozen
        assert frozen is not None, "freeze must use the sandbox's cgroup"
        state = (frozen / "freezer.state") if (frozen / "freezer.state").exists() \
            else (frozen / "cgroup.events")
        assert re.search(r"^(FROZEN|frozen 1)$", state.read_text(), re.M), state.read_text()
        sb.thaw()
        assert not re.search(r"^(FROZEN|frozen 1)$", state.read_text(), re.M)
        assert sb.exec(["/sb/probe", "true"]).returncode == 0
        name = sb.name
        lock = LOCK_ROOT / str(lxcpath()).lstrip("/") / f".{name}"
        assert lock.exists(), "LXC keeps a lock file per container (removed at stop)"
    assert not lock.exists() and not (lxcpath() / name).exists()
    assert not [p for p in psutil.process_iter(["cmdline"])
                if name in " ".join(p.info["cmdline"] or [])]


def test_lxc_refuses_an_env_value_it_cannot_write(clean_host: None) -> None:
    env = env_or_skip("lxc")
    from sandbench.errors import SandboxError

    with pytest.raises(SandboxError, match="SB_BAD"):
        env.start(SandboxSpec(image="minimal", env={"SB_BAD": "a\nlxc.rootfs.path = /"}))


_CHILD = """
import time
from sandbench.environments.registry import by_name
from sandbench.environments.base import SandboxSpec
sb = by_name("lxc").start(SandboxSpec(image="minimal"))
sb.exec(["/sb/probe", "true"])
print(sb.name, flush=True)
time.sleep(600)
"""


def test_killed_run_leftovers_cleaned_foreign_lookalike_survives(
        clean_host: None, tmp_path: Path) -> None:
    env_or_skip("lxc")
    # A user's container in their own lxcpath, named like sandbench's ids, with its lock.
    foreign_path = tmp_path / "lxc"
    foreign = foreign_path / "sb0123456789ab"
    foreign.mkdir(parents=True)
    (foreign / "config").write_text("lxc.uts.name = sb0123456789ab\n")
    foreign_lock = LOCK_ROOT / str(foreign_path).lstrip("/") / ".sb0123456789ab"
    foreign_lock.parent.mkdir(parents=True, exist_ok=True)
    foreign_lock.touch()
    child = subprocess.Popen([sys.executable, "-c", _CHILD], cwd=REPO, text=True,
                             stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert child.stdout is not None
        ident = child.stdout.readline().strip()
        assert paths.is_sandbox_id(ident), ident
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        listed = run_cli("clean", "--dry-run")
        assert listed.returncode == 0, listed.stderr
        assert ident in listed.stdout and "sb0123456789ab" not in listed.stdout
        cleaned = run_cli("clean")
        assert cleaned.returncode == 0, cleaned.stderr
        assert not (lxcpath() / ident).exists()
        assert not (LOCK_ROOT / str(lxcpath()).lstrip("/") / f".{ident}").exists()
        assert not [p for p in psutil.process_iter(["cmdline"])
                    if ident in " ".join(p.info["cmdline"] or [])]
        assert (foreign / "config").is_file() and foreign_lock.exists(), \
            "clean must not touch a foreign container"
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        foreign_lock.unlink(missing_ok=True)
        d = foreign_lock.parent
        while d != LOCK_ROOT:
            try:
                d.rmdir()
            except OSError:
                break
            d = d.parent
