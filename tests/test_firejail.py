"""firejail through the real SUID binary: the workload's seccomp mode, no_new_privs and
capabilities read from /proc, the prepared network path, limits read back from the cgroups,
monitors counted apart, the cgroup freezer, exec by --join, and a killed run's leftovers
removed by clean while a foreign firejail sandbox with a sandbench-like name survives."""

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
from sandbench.environments.firejail import FIREJAIL_CONFIG, FIREJAIL_NAMES
from tests.conftest import REPO, env_or_skip, run_cli
from tests.sandbox_probes import probe_pid as _probe_pid
from tests.sandbox_probes import status as _status

pytestmark = pytest.mark.runtime


@pytest.mark.parametrize("seccomp_on", [True, False])
def test_firejail_security_baseline(seccomp_on: bool, clean_host: None) -> None:
    env = env_or_skip("firejail")
    config_before = FIREJAIL_CONFIG.read_text()
    with env.start(SandboxSpec(image="minimal", seccomp=seccomp_on)) as sb:
        st = _status(_probe_pid(sb))
        mounts = sb.exec(["/bin/cat", "/proc/self/mountinfo"]).check().stdout
    assert st["Seccomp"] == ("2" if seccomp_on else "0")
    assert st["NoNewPrivs"] == "1"
    assert int(st["CapEff"], 16) & (1 << 21) == 0, "CAP_SYS_ADMIN must be dropped"
    assert int(st["CapEff"], 16) & (1 << 0), "CAP_CHOWN (OCI default set) must be kept"
    # The image is the read-only root; the host's firejail.config was never changed.
    root = next(ln for ln in mounts.splitlines() if ln.split()[4] == "/")
    assert " ro," in f" {root.split()[5]},"
    assert FIREJAIL_CONFIG.read_text() == config_before


def test_firejail_network_limits_monitors_freeze_exec(clean_host: None, tmp_path: Path) -> None:
    env = env_or_skip("firejail")
    spec = SandboxSpec(image="full", limits=Limits(cpus=1.0, memory_mib=384), volume=tmp_path,
                       env={"SB_TEST": "x y"})
    with env.start(spec) as sb:
        addr = sb.exec(["/bin/sh", "-c", "ip -4 -o addr show eth0"]).check().stdout
        assert sb.address in addr and sb.address.startswith("198.18.")
        route = sb.exec(["/bin/sh", "-c", "ip route show default"]).check().stdout
        assert sb.host_address in route
        link = sb.link  # type: ignore[attr-defined]
        probe = _probe_pid(sb)
        assert os.stat(f"/proc/{probe}/ns/net").st_ino == os.stat(link.netns_path).st_ino
        got = sb.limits_enforced()
        assert (got["cpus"], got["memory_mib"]) == (1.0, 384)
        # Arguments reach the joined command as they were (firejail re-quotes them).
        out = sb.exec(["/bin/sh", "-c", 'echo "$1|$SB_TEST"; echo hi >/data/f', "sh",
                       "a  'b' $c"]).check().stdout
        assert out.strip() == "a  'b' $c|x y"
        assert (tmp_path / "f").read_text() == "hi\n"
        # A server daemonized through exec outlives the exec.
        sb.exec(["/bin/sh", "-c", "/sb/probe idle >/dev/null 2>&1 &"]).check()
        time.sleep(0.3)
        pids = sb.host_pids()
        assert sum(psutil.Process(p).name() == "probe" for p in pids) == 2
        monitors = sb.monitor_pids()
        assert len(monitors) == 2 and set(monitors) < set(pids)
        assert {psutil.Process(p).name() for p in monitors} == {"firejail"}
        sb.freeze()
        frozen = sb._cg_frozen  # type: ignore[attr-defined]
        assert frozen is not None, "firejail's sandbox has its own cgroup: freeze must use it"
        state = (frozen / "freezer.state") if (frozen / "freezer.state").exists() \
            else (frozen / "cgroup.events")
        assert re.search(r"^(FROZEN|frozen 1)$", state.read_text(), re.M), state.read_text()
        assert set(pids) <= {int(p) for p in (frozen / "cgroup.procs").read_text().split()}
        sb.thaw()
        assert sb.exec(["/sb/probe", "true"]).returncode == 0
        name_files = [f for f in FIREJAIL_NAMES.iterdir() if f.read_text().strip() == sb.name]
        assert name_files
    assert not any(f.exists() for f in name_files), "stop must leave no firejail record"


_CHILD = """
import sys, time
from sandbench.environments.registry import by_name
from sandbench.environments.base import SandboxSpec
sb = by_name("firejail").start(SandboxSpec(image="minimal"))
print(sb.name, flush=True)
time.sleep(600)
"""


def test_killed_run_leftovers_cleaned_foreign_lookalike_survives(clean_host: None) -> None:
    env_or_skip("firejail")
    # A user's own firejail sandbox whose name looks like sandbench's ids.
    # (In a mount namespace of its own: firejail run outside a chroot mounts its global
    # /run/firejail/{dbus,firejail.ro.*} on the host, which clean_host would count.)
    foreign = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "--",
                                "firejail", "--quiet", "--noprofile", "--name=sb0123456789ab",
                                "sleep", "300"], start_new_session=True)
    child = subprocess.Popen([sys.executable, "-c", _CHILD], cwd=REPO, text=True,
                             stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert child.stdout is not None
        ident = child.stdout.readline().strip()
        assert paths.is_sandbox_id(ident), ident
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        view = paths.STATE_DIR / "firejail" / ident
        assert view.is_dir()
        listed = run_cli("clean", "--dry-run")
        assert listed.returncode == 0, listed.stderr
        assert str(view) in listed.stdout
        assert "sb0123456789ab" not in listed.stdout
        cleaned = run_cli("clean")
        assert cleaned.returncode == 0, cleaned.stderr
        assert not view.exists()
        assert not any(f.read_text().strip() == ident for f in FIREJAIL_NAMES.iterdir())
        assert not [p for p in psutil.process_iter(["cmdline"])
                    if f"--name={ident}" in " ".join(p.info["cmdline"] or [])]
        assert foreign.poll() is None, "clean must not touch a foreign firejail sandbox"
        assert any(f.read_text().strip() == "sb0123456789ab" for f in FIREJAIL_NAMES.iterdir())
    finally:
        foreign.terminate()
        foreign.wait(timeout=10)
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
