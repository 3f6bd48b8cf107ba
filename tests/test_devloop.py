"""devloop's three phases in real sandboxes, and a broken input failing the cell with evidence.
Starts real sandboxes: run under /tmp/sandbench-real.lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbench.benchmarks.base import RunContext
from sandbench.benchmarks.devloop import Devloop
from sandbench.environments.registry import by_name
from sandbench.errors import SandboxError


def _env(name: str):  # type: ignore[no-untyped-def]
    env = by_name(name)
    av = env.available()
    if not av.ok:
        pytest.skip(f"{name}: {av.reason}")
    return env


@pytest.mark.parametrize("name", ["host", "runc", "gvisor-systrap"])
def test_phases_are_timed_and_checked(name: str, tmp_path: Path) -> None:
    bench = Devloop()
    env = _env(name)
    ctx = RunContext(out=tmp_path, profile="quick")
    with bench.session(env, ctx, bench.params("quick")) as one:
        got = {m.metric: m.value for m in one(0)}
    assert set(got) == {"devloop_install", "devloop_build", "devloop_test", "devloop_time"}
    assert all(v > 0 for v in got.values())
    assert got["devloop_time"] == pytest.approx(
        got["devloop_install"] + got["devloop_build"] + got["devloop_test"])


def test_corrupt_source_fails_the_build_with_evidence(tmp_path: Path) -> None:
    bench = Devloop()
    env = _env("runc")
    ctx = RunContext(out=tmp_path, profile="quick")
    params = bench.params("quick").replace(corrupt="lua-5.4.4/src/lapi.c")
    with bench.session(env, ctx, params) as one, pytest.raises(SandboxError) as err:
        one(0)
    assert "devloop build exited" in str(err.value)
    assert err.value.evidence["phase"] == "build"
    assert "lapi.c" in err.value.evidence["stderr_tail"] + err.value.evidence["stdout_tail"]
