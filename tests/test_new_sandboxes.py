"""bubblewrap through the real bwrap: seccomp, capabilities and no_new_privs read inside, the
prepared network path, limits read back from the cgroups, memory accounting, freeze."""

from __future__ import annotations

import os
import re

import psutil
import pytest

from sandbench.environments.base import Limits, SandboxSpec
from tests.conftest import env_or_skip

pytestmark = pytest.mark.runtime

STATUS = ["/bin/sh", "-c", "grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status"]


def _status(out: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+):\s+(\S+)$", out, re.M))


@pytest.mark.parametrize("seccomp_on", [True, False])
def test_bubblewrap_security_baseline(seccomp_on: bool, clean_host: None) -> None:
    env = env_or_skip("bubblewrap")
    with env.start(SandboxSpec(image="full", seccomp=seccomp_on)) as sb:
        st = _status(sb.exec(STATUS).check().stdout)
    assert st["Seccomp"] == ("2" if seccomp_on else "0")
    assert st["NoNewPrivs"] == "1"
    assert int(st["CapEff"], 16) & (1 << 21) == 0, "CAP_SYS_ADMIN must be dropped"


def test_bubblewrap_network_limits_memory_freeze(clean_host: None) -> None:
    env = env_or_skip("bubblewrap")
    spec = SandboxSpec(image="full", limits=Limits(cpus=1.0, memory_mib=384))
    with env.start(spec) as sb:
        addr = sb.exec(["/bin/sh", "-c", "ip -4 -o addr show eth0"]).check().stdout
        assert sb.address in addr and sb.address.startswith("198.18.")
        route = sb.exec(["/bin/sh", "-c", "ip route show default"]).check().stdout
        assert sb.host_address in route
        # The sandbox's processes are in the netns sandbench prepared (the runc path).
        link = sb.link  # type: ignore[attr-defined]
        want = os.stat(link.netns_path).st_ino
        probe = [p for p in sb.host_pids() if psutil.Process(p).name() == "probe"]
        assert probe and os.stat(f"/proc/{probe[0]}/ns/net").st_ino == want
        got = sb.limits_enforced()
        assert (got["cpus"], got["memory_mib"]) == (1.0, 384)
        pids = sb.host_pids()
        assert any(psutil.Process(p).name() == "bwrap" for p in pids)
        assert any(psutil.Process(p).name() == "probe" for p in pids)
        sb.freeze()
        # The sandbox's own cgroup is frozen with one write (FROZEN is read back only once
        # every task stopped), and it holds every one of the sandbox's processes.
        frozen = sb._cg_frozen  # type: ignore[attr-defined]
        assert frozen is not None, "bubblewrap has its own cgroup: freeze must use it"
        state = (frozen / "freezer.state") if (frozen / "freezer.state").exists() \
            else (frozen / "cgroup.events")
        assert re.search(r"^(FROZEN|frozen 1)$", state.read_text(), re.M), state.read_text()
        in_cgroup = {int(p) for p in (frozen / "cgroup.procs").read_text().split()}
        assert set(pids) <= in_cgroup
        sb.thaw()
        assert not re.search(r"^(FROZEN|frozen 1)$", state.read_text(), re.M)
        assert sb.exec(["/bin/true"]).returncode == 0
