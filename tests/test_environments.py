"""Each environment through its real runtime: start, exec, account, stop, leave nothing."""

from __future__ import annotations

import pytest

from sandbench.environments.base import SandboxSpec
from sandbench.environments.registry import all_environments
from sandbench.errors import SandboxError
from tests.conftest import ENV_NAMES, env_or_skip

pytestmark = pytest.mark.runtime


@pytest.mark.parametrize("name", ENV_NAMES)
def test_lifecycle(name: str, clean_host: None) -> None:
    env = env_or_skip(name)
    try:
        with env.start(SandboxSpec()) as sb:
            done = sb.exec(["/sb/syscall", "1000", "1"])
            assert done.returncode == 0, done.stderr
            assert '"calls": 1000' in done.stdout
            assert sb.host_pids(), "a running sandbox has host processes"
            assert sb.address and sb.host_address
            bad = sb.exec(["/bin/sh", "-c", "exit 7"])
            assert bad.returncode == 7
    finally:
        env.close()


@pytest.mark.parametrize("name", ["runc", "gvisor-systrap"])
def test_failed_launch_cleans_up(name: str, clean_host: None) -> None:
    env = env_or_skip(name)
    with pytest.raises(SandboxError):
        env.start(SandboxSpec(argv=["/no/such/binary"]))


def test_doctor_lists_every_environment_honestly() -> None:
    import json

    from tests.conftest import run_cli

    cp = run_cli("doctor", "--json", timeout=120)
    assert cp.returncode == 0, cp.stderr
    data = json.loads(cp.stdout)
    names = [e["name"] for e in data["environments"]]
    assert names == [e.name for e in all_environments()]
    for e in data["environments"]:
        assert isinstance(e["available"], bool)
        assert e["available"] or e["reason"], e
        assert isinstance(e["facts"], dict)
