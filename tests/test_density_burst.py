"""Density and burst: a ramp of idle sandboxes until a stop rule fires, K sandboxes started at
once. The logic (percentiles, sampling, limit arithmetic) is checked directly; the benchmarks
themselves on runc at a tiny scale (a cap of 5, a burst of 3), with a lowered pids.max and a
lowered address-slot count as the stop reason, and a kill -9 in the middle of a ramp followed
by `sandbench clean`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbench import cgroups, net, paths
from sandbench.benchmarks import hostmem
from sandbench.benchmarks.base import RunContext
from sandbench.benchmarks.burst import Burst
from sandbench.benchmarks.density import Density, spread
from sandbench.benchmarks.fleet import percentile
from sandbench.benchmarks.hostlimits import LimitWatch, Reading, host_readings
from sandbench.benchmarks.params import RoundPolicy
from sandbench.benchmarks.registry import all_benchmarks
from sandbench.results import Measurement, read_samples
from tests.conftest import (
    REPO,
    SANDBENCH,
    assert_same_host,
    env_or_skip,
    host_state,
    run_cli,
)

# ------------------------------------------------------------------------- without a runtime


def test_not_in_the_default_study_and_named_runs_them() -> None:
    byname = {b.name: b for b in all_benchmarks()}
    assert byname["density"].default is False and byname["burst"].default is False
    assert byname["startup"].default is True
    d, b = byname["density"], byname["burst"]
    assert d.round_policy("quick") == RoundPolicy(1, 1)
    assert b.round_policy("quick").rounds >= 5 and b.params("quick").k == 10
    assert b.params("paper").k == 50


def test_percentile_and_spread() -> None:
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile(list(map(float, range(101))), 99) == pytest.approx(99.0)
    assert spread(3, 20) == [0, 1, 2]
    got = spread(200, 5)
    assert got[0] == 0 and got[-1] == 199 and len(got) == 5


def test_host_memory_and_pressure_readable() -> None:
    assert 0 < hostmem.mem_available_mib() <= hostmem.mem_total_mib()
    psi = hostmem.psi_some_avg10()
    assert psi is None or psi >= 0.0


def test_host_limits_read_with_their_knobs() -> None:
    got = {r.knob: r for r in host_readings(set(), full=True)}
    slots = [r for r in got.values() if r.reason == "address_slots"]
    assert slots and slots[0].limit == net.SLOTS and "LINK_NET" in slots[0].knob
    assert got["sysctl kernel.pid_max"].used > 0
    assert got["sysctl fs.inotify.max_user_instances"].limit > 0
    assert got["sysctl user.max_net_namespaces"].used >= 1


def test_the_tightest_limit_is_the_one_named() -> None:
    w = LimitWatch()
    loose = Reading("pids_limit", "a/pids.max", 10, 1000)
    tight = Reading("address_slots", "slots", 7, 8)
    assert w.exhausted([loose, tight]) is None  # one more still fits
    full = Reading("address_slots", "slots", 8, 8)
    assert w.exhausted([loose, full]) == full


def test_limits_are_read_sparsely_far_from_them_and_every_step_near(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A limit of 100 slots, one taken per sandbox: far from it the watch reads every few
    steps, near it every step, and it names the limit exactly when the next start would not
    fit; the readings that walk every process come at most every `every` steps."""
    from sandbench.benchmarks import hostlimits

    reads: list[tuple[int, bool]] = []
    state = {"n": 0}

    def readings(_dirs: object, full: bool) -> list[Reading]:
        reads.append((state["n"], full))
        return [Reading("address_slots", "slots", state["n"], 100)]

    monkeypatch.setattr(hostlimits, "host_readings", readings)
    w = LimitWatch()
    hit = None
    for n in range(200):
        state["n"] = n
        hit = w.check(n, every=20)
        if hit is not None:
            break
    assert hit is not None and hit.reason == "address_slots" and state["n"] == 100
    read_at = [n for n, _ in reads]
    assert len(read_at) < 40  # far fewer than the 101 steps
    assert read_at[-4:] == [97, 98, 99, 100]  # every step once close
    full_at = [n for n, full in reads if full]
    assert all(b - a >= 20 for a, b in zip(full_at, full_at[1:], strict=False))
    assert max(b - a for a, b in zip(read_at, read_at[1:], strict=False)) <= 20


def test_an_interrupted_ramp_keeps_its_steps(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in the middle of a ramp: the steps made so far are in raw/, the interrupt goes
    on to the runner, and every sandbox started is stopped."""
    from dataclasses import dataclass

    from sandbench.benchmarks import fleet

    @dataclass
    class FakeSandbox:
        def host_pids(self) -> list[int]:
            return [os.getpid()]

    @dataclass
    class FakeProbed:
        sb: FakeSandbox
        total_s: float = 0.05
        prepare_s: float = 0.01

    started: list[FakeSandbox] = []
    stopped: list[Any] = []

    def fake_start(*_: Any) -> FakeProbed:
        if len(started) == 3:
            raise KeyboardInterrupt
        started.append(FakeSandbox())
        return FakeProbed(started[-1])

    monkeypatch.setattr(fleet, "start", fake_start)
    monkeypatch.setattr(fleet, "stop_all", lambda boxes, _w: stopped.extend(boxes) or 0.0)
    ctx = RunContext(out=tmp_path, profile="quick")
    params = Density().params("quick").replace(k=2)
    from types import SimpleNamespace

    env = SimpleNamespace(name="fake", memory_reserved_mib=lambda _limits: None)
    with pytest.raises(KeyboardInterrupt):
        Density()._ramp(env, ctx, params, 0, [])  # type: ignore[arg-type]
    steps = json.loads((tmp_path / "raw" / "fake" / "density" /
                        "r000-ramp-interrupted.json").read_text())
    assert [s["n"] for s in steps] == [1, 2, 3]
    assert stopped == started


# ------------------------------------------------------------------------ real runtimes (runc)


def _run(bench: Any, env_name: str, tmp_path: Path, **over: Any) -> list[Measurement]:
    env = env_or_skip(env_name)
    params = bench.params("quick").replace(**over)
    ctx = RunContext(out=tmp_path, profile="quick")
    with bench.session(env, ctx, params) as fn:
        out: list[Measurement] = fn(0)
    return out


def _by(ms: list[Measurement], metric: str, **params: Any) -> Measurement:
    found = [m for m in ms if m.metric == metric and all(m.params.get(k) == v
                                                         for k, v in params.items())]
    assert len(found) == 1, (metric, params, [m.metric for m in ms])
    return found[0]


@pytest.mark.runtime
def test_density_ramp_stops_at_cap_with_every_step(tmp_path: Path, clean_host: None) -> None:
    ms = _run(Density(), "runc", tmp_path, cap=5, k=2)
    top = _by(ms, "max_sandboxes")
    assert top.value == 5 and top.unit == "sandboxes" and top.kind == "amount"
    assert top.extra["stop_reason"] == "cap" and top.extra["knob"] is None
    assert top.extra["duration_s"] > 0
    steps = json.loads((tmp_path / str(top.raw)).read_text())
    assert [s["n"] for s in steps] == [1, 2, 3, 4, 5]
    for s in steps:
        assert s["start_time_s"] > 0 and s["mem_available_mib"] > 0
        assert s["psi_some_avg10"] is None or s["psi_some_avg10"] >= 0
        assert s["load_1m"] >= 0
        if s["n"] % 2 == 0:
            assert s["private_dirty_mib"] > 0 and s["pss_mib"] > 0
    dirty = _by(ms, "memory_per_sandbox", method="private_dirty")
    assert dirty.unit == "MiB" and dirty.kind == "size" and dirty.value > 0
    assert _by(ms, "start_time_p50").value > 0
    assert _by(ms, "start_time_p99").value >= _by(ms, "start_time_p50").value
    teardown = json.loads((tmp_path / str(top.raw)).with_name("r000-teardown.json").read_text())
    assert teardown["sandboxes"] == 5 and teardown["seconds"] > 0


@pytest.mark.runtime
def test_burst_of_three(tmp_path: Path, clean_host: None) -> None:
    ms = _run(Burst(), "runc", tmp_path, k=3)
    p50, p99 = _by(ms, "burst_start_time_p50"), _by(ms, "burst_start_time_p99")
    top, rate = _by(ms, "burst_start_time_max"), _by(ms, "starts_per_second")
    assert all(m.params == {"k": 3} for m in ms)
    assert 0 < p50.value <= p99.value <= top.value
    assert rate.unit == "1/s" and rate.kind == "rate" and rate.value > 0
    times = json.loads((tmp_path / str(p50.raw)).read_text())
    assert len(times) == 3 and max(times) == pytest.approx(top.value)


@pytest.fixture
def pids_cgroup() -> Iterator[Path]:
    """sandbench's parent cgroup in the pids hierarchy (where runc puts its containers), its
    pids.max restored and the directory removed (if this made it) whatever happens."""
    h = next((h for h in cgroups.mounted() if "pids" in h.controllers), None)
    if h is None:
        pytest.skip("no cgroup hierarchy with the pids controller on this host")
    d = h.path / cgroups.BASE
    made = not d.exists()
    d.mkdir(exist_ok=True)
    try:
        yield d
    finally:
        # Teardown may have removed the emptied directory, and its limit with it.
        with contextlib.suppress(FileNotFoundError):
            (d / "pids.max").write_text("max")
        if made:
            with contextlib.suppress(OSError):
                d.rmdir()


@pytest.mark.runtime
def test_lowered_pids_max_is_the_stop_reason(tmp_path: Path, pids_cgroup: Path,
                                             clean_host: None) -> None:
    current = int((pids_cgroup / "pids.current").read_text())
    # An idle runc container holds one task; creating one takes runc init's threads.
    (pids_cgroup / "pids.max").write_text(str(current + 16))
    ms = _run(Density(), "runc", tmp_path, cap=40, k=2)
    top = _by(ms, "max_sandboxes")
    assert top.extra["stop_reason"] == "pids_limit", top.extra
    assert top.extra["knob"] == str(pids_cgroup / "pids.max")
    assert 1 <= top.value < 40


@pytest.mark.runtime
def test_address_slot_limit_is_the_stop_reason(tmp_path: Path, clean_host: None,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    env_or_skip("runc")
    root = paths.state("net")

    def used(limit: int) -> int:
        return sum(1 for f in root.iterdir() if f.name.isdigit() and int(f.name) < limit)

    # The smallest slot count that leaves exactly three free now.
    limit = next(s for s in range(3, net.SLOTS) if s - used(s) == 3)
    monkeypatch.setattr(net, "SLOTS", limit)
    ms = _run(Density(), "runc", tmp_path, cap=10, k=2)
    top = _by(ms, "max_sandboxes")
    assert top.value == 3
    assert top.extra["stop_reason"] == "address_slots", top.extra
    assert "LINK_NET" in top.extra["knob"]


@pytest.mark.runtime
def test_cli_study_then_kill_mid_ramp_and_clean(tmp_path: Path) -> None:
    env_or_skip("runc")
    study = tmp_path / "study.toml"
    study.write_text('[bench.density]\ncap = 4\nk = 2\n[bench.burst]\nk = 3\nrounds = 2\n'
                     'max_rounds = 2\n')
    before = host_state()
    out = tmp_path / "run"
    cp = run_cli("run", "--env", "runc", "--bench", "density,burst", "--study", str(study),
                 "--out", str(out), "--no-report", timeout=300)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    samples = [s for s in read_samples(out) if s.env == "runc"]
    top = [s for s in samples if s.metric == "max_sandboxes"]
    assert len(top) == 1 and top[0].value == 4
    assert top[0].extra["stop_reason"] == "cap"
    assert {s.params["method"] for s in samples if s.metric == "memory_per_sandbox"} \
        >= {"private_dirty"}
    assert len([s for s in samples if s.metric == "burst_start_time_p99"]) == 2
    assert_same_host(before, host_state())

    # kill -9 of a run in the middle of a ramp, then clean: nothing is left.
    study.write_text('[bench.density]\ncap = 200\ntime_cap_s = 120.0\n')
    proc = subprocess.Popen(
        [*SANDBENCH, "run", "--env", "runc", "--bench", "density", "--study", str(study),
         "--out", str(tmp_path / "killed"), "--no-report"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(set(os.listdir(net.NETNS_DIR)) - before["netns"]) < 5 \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert host_state()["netns"] - before["netns"], "the kill should leave sandboxes behind"
    cp = run_cli("clean", timeout=300)
    assert cp.returncode == 0, cp.stderr
    assert_same_host(before, host_state())


def test_a_probe_that_connects_before_the_launch_returns_is_stamped_when_it_connects(
    tmp_path: Path,
) -> None:
    """Issue 21 item 6: burst and density stamp the accept in the listener's thread, as
    startup does. A launch command that returns 0.4 s after its probe connected (a runtime
    whose start waits for more than the first process) must not add those 0.4 s."""
    import socket
    import threading

    from sandbench.benchmarks import fleet
    from sandbench.environments.base import Availability, Completed, Environment, Sandbox

    class SlowReturn(Sandbox):
        host_address = "127.0.0.1"

        def helper(self, name: str) -> str:
            return name

        def launch(self, argv: list[str] | None = None) -> None:
            assert argv is not None
            port = int(argv[2])

            def connect() -> None:
                with socket.create_connection((argv[1], port)) as c:
                    c.sendall(b"ok")
            t = threading.Thread(target=connect)
            t.start()
            t.join()
            time.sleep(0.4)

        def exec(self, argv: list[str], timeout: float = 60.0) -> Completed:
            return Completed(argv, 0, "", "")

        def host_pids(self) -> list[int]:
            return []

        def _stop(self) -> None:
            pass

    class Env(Environment):
        name = "slow-return"

        def available(self) -> Availability:
            return Availability.yes()

        def facts(self) -> dict[str, Any]:
            return {"version": "test"}

        def prepare(self, spec: Any) -> Sandbox:
            time.sleep(0.05)
            return SlowReturn("sb", self.name)

    ctx = RunContext(out=tmp_path, profile="quick")
    p = fleet.start(Env(), ctx, "burst")
    try:
        assert p.message == "ok"
        assert p.up_s < 0.3, p.up_s  # the accept, not the launch's return
        assert 0.05 <= p.prepare_s < 0.3, p.prepare_s
        assert p.total_s == pytest.approx(p.prepare_s + p.up_s)
    finally:
        p.sb.stop()
