"""systemd-nspawn through the real binary: the workload's seccomp mode and capabilities read
from /proc, the prepared network path, limits read back from the cgroups, the monitor counted
apart, the cgroup freezer over nspawn's own sub-cgroups, exec by nsenter, and a killed run's
leftovers removed by clean while a foreign look-alike machine directory survives."""

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
from sandbench.environments.nspawn import PROPAGATE
from tests.conftest import REPO, env_or_skip, run_cli
from tests.sandbox_probes import name as _name
from tests.sandbox_probes import probe_pid as _probe_pid
from tests.sandbox_probes import status as _status

pytestmark = pytest.mark.runtime

CAP_SYS_MODULE = 1 << 16


@pytest.mark.parametrize("seccomp_on", [True, False])
def test_nspawn_security_baseline(seccomp_on: bool, clean_host: None) -> None:
    env = env_or_skip("nspawn")
    with env.start(SandboxSpec(image="minimal", seccomp=seccomp_on)) as sb:
        st = _status(_probe_pid(sb))
        mounts = sb.exec(["/bin/cat", "/proc/self/mountinfo"]).check().stdout
    assert st["Seccomp"] == ("2" if seccomp_on else "0")
    assert int(st["CapEff"], 16) & CAP_SYS_MODULE == 0, "nspawn drops CAP_SYS_MODULE"
    root = next(ln for ln in mounts.splitlines() if ln.split()[4] == "/")
    assert "ro" in root.split()[5].split(","), root


def test_nspawn_network_limits_monitor_freeze_exec(clean_host: None, tmp_path: Path) -> None:
    env = env_or_skip("nspawn")
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
        out = sb.exec(["/bin/sh", "-c", 'echo "$1|$SB_TEST"; echo hi >/data/f', "sh",
                       "a  'b'"]).check().stdout
        assert out.strip() == "a  'b'|x y"
        assert (tmp_path / "f").read_text() == "hi\n"
        sb.exec(["/bin/sh", "-c", "/sb/probe idle >/dev/null 2>&1 &"]).check()
        time.sleep(0.3)
        pids = sb.host_pids()
        assert sum(_name(p) == "probe" for p in pids) == 2, "a daemon outlives its exec"
        assert sb.monitor_pids() == [sb.proc.pid]  # type: ignore[attr-defined]
        assert _name(sb.monitor_pids()[0]) == "systemd-nspawn"
        sb.freeze()
        frozen = sb._cg_frozen  # type: ignore[attr-defined]
        assert frozen is not None, "freeze must use the sandbox's cgroup"
        state = (frozen / "freezer.state") if (frozen / "freezer.state").exists() \
            else (frozen / "cgroup.events")
        assert re.search(r"^(FROZEN|frozen 1)$", state.read_text(), re.M), state.read_text()
        sb.thaw()
        assert not re.search(r"^(FROZEN|frozen 1)$", state.read_text(), re.M)
        assert sb.exec(["/sb/probe", "true"]).returncode == 0
        name = sb.name
    assert not (PROPAGATE / name).exists()


_CHILD = """
import time
from sandbench.environments.registry import by_name
from sandbench.environments.base import SandboxSpec
sb = by_name("nspawn").start(SandboxSpec(image="minimal"))
sb.exec(["/sb/probe", "true"])
print(sb.name, flush=True)
time.sleep(600)
"""


def test_killed_run_leftovers_cleaned_foreign_lookalike_survives(clean_host: None) -> None:
    env_or_skip("nspawn")
    foreign = PROPAGATE / "sb0123456789ab"  # a user's machine named like sandbench's ids
    foreign.mkdir(parents=True, exist_ok=True)
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
        assert not (PROPAGATE / ident).exists()
        assert not [p for p in psutil.process_iter(["cmdline"])
                    if f"--machine={ident}" in " ".join(p.info["cmdline"] or [])]
        assert foreign.is_dir(), "clean must not touch a foreign machine's directory"
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        foreign.rmdir()
