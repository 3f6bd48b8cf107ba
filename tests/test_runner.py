"""The runner's own rules, on environments and benchmarks made in the test: adaptive rounds
(stop early when quiet, run to the cap when noisy, respect the budget), faults in a session's
setup, round or teardown that fail a cell and not the study, the evidence a failure keeps,
the per-round noise check, the shuffled order and the freezing of other environments."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
from rich.console import Console

from sandbench.benchmarks.base import Benchmark, RoundFn, RunContext
from sandbench.benchmarks.params import BenchParams, Profile, RoundPolicy
from sandbench.environments.base import (
    Availability,
    Completed,
    Environment,
    Sandbox,
    SandboxSpec,
    live_sandboxes,
)
from sandbench.errors import SandboxError, command_evidence
from sandbench.noise import CpuWatch
from sandbench.results import (
    CellEnd,
    Failure,
    Measurement,
    Sample,
    read_cell_ends,
    read_failures,
    read_records,
    read_samples,
)
from sandbench.study import Plan, Runner, rel_halfwidth


class FakeSandbox(Sandbox):
    """A sandbox whose 'host process' is a real sleeping child, so that freezing it shows."""

    def __init__(self, env_name: str, busy: bool = False) -> None:
        super().__init__(f"fake-{env_name}", env_name)
        code = "while True: pass" if busy else "import time\nwhile True: time.sleep(0.01)"
        self.proc = subprocess.Popen([sys.executable, "-c", code])

    def launch(self, argv: list[str] | None = None) -> None:
        pass

    def exec(self, argv: list[str], timeout: float = 60.0) -> Completed:
        return Completed(argv, 0, "", "")

    def host_pids(self) -> list[int]:
        return [self.proc.pid]

    def _stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class FakeEnv(Environment):
    def __init__(self, name: str, flags: list[str] | None = None) -> None:
        self.name = name
        self._flags = flags or []

    def available(self) -> Availability:
        return Availability.yes()

    def facts(self) -> dict[str, Any]:
        return {"version": "fake 1"}

    def prepare(self, spec: SandboxSpec) -> Sandbox:
        return FakeSandbox(self.name)

    def flags(self) -> list[str]:
        return list(self._flags)


class NoiseBench(Benchmark):
    """Each round returns one value from a generator whose spread is known per environment."""

    name = "fake"
    profiles = {"quick": Profile(RoundPolicy(rounds=5, max_rounds=12), BenchParams()),
                "paper": Profile(RoundPolicy(rounds=5, max_rounds=12), BenchParams())}

    def __init__(self, spread: dict[str, float], seconds: float = 0.0,
                 fail: dict[str, str] | None = None) -> None:
        self.spread = spread
        self.seconds = seconds
        self.fail = fail or {}
        self.rng = random.Random(7)
        self.order: list[tuple[int, str]] = []
        self.frozen_seen: list[tuple[str, list[str]]] = []

    @contextmanager
    def session(self, env: Environment, ctx: RunContext,
                params: BenchParams) -> Iterator[RoundFn]:
        if self.fail.get(env.name) == "setup":
            raise SandboxError("setup broke", command_evidence(["fake", "setup"], 3, "", "boom"))
        sb = env.start(ctx.spec())

        def one(rnd: int) -> list[Measurement]:
            self.order.append((rnd, env.name))
            self.frozen_seen.append(
                (env.name, [s.env_name for s in live_sandboxes() if s.frozen]))
            if self.fail.get(env.name) == "round":
                raise SandboxError("helper printed nothing",
                                   command_evidence(["/sb/syscall"], 0, "", "", state="running"))
            if self.seconds:
                time.sleep(self.seconds)
            v = 100.0 * (1 + self.rng.uniform(-1, 1) * self.spread[env.name])
            return [Measurement.time("t", v, "s")]

        try:
            yield one
        finally:
            sb.stop()
            if self.fail.get(env.name) == "teardown":
                raise SandboxError("delete failed",
                                   command_evidence(["runc", "delete"], 1, "", "busy"))


def _run(tmp_path: Path, envs: Sequence[Environment], bench: Benchmark, name: str = "run",
         **plan_kw: Any) -> Path:
    out = tmp_path / name
    out.mkdir()
    plan = Plan(profile="quick", envs=list(envs), benches=[bench], **plan_kw)
    Runner(plan, out, Console(file=open(os.devnull, "w"))).run()  # noqa: SIM115
    return out


def _ends(out: Path) -> dict[str, CellEnd]:
    return {r.env: r for r in read_cell_ends(out)}


def test_quiet_cell_stops_early_noisy_runs_to_cap(tmp_path: Path) -> None:
    bench = NoiseBench({"quiet": 0.001, "noisy": 0.5})
    out = _run(tmp_path, [FakeEnv("quiet"), FakeEnv("noisy")], bench, budget_s=600)
    ends = _ends(out)
    assert ends["quiet"].stop_reason == "converged"
    assert ends["quiet"].rounds == 5  # the minimum: the scorecard's tests need 5
    assert ends["quiet"].rel_halfwidth is not None and ends["quiet"].rel_halfwidth <= 0.05
    assert ends["noisy"].stop_reason == "cap"
    assert ends["noisy"].rounds == 12
    n = {e: sum(1 for s in read_samples(out) if s.env == e) for e in ("quiet", "noisy")}
    assert n == {"quiet": 5, "noisy": 12}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["plan"]["adaptive"]["target_rel_halfwidth"] == 0.05
    # The round policy is recorded once, beside (never inside) the parameters.
    assert meta["plan"]["rounds"]["fake"] == {
        "rounds": 5, "max_rounds": 12,
        "by_env": {"quiet": {"min": 5, "max": 12}, "noisy": {"min": 5, "max": 12}}}
    assert meta["plan"]["params"]["fake"] == {}


def test_budget_stops_extra_rounds(tmp_path: Path) -> None:
    bench = NoiseBench({"a": 0.5}, seconds=0.3)
    t0 = time.monotonic()
    out = _run(tmp_path, [FakeEnv("a")], bench, budget_s=2.0)
    took = time.monotonic() - t0
    end = _ends(out)["a"]
    # The minimum always runs (5 x 0.3 s), then the 2 s budget ends the extra rounds.
    assert end.stop_reason == "budget"
    assert 5 <= end.rounds < 12
    assert took < 2.0 + 1.0 + 3.0


def test_fixed_rounds_and_emulated_quick_cap(tmp_path: Path) -> None:
    bench = NoiseBench({"a": 0.5, "vm": 0.5})
    out = _run(tmp_path, [FakeEnv("a"), FakeEnv("vm", ["emulated"])], bench)
    ends = _ends(out)
    assert ends["vm"].rounds == 3 and ends["vm"].stop_reason == "cap"
    assert all("emulated" in s.flags for s in read_samples(out) if s.env == "vm")
    rounds = json.loads((out / "meta.json").read_text())["plan"]["rounds"]["fake"]
    assert rounds["by_env"] == {"a": {"min": 5, "max": 12}, "vm": {"min": 3, "max": 3}}
    bench2 = NoiseBench({"a": 0.5})
    out2 = _run(tmp_path, [FakeEnv("a")], bench2, name="fixed", rounds_override=2)
    assert (_ends(out2)["a"].rounds, _ends(out2)["a"].stop_reason) == (2, "fixed")
    fixed = json.loads((out2 / "meta.json").read_text())["plan"]["rounds"]["fake"]
    assert (fixed["rounds"], fixed["max_rounds"]) == (2, 2)


def test_faults_fail_their_cell_with_evidence_and_the_study_goes_on(tmp_path: Path) -> None:
    bench = NoiseBench({"ok": 0.001, "s": 0.1, "r": 0.1, "t": 0.001},
                       fail={"s": "setup", "r": "round", "t": "teardown"})
    envs = [FakeEnv(n) for n in ("ok", "s", "r", "t")]
    out = _run(tmp_path, envs, bench)
    failures = read_failures(out)
    by_env: dict[str, list[Failure]] = {}
    for f in failures:
        by_env.setdefault(f.env, []).append(f)
    assert len(by_env["s"]) == 5 and by_env["s"][0].evidence["stderr_tail"] == "boom"
    assert by_env["s"][0].evidence["exit_status"] == 3
    assert len(by_env["r"]) == 5
    assert by_env["r"][0].evidence["command"] == ["/sb/syscall"]
    assert by_env["r"][0].evidence["state"] == "running"
    assert [f.round for f in by_env["t"]] == [-1]
    assert "teardown" in by_env["t"][0].error and by_env["t"][0].evidence["exit_status"] == 1
    assert "ok" not in by_env
    assert len([s for s in read_samples(out) if s.env == "ok"]) == 5
    assert len([s for s in read_samples(out) if s.env == "t"]) == 5
    ends = _ends(out)
    assert ends["s"].stop_reason == "failed" and ends["r"].stop_reason == "failed"
    assert json.loads((out / "meta.json").read_text()).get("finished")
    assert not live_sandboxes()


def test_other_environments_frozen_during_a_round(tmp_path: Path) -> None:
    bench = NoiseBench({"a": 0.001, "b": 0.001, "c": 0.001})
    _run(tmp_path, [FakeEnv("a"), FakeEnv("b"), FakeEnv("c")], bench)
    for env, frozen in bench.frozen_seen:
        assert env not in frozen
        assert sorted(frozen) == sorted({"a", "b", "c"} - {env})


def test_order_shuffled_per_round_reproducibly(tmp_path: Path) -> None:
    names = ["a", "b", "c", "d"]
    b1 = NoiseBench(dict.fromkeys(names, 0.001))
    _run(tmp_path, [FakeEnv(n) for n in names], b1, name="1", seed=11)
    b2 = NoiseBench(dict.fromkeys(names, 0.001))
    _run(tmp_path, [FakeEnv(n) for n in names], b2, name="2", seed=11)
    assert b1.order == b2.order
    orders = {tuple(e for r, e in b1.order if r == k) for k in range(5)}
    assert len(orders) > 1  # not the same order every round


def test_freeze_stops_cpu_time_and_thaw_resumes() -> None:
    sb = FakeSandbox("busy", busy=True)
    try:
        p = psutil.Process(sb.proc.pid)
        time.sleep(0.3)
        sb.freeze()
        c0 = sum(p.cpu_times()[:2])
        time.sleep(0.5)
        assert sum(p.cpu_times()[:2]) - c0 < 0.02
        sb.thaw()
        time.sleep(0.5)
        assert sum(p.cpu_times()[:2]) - c0 > 0.1
        sb.freeze()
    finally:
        sb.stop()  # a frozen sandbox still stops
    assert sb.proc.returncode is not None


def test_busy_process_beside_a_round_is_flagged_noisy(tmp_path: Path) -> None:
    # Children of the runner count as the measurement's own (the host side of a benchmark):
    # the busy process must be foreign, so it is double-forked away from this process tree.
    foreign = subprocess.Popen(
        ["setsid", "--fork", sys.executable, "-c",
         "import time\nt=time.time()\nwhile time.time()-t<4: pass"])
    foreign.wait()
    try:
        bench = NoiseBench({"a": 0.001}, seconds=0.2)
        out = _run(tmp_path, [FakeEnv("a")], bench, rounds_override=3)
    finally:
        for p in psutil.process_iter(["cmdline"]):
            if "t<4" in " ".join(p.info["cmdline"] or []):
                p.kill()
    samples = read_samples(out)
    assert samples and all("noisy" in s.flags for s in samples)
    assert all(s.extra["other_cpu_pct"] > 2 for s in samples)
    assert any("python" in t for t in samples[0].extra["other_cpu_top"])


def test_own_children_are_not_noise() -> None:
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        watch = CpuWatch([])
        time.sleep(0.5)
        noise = watch.stop()
    finally:
        child.kill()
        child.wait()
    assert all(f"({child.pid})" not in t for t in noise.busiest)


def test_quiet_round_not_flagged(tmp_path: Path) -> None:
    bench = NoiseBench({"a": 0.001}, seconds=0.1)
    out = _run(tmp_path, [FakeEnv("a")], bench, rounds_override=2)
    # Other processes on a developer's machine may be busy; CI is quiet. Only the record's
    # presence and consistency are asserted here.
    for s in read_samples(out):
        assert ("noisy" in s.flags) == (s.extra["other_cpu_pct"] > 2)


def _by_round(vals: list[float]) -> dict[int, list[float]]:
    return {i: [v] for i, v in enumerate(vals)}


def test_rel_halfwidth() -> None:
    assert rel_halfwidth({}) is None
    assert rel_halfwidth({("t", ""): _by_round([1.0])}) == float("inf")
    assert rel_halfwidth({("t", ""): _by_round([0.0, 0.0, 0.0])}) == 0.0
    w = rel_halfwidth({("t", ""): _by_round([100.0, 100.5, 99.5, 100.2, 99.8])})
    assert w is not None and w < 0.01


def test_convergence_counts_rounds_not_sandboxes() -> None:
    """Memory journals a value per sandbox: 60 values in three rounds are three units, not
    60. As independent values they look settled (within 5 %); as rounds, whose host state
    differs from one to the next, they are not."""
    rounds = {r: [10.0 + r + 0.001 * i for i in range(20)] for r in range(3)}
    w_rounds = rel_halfwidth({("m", ""): rounds})
    assert w_rounds is not None and w_rounds > 0.05
    flat = {("m", ""): _by_round([v for vs in rounds.values() for v in vs])}
    w = rel_halfwidth(flat)
    assert w is not None and w < 0.05, "the same values as independent units look settled"


def test_journal_records_kind_and_direction(tmp_path: Path) -> None:
    bench = NoiseBench({"a": 0.001})
    out = _run(tmp_path, [FakeEnv("a")], bench, rounds_override=1)
    rec = next(r for r in read_records(out) if isinstance(r, Sample))
    assert rec.kind == "time" and rec.direction == "lower"


@pytest.mark.parametrize("bad", ["speed", ""])
def test_measurement_kinds_validated(bad: str) -> None:
    if bad:
        with pytest.raises(ValueError, match="unknown kind"):
            Measurement("x", 1.0, "s", kind=bad)
    else:
        assert Measurement.rate("x", 1.0, "1/s").direction == "higher"
        assert Measurement.count("errors", 0.0).direction == "lower"
        assert Measurement("x", 1.0, "s", kind="rate", direction="lower").direction == "lower"


class TwoMetricBench(NoiseBench):
    """A quiet headline metric beside a wildly varying side metric (a start's phase)."""

    converge_on = ("t",)

    @contextmanager
    def session(self, env: Environment, ctx: RunContext,
                params: BenchParams) -> Iterator[RoundFn]:
        with super().session(env, ctx, params) as one:
            def two(rnd: int) -> list[Measurement]:
                side = Measurement.time("side", self.rng.uniform(0.0, 1.0), "s")
                return [*one(rnd), side]

            yield two


def test_convergence_judged_on_the_headline_metric(tmp_path: Path) -> None:
    out = _run(tmp_path, [FakeEnv("q")], TwoMetricBench({"q": 0.001}), budget_s=600)
    assert _ends(out)["q"].stop_reason == "converged"
    assert _ends(out)["q"].rounds == 5
    plain = NoiseBench({"q": 0.001})
    assert plain.converge_on == ()


class ClosingBench(NoiseBench):
    """Records how its sessions close: in which thread and order, and whether all of them
    were closing at once (a barrier every session's exit waits at: closing one after
    another would break it, which the session reports as a teardown failure)."""

    def __init__(self, names: list[str], interrupt_in: str | None = None) -> None:
        super().__init__({n: 0.001 for n in names})
        self.barrier = threading.Barrier(len(names), timeout=10)
        self.closed: list[str] = []
        self.interrupt_in = interrupt_in
        self.seen_exc: dict[str, str] = {}

    @contextmanager
    def session(self, env: Environment, ctx: RunContext,
                params: BenchParams) -> Iterator[RoundFn]:
        with super().session(env, ctx, params) as one:
            def rnd(r: int) -> list[Measurement]:
                if env.name == self.interrupt_in:
                    raise KeyboardInterrupt
                return one(r)

            try:
                yield rnd
            except BaseException as exc:
                self.seen_exc[env.name] = type(exc).__name__
                self.closed.append(env.name)
                raise
            if self.interrupt_in is None:
                try:
                    self.barrier.wait()
                except threading.BrokenBarrierError:
                    raise SandboxError("sessions were not closing together", {}) from None
            self.closed.append(env.name)


def test_sessions_close_in_parallel_after_a_benchmark(tmp_path: Path) -> None:
    names = ["a", "b", "c", "d"]
    bench = ClosingBench(names)
    out = _run(tmp_path, [FakeEnv(n) for n in names], bench)
    assert read_failures(out) == []  # the barrier held: all four were closing at once
    assert sorted(bench.closed) == names
    assert not live_sandboxes()


def test_interrupted_benchmark_closes_sessions_newest_first(tmp_path: Path) -> None:
    names = ["a", "b", "c"]
    bench = ClosingBench(names, interrupt_in="a")
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, [FakeEnv(n) for n in names], bench, seed=1)
    # Each session saw the interrupt, as an ExitStack hands it on, newest first.
    assert bench.closed == names[::-1]
    assert set(bench.seen_exc.values()) == {"KeyboardInterrupt"}
    assert not live_sandboxes()


class SetupEnv(FakeEnv):
    """Records when its run-wide set-up runs, relative to the benchmark's sessions."""

    def __init__(self, name: str, events: list[str], broken: bool = False) -> None:
        super().__init__(name)
        self.events = events
        self.broken = broken

    def setup(self) -> None:
        self.events.append(f"setup {self.name}")
        if self.broken:
            raise SandboxError("daemon did not answer",
                               command_evidence(["fake-daemon"], 1, "", "no socket"))

    def prepare(self, spec: SandboxSpec) -> Sandbox:
        self.events.append(f"prepare {self.name}")
        return super().prepare(spec)


def test_setup_runs_before_the_first_start_and_a_failing_one_fails_its_cell(
        tmp_path: Path) -> None:
    """Run-wide set-up (a daemon, its network) comes before the session starts anything, so
    no round carries it; when it fails, its cell fails with the evidence and others go on."""
    events: list[str] = []
    envs = [SetupEnv("a", events), SetupEnv("b", events, broken=True)]
    out = _run(tmp_path, envs, NoiseBench({"a": 0.001, "b": 0.001}))
    assert events.index("setup a") < events.index("prepare a")
    assert "prepare b" not in events
    failures = read_failures(out)
    assert failures and {f.env for f in failures} == {"b"}
    assert failures[0].evidence["stderr_tail"] == "no socket"
    assert len([s for s in read_samples(out) if s.env == "a"]) >= 5


class StopFailsSandbox(FakeSandbox):
    """Stops (its process is gone) and then reports an error, as a runtime whose delete
    fails after the kill would."""

    def _stop(self) -> None:
        super()._stop()
        raise SandboxError("delete failed", command_evidence(["fake", "delete"], 1, "", "busy"))


class StopFailsEnv(FakeEnv):
    """Every third sandbox it starts fails to stop."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.started = 0

    def prepare(self, spec: SandboxSpec) -> Sandbox:
        self.started += 1
        return (StopFailsSandbox if self.started % 3 == 2 else FakeSandbox)(self.name)


def test_memory_keeps_a_rounds_samples_when_a_stop_fails(tmp_path: Path) -> None:
    """Issue 21 item 7: the footprints read before a failed stop are journaled, with the
    failure beside them in the same round; nothing is journaled that was not measured."""
    from sandbench.benchmarks.memory import Memory

    out = _run(tmp_path, [StopFailsEnv("fake")], Memory(), rounds_override=2,
               overrides={"memory": {"settle_s": 0.01}})
    samples = read_samples(out)
    failures = read_failures(out)
    assert {s.round for s in samples} == {0, 1}
    dirty = [s for s in samples if s.metric == "private_dirty"]
    assert len(dirty) == 6 and all(s.value > 0 for s in dirty)
    assert [f.round for f in failures] == [0, 1]
    assert all("1 of 3 sandboxes of fake failed to stop" in f.error for f in failures)
    assert failures[0].evidence["stop_errors"][0]["evidence"]["command"] == ["fake", "delete"]
    # the samples and the failure of a round are one write: adjacent lines of the journal
    kinds = [r.type for r in read_records(out) if r.type in ("sample", "failure")]
    assert kinds == (["sample"] * 6 + ["failure"]) * 2


class NanBench(NoiseBench):
    def session(self, env: Environment, ctx: RunContext,
                params: BenchParams) -> Any:
        @contextmanager
        def cm() -> Iterator[RoundFn]:
            yield lambda rnd: [Measurement.time("t", 1.0, "s"),
                               Measurement.time("u", float("nan"), "s")]
        return cm()


def test_a_non_finite_value_fails_its_round_and_is_never_journaled(tmp_path: Path) -> None:
    out = _run(tmp_path, [FakeEnv("a")], NanBench({"a": 0.0}), rounds_override=2)
    assert read_samples(out) == []
    failures = read_failures(out)
    assert [f.round for f in failures] == [0, 1]
    assert "non-finite u (nan)" in failures[0].error
