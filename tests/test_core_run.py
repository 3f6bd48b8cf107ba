"""A real study at tiny scale on every environment this machine has: startup, memory, syscall.

One `sandbench run` over all available environments (one Docker daemon start), then checks per
environment; environments that cannot run here are skipped with their reason.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbench.results import read_failures, read_meta, read_samples
from tests.conftest import ENV_NAMES, assert_same_host, env_or_skip, host_state, run_cli

pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def core_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    out = tmp_path_factory.mktemp("core") / "run"
    before = host_state()
    cp = run_cli(
        "run", "--bench", "startup,memory,syscall", "--rounds", "2", "--out", str(out),
        "--no-report",
    )
    after = host_state()
    yield {"cp": cp, "out": out, "before": before, "after": after}


def _values(out: Path, env: str, bench: str, metric: str) -> list[float]:
    return [
        s.value
        for s in read_samples(out)
        if s.env == env and s.bench == bench and s.metric == metric
    ]


def test_run_succeeds_and_prints_summary(core_run: dict[str, Any]) -> None:
    cp = core_run["cp"]
    assert cp.returncode == 0, cp.stderr[-2000:] + cp.stdout[-2000:]
    assert "medians" in cp.stdout
    assert str(core_run["out"]) in cp.stdout


def test_host_left_as_it_was(core_run: dict[str, Any]) -> None:
    assert_same_host(core_run["before"], core_run["after"])


def test_meta_records_facts(core_run: dict[str, Any]) -> None:
    meta = read_meta(core_run["out"])
    assert meta["host"]["cores"] >= 1 and meta["host"]["kernel"]
    assert set(meta["plan"]["envs"]) <= set(ENV_NAMES)
    for name in meta["plan"]["envs"]:
        assert name in meta["environments"]
    for name, reason in meta["unavailable"].items():
        assert reason, f"{name} unavailable without a reason"
    assert oct((core_run["out"]).stat().st_mode & 0o777) == "0o700"


@pytest.mark.parametrize("env", ENV_NAMES)
def test_samples_sane(core_run: dict[str, Any], env: str) -> None:
    environment = env_or_skip(env)
    out = core_run["out"]
    failures = [f for f in read_failures(out) if f.env == env]
    assert not failures, failures
    startup = _values(out, env, "startup", "startup_time")
    assert len(startup) == 2 and all(0 < v < 60 for v in startup)
    phases = [_values(out, env, "startup", f"phase_{p}") for p in
              ("prepare", "create", "start", "network")]
    for i, total in enumerate(startup):  # the phases add up to startup_time
        assert abs(sum(ph[i] for ph in phases) - total) < 1e-3
    assert all(v >= 0 for v in _values(out, env, "startup", "teardown_time"))
    dirty = _values(out, env, "memory", "private_dirty")
    from sandbench.benchmarks.memory import MemoryParams, sandbox_count
    from sandbench.benchmarks.params import decode
    from sandbench.environments.base import Limits

    meta = read_meta(out)
    lim = meta["plan"]["limits"]
    per_round, _ = sandbox_count(environment, Limits(lim["cpus"], lim["memory_mib"]),
                                 decode(MemoryParams, meta["plan"]["params"]["memory"],
                                        "memory"))
    assert len(dirty) == 2 * per_round and all(v > 0 for v in dirty)
    pss = _values(out, env, "memory", "pss")
    assert all(p > 0 for p in pss)
    lat = _values(out, env, "syscall", "getpid_latency")
    assert len(lat) == 2 and all(10 < v < 1e6 for v in lat)  # ns per getpid
    units = {(s.metric, s.unit) for s in read_samples(out) if s.env == env}
    assert ("startup_time", "s") in units and ("private_dirty", "MiB") in units
    assert ("getpid_latency", "ns") in units and ("getpid_10000_total", "us") in units


def test_gvisor_ptrace_getpid_slower_than_host(core_run: dict[str, Any]) -> None:
    env_or_skip("gvisor-ptrace")
    out = core_run["out"]
    host = statistics.median(_values(out, "host", "syscall", "getpid_latency"))
    ptrace = statistics.median(_values(out, "gvisor-ptrace", "syscall", "getpid_latency"))
    assert ptrace > 5 * host, (ptrace, host)


def test_gvisor_runs_on_its_netstack(core_run: dict[str, Any]) -> None:
    env_or_skip("gvisor-systrap")
    starts = [
        s for s in read_samples(core_run["out"])
        if s.env == "gvisor-systrap" and s.metric == "startup_time"
    ]
    assert starts and all(s.extra["network"] == "netstack+veth" for s in starts)
    meta = read_meta(core_run["out"])
    assert meta["environments"]["gvisor-systrap"]["network"] == "netstack+veth"


def test_docker_shared_daemon_reported_separately(core_run: dict[str, Any]) -> None:
    env_or_skip("docker")
    shared = _values(core_run["out"], "docker", "memory", "shared_daemon_private_dirty")
    per_box = statistics.median(_values(core_run["out"], "docker", "memory", "private_dirty"))
    assert shared and shared[0] > per_box


def test_rounds_interleaved(core_run: dict[str, Any]) -> None:
    seq = [
        (s.round, s.env) for s in read_samples(core_run["out"])
        if s.bench == "startup" and s.metric == "startup_time"
    ]
    rounds = [r for r, _ in seq]
    assert rounds == sorted(rounds), "rounds must go A B C A B C, not A A B B"


def test_report_from_real_run(core_run: dict[str, Any], tmp_path: Path) -> None:
    from sandbench.report import write_report
    from tests.test_report import assert_renders

    html = write_report(core_run["out"])
    figures = sorted(p.name for p in (core_run["out"] / "figures").glob("*.png"))
    assert {"startup.png", "memory.png", "syscall.png"} <= set(figures)
    assert (core_run["out"] / "report.md").read_text().count("| S1 |") == 1
    assert assert_renders(html, tmp_path) >= 3


def test_compare_two_real_runs(tmp_path: Path) -> None:
    env_or_skip("runc")
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        cp = run_cli("run", "--env", "host,runc", "--bench", "syscall", "--rounds", "6",
                     "--out", str(out), "--no-report", timeout=300)
        assert cp.returncode == 0, cp.stderr
        runs.append(str(out))
    cp = run_cli("compare", *runs, timeout=120)
    assert cp.returncode == 0, cp.stderr
    assert "getpid_latency" in cp.stdout and "runc" in cp.stdout
    gated = run_cli("compare", *runs, "--fail-on-regression", "--factor", "100", timeout=120)
    assert gated.returncode == 0, "nothing differs by a factor of 100"
