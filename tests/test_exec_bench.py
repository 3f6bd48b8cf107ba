"""The exec benchmark: a trivial command and a 1 MiB write run in a running sandbox, timed from
the call to the exit status and whole output; environments with no exec into a running
sandbox get a "not applicable" cell with the reason.

First without a runtime (round statistics, the checks on a command's outcome, the journal's
not_applicable record through the runner, the report and the CLI's table), then on the real
runtimes (host, runc, gVisor systrap, Docker; bubblewrap's not-applicable cell), which start
sandboxes: run those under `flock /tmp/sandbench-real.lock`."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from sandbench import stats
from sandbench.benchmarks.base import RunContext
from sandbench.benchmarks.exec import OUT_BYTES, Exec, ExecParams, check_done, round_stats
from sandbench.benchmarks.registry import all_benchmarks
from sandbench.environments.base import (
    Availability,
    Completed,
    Environment,
    Sandbox,
    SandboxSpec,
    live_sandboxes,
)
from sandbench.errors import NotApplicable, SandboxError
from sandbench.report import write_report
from sandbench.report.model import load_run
from sandbench.report.summary import heatmap, quality
from sandbench.results import (
    Journal,
    Measurement,
    NotApplicableCell,
    cell_progress,
    now_iso,
    read_cell_ends,
    read_failures,
    read_not_applicable,
    read_samples,
)
from sandbench.study import Plan, Runner
from sandbench.summary import summary_table
from tests.conftest import env_or_skip
from tests.reportdata import meta, sample, write_run

BWRAP_REASON = "no exec into a running sandbox (fake)"

# ------------------------------------------------------------------------------ fakes


class FakeSandbox(Sandbox):
    """Answers the probe helper's `true` and `out BYTES` as the helper does, or with the
    fault it is given: a non-zero status, or `short` bytes missing from the output."""

    def __init__(self, env_name: str, status: int = 0, short: int = 0) -> None:
        super().__init__(f"fake-exec-{env_name}", env_name)
        self.status, self.short = status, short
        self.calls: list[list[str]] = []
        # Its "host process": the runner freezes other environments' sandboxes, which must
        # not be the test itself.
        self.proc = subprocess.Popen(["sleep", "600"])

    def launch(self, argv: list[str] | None = None) -> None:
        pass

    def exec(self, argv: list[str], timeout: float = 60.0) -> Completed:
        self.calls.append(list(argv))
        if self.status:
            return Completed(argv, self.status, "", "probe: write: Broken pipe\n")
        if argv[1:2] == ["out"]:
            return Completed(argv, 0, "x" * (int(argv[2]) - self.short), "")
        return Completed(argv, 0, "", "")

    def host_pids(self) -> list[int]:
        return [self.proc.pid]

    def _stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class FakeEnv(Environment):
    def __init__(self, name: str, not_applicable: str = "", **faults: int) -> None:
        self.name = name
        self.exec_not_applicable = not_applicable
        self.faults = faults
        self.started: list[FakeSandbox] = []

    def available(self) -> Availability:
        return Availability.yes()

    def facts(self) -> dict[str, Any]:
        return {"version": "fake 1"}

    def prepare(self, spec: SandboxSpec) -> Sandbox:
        sb = FakeSandbox(self.name, **self.faults)
        self.started.append(sb)
        return sb


def _quiet() -> Console:
    return Console(file=open(os.devnull, "w"))  # noqa: SIM115


def _run_plan(out: Path, envs: list[Environment], rounds: int | None = None) -> Runner:
    out.mkdir(parents=True, exist_ok=True)
    plan = Plan(profile="quick", envs=envs, benches=[Exec()], rounds_override=rounds)
    runner = Runner(plan, out, _quiet())
    runner.run()
    return runner


# ------------------------------------------------------------------------- without a runtime


def test_registered_after_the_paper_and_density_burst_only_when_named() -> None:
    names = [b.name for b in all_benchmarks()]
    assert names.index("exec") > max(names.index(n) for n in (
        "startup", "memory", "syscall", "network", "disk", "cpu", "mysql", "nginx",
        "density", "burst"))
    ex = next(b for b in all_benchmarks() if b.name == "exec")
    assert ex.default is False and ex.converge_on == ("exec_latency",)
    quick, paper = ex.params("quick"), ex.params("paper")
    assert 1 <= quick.n <= 10 and ex.round_policy("quick").rounds >= 5
    assert paper.n > quick.n and ex.round_policy("paper").rounds >= ex.round_policy("quick").rounds


def test_round_stats_p50_p99() -> None:
    times = [float(i) for i in range(1, 101)]  # 1..100
    st = round_stats(times)
    assert st["n"] == 100 and st["min"] == 1.0 and st["max"] == 100.0
    assert st["p50"] == pytest.approx(50.5)
    assert st["p99"] == pytest.approx(99.01)
    one = round_stats([0.25])
    assert one["p50"] == one["p99"] == 0.25
    with pytest.raises(ValueError):
        round_stats([])


def test_check_done_accepts_exactly_the_helpers_output() -> None:
    sb = FakeSandbox("chk")
    try:
        check_done(sb, Completed(["probe", "true"], 0, "", ""), 0)
        check_done(sb, Completed(["probe", "out", "4"], 0, "xxxx", ""), 4)
        with pytest.raises(SandboxError) as bad_status:
            check_done(sb, Completed(["/sb/probe", "out", "4"], 3, "", "no space\n"), 4)
        ev = bad_status.value.evidence
        assert ev["command"] == ["/sb/probe", "out", "4"] and ev["exit_status"] == 3
        assert ev["stderr_tail"] == "no space\n" and "exited 3" in str(bad_status.value)
        with pytest.raises(SandboxError) as short:
            check_done(sb, Completed(["probe", "out", "4"], 0, "xxx", ""), 4)
        assert short.value.evidence["stdout_chars"] == 3
        assert short.value.evidence["expected_chars"] == 4
        with pytest.raises(SandboxError):  # the right length of the wrong bytes
            check_done(sb, Completed(["probe", "out", "4"], 0, "xxyx", ""), 4)
        with pytest.raises(SandboxError):  # a trivial command that printed something
            check_done(sb, Completed(["probe", "true"], 0, "usage", ""), 0)
    finally:
        sb.stop()


def test_session_rounds_on_a_fake_sandbox(tmp_path: Path) -> None:
    env = FakeEnv("fake")
    ctx = RunContext(out=tmp_path, profile="quick")
    with Exec().session(env, ctx, ExecParams(n=4)) as fn:
        ms: list[Measurement] = fn(0)
        sb = env.started[0]
        probe = sb.helper("probe")
        # One untimed warm-up of each, then n of each, alternating.
        assert sb.calls[:2] == [[probe, "true"], [probe, "out", str(OUT_BYTES)]]
        assert sb.calls[2:] == [[probe, "true"], [probe, "out", str(OUT_BYTES)]] * 4
    assert not live_sandboxes()
    by = {m.metric: m for m in ms}
    assert set(by) == {"exec_latency", "exec_1mib_latency", "exec_latency_p99",
                       "exec_1mib_latency_p99"}
    raw = json.loads((tmp_path / str(by["exec_latency"].raw)).read_text())
    for metric in ("exec_latency", "exec_1mib_latency"):
        p99 = by[f"{metric}_p99"]
        assert p99.value == by[metric].extra["p99"] and p99.kind == "latency"
    assert raw["out_bytes"] == OUT_BYTES
    for metric, key in (("exec_latency", "exec_s"), ("exec_1mib_latency", "exec_1mib_s")):
        m = by[metric]
        assert m.unit == "s" and m.kind == "latency" and m.direction == "lower"
        assert len(raw[key]) == 4 and m.value == statistics.median(raw[key])
        assert m.extra["n"] == 4 and m.extra["p50"] == m.value
        assert m.extra["min"] <= m.extra["p50"] <= m.extra["p99"] <= m.extra["max"]


@pytest.mark.parametrize("fault", [{"status": 1}, {"short": 1}])
def test_a_bad_outcome_fails_the_cell_with_evidence(tmp_path: Path,
                                                    fault: dict[str, int]) -> None:
    runner = _run_plan(tmp_path / "r", [FakeEnv("bad", **fault)], rounds=2)
    assert not read_samples(tmp_path / "r")
    fails = read_failures(tmp_path / "r")
    assert fails and runner.failures == len(fails)
    ev = fails[0].evidence
    assert ev["command"][1] in ("true", "out")
    if "status" in fault:
        assert ev["exit_status"] == 1 and "Broken pipe" in ev["stderr_tail"]
    else:
        assert ev["exit_status"] == 0 and ev["stdout_chars"] == OUT_BYTES - 1


def test_not_applicable_environment_starts_nothing(tmp_path: Path) -> None:
    env = FakeEnv("nx", not_applicable=BWRAP_REASON)
    ctx = RunContext(out=tmp_path, profile="quick")
    with pytest.raises(NotApplicable) as exc, Exec().session(env, ctx, ExecParams(n=2)):
        pass
    assert exc.value.reason == BWRAP_REASON
    assert env.started == []


def test_not_applicable_cell_through_runner_journal_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    runner = _run_plan(out, [FakeEnv("ok"), FakeEnv("nx", not_applicable=BWRAP_REASON)])
    assert runner.failures == 0 and not read_failures(out)
    na = read_not_applicable(out)
    assert [(r.env, r.bench, r.reason) for r in na] == [("nx", "exec", BWRAP_REASON)]
    ends = {r.env: r for r in read_cell_ends(out)}
    assert ends["nx"].stop_reason == "not applicable" and ends["nx"].rounds == 0
    assert {s.env for s in read_samples(out)} == {"ok"}
    # A resumed run sees the cell as ended and has nothing left to do for it.
    _rounds, ended = cell_progress(out)
    assert ("nx", "exec") in ended


def test_not_applicable_record_round_trip(tmp_path: Path) -> None:
    rec = NotApplicableCell("bubblewrap", "exec", BWRAP_REASON, now_iso(), {"why": "fake"})
    with Journal(tmp_path) as j:
        j.append(rec)
    assert read_not_applicable(tmp_path) == [rec]
    assert read_not_applicable(tmp_path)[0].type == "not_applicable"


def _na_run(d: Path) -> Path:
    envs = ["host", "runc", "bubblewrap"]
    recs: list[Any] = []
    for env, base in (("host", 0.003), ("runc", 0.045)):
        for r in range(5):
            recs.append(sample(env, "exec", "exec_latency", base * (1 + 0.01 * r), "s", r,
                               kind="latency", extra={"n": 8, "p50": base, "p99": base * 1.2}))
            recs.append(sample(env, "exec", "exec_1mib_latency", base * 1.5 * (1 + 0.01 * r),
                               "s", r, kind="latency"))
    recs.append(NotApplicableCell("bubblewrap", "exec", BWRAP_REASON, now_iso()))
    m = meta(envs, profile="quick")
    m["plan"]["benches"] = ["exec"]
    return write_run(d, recs, m)


def test_report_shows_not_applicable_with_the_reason(tmp_path: Path) -> None:
    d = _na_run(tmp_path / "r")
    run = load_run(d)
    assert run.not_applicable_reason("bubblewrap", "exec") == BWRAP_REASON
    assert run.not_applicable_reason("runc", "exec") is None
    assert not run.failures
    heat = heatmap(run)
    row = next(r for r in heat["rows"] if r["env"] == "bubblewrap")
    assert [c.text for c in row["cells"]] == ["not applicable"]
    assert row["cells"][0].title == BWRAP_REASON
    word, text = quality(run)
    assert "failed" not in text and "1 cells not applicable" in text
    write_report(d)
    md = (d / "report.md").read_text()
    section = md.split("## Not applicable", 1)[1].split("## Failures", 1)
    assert f"| bubblewrap | exec | {BWRAP_REASON} |" in section[0]
    assert section[1].lstrip().startswith("None.")  # no failure listed
    cells = md.split("## Every cell", 1)[1].split("## Not applicable", 1)[0]
    assert any("bubblewrap" in line and "not applicable" in line for line in cells.splitlines())
    html = (d / "report.html").read_text()
    assert 'id="not-applicable"' in html and BWRAP_REASON in html


def test_cli_table_says_not_applicable(tmp_path: Path) -> None:
    d = _na_run(tmp_path / "r")
    console = Console(width=100, record=True)
    console.print(summary_table(d, "host"))
    text = console.export_text()
    rows = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert "n/a" in rows["bubblewrap"] and "x-" in rows["runc"]  # runc: 15x the host's
    assert "exec: exec_latency" in text and "n/a not applicable" in text


# ------------------------------------------------------------------------------ real runtimes


def _measure(name: str, tmp_path: Path, rounds: int, n: int) -> tuple[list[Measurement],
                                                                      dict[str, list[float]]]:
    env = env_or_skip(name)
    ctx = RunContext(out=tmp_path, profile="quick")
    ms: list[Measurement] = []
    pooled: dict[str, list[float]] = {"exec_s": [], "exec_1mib_s": []}
    env.setup()
    try:
        with Exec().session(env, ctx, Exec().params("quick").replace(n=n)) as fn:
            for rnd in range(rounds):
                got = fn(rnd)
                ms += got
                raw = json.loads((tmp_path / str(got[0].raw)).read_text())
                for k in pooled:
                    pooled[k] += raw[k]
    finally:
        env.close()
    return ms, pooled


@pytest.mark.runtime
@pytest.mark.parametrize(("name", "resolved"), [("host", True), ("runc", False),
                                                ("gvisor-systrap", False), ("docker", False)])
def test_exec_latencies_on_real_runtimes(name: str, resolved: bool, tmp_path: Path,
                                         clean_host: None) -> None:
    """Finite positive latencies, p50 <= p99 in every round, and a 1 MiB output costing at
    least the trivial command. Natively the 1 MiB adds ~30 % to a 7-8 ms fork+exec; the medians
    say so; under runc, runsc and docker it adds ~2 ms to an exec of 40-90 ms that varies by
    +-15 % from one call to the next, so on 40 of each the medians' order is a coin toss
    weighted 60/40 (seen failing here). There the claim is the one the report makes: the
    1 MiB command is not significantly faster (stats.difference, p < 0.01). The native claim
    is tested on 60 calls a round: on 20 (40 a side) a CI machine once saw the medians in the
    right order at p > 0.01; here 40 a side give p ~ 1e-14 and 120 a side p ~ 1e-38, and a
    native call costs ~8 ms, so the extra 160 calls cost ~1.5 s."""
    n = 60 if resolved else 20
    ms, pooled = _measure(name, tmp_path, rounds=2, n=n)
    assert {m.metric for m in ms} == {"exec_latency", "exec_1mib_latency", "exec_latency_p99",
                                      "exec_1mib_latency_p99"} and len(ms) == 8
    for m in (m for m in ms if not m.metric.endswith("_p99")):
        assert math.isfinite(m.value) and 0 < m.value < 5, (m.metric, m.value)
        assert m.extra["n"] == n
        assert 0 < m.extra["min"] <= m.extra["p50"] <= m.extra["p99"] <= m.extra["max"]
    small, large = pooled["exec_s"], pooled["exec_1mib_s"]
    assert len(small) == len(large) == 2 * n
    d = stats.difference(small, large, direction="lower", factor=1.0)
    assert d.verdict != stats.BETTER, (statistics.median(large), statistics.median(small), d)
    if resolved:
        assert statistics.median(large) > statistics.median(small)
        assert d.verdict == stats.WORSE, d


@pytest.mark.runtime
def test_bubblewrap_cell_is_not_applicable_beside_a_measured_host(
    tmp_path: Path, clean_host: None,
) -> None:
    bwrap = env_or_skip("bubblewrap")
    host = env_or_skip("host")
    assert bwrap.exec_not_applicable and not host.exec_not_applicable
    out = tmp_path / "run"
    runner = _run_plan(out, [host, bwrap], rounds=1)
    assert runner.failures == 0 and not read_failures(out)
    na = read_not_applicable(out)
    assert [(r.env, r.reason) for r in na] == [("bubblewrap", bwrap.exec_not_applicable)]
    assert {s.env for s in read_samples(out)} == {"host"}
    write_report(out)
    md = (out / "report.md").read_text()
    assert f"| bubblewrap | exec | {bwrap.exec_not_applicable} |" in md
