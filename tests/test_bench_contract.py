"""What every benchmark owes the runner and the report, checked without a runtime: rounds
enough for the claims' tests, measurements that declare their kind, no knowledge of the
environment beyond the Sandbox contract, startup phases that add up, and failures (an
unmeasurable footprint, a helper that printed nothing) that carry evidence instead of a value.

The fakes below stand in for a runtime only to drive the benchmarks' own logic (phase
arithmetic, error paths); what real environments do is tested with the real runtimes in the
other benchmark tests.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sandbench.benchmarks.base import RunContext
from sandbench.benchmarks.disk import cache_marks, job_list
from sandbench.benchmarks.memory import Memory, footprint, sandbox_count
from sandbench.benchmarks.registry import all_benchmarks
from sandbench.benchmarks.startup import Phases, Startup
from sandbench.benchmarks.syscall import Syscall, measure
from sandbench.environments.base import (
    Availability,
    Completed,
    Environment,
    Limits,
    Sandbox,
    SandboxSpec,
)
from sandbench.errors import SandboxError

SRC = Path(__file__).resolve().parent.parent / "src" / "sandbench"
BENCH_DIR = SRC / "benchmarks"
CLAIMS = SRC / "report" / "claims.toml"
MS = 1_000_000


# -------------------------------------------------------------------------- fakes


class FakeSandbox(Sandbox):
    """Connects to the startup listener like the probe does, after `delay_s`; answers exec
    with a fixed Completed; reports the host pids it is given."""

    host_address = "127.0.0.1"
    _address = "127.0.0.1"

    def __init__(self, pids: list[int] | None = None, out: str = "", rc: int = 0,
                 folded: dict[str, str] | None = None, mark: bool = True,
                 delay_s: float = 0.0) -> None:
        super().__init__(f"sbfake{id(self):x}", "fake")
        self.pids = pids or []
        self.out, self.rc = out, rc
        if folded is not None:
            self.folded_phases = folded
        self.do_mark = mark
        self.delay_s = delay_s
        self.stopped = False
        self.launched = False

    def launch(self, argv: list[str] | None = None) -> None:
        self.launched = True
        time.sleep(0.002)
        if self.do_mark:
            self.mark("created")
        time.sleep(0.002)
        if argv and len(argv) == 3:
            host, port = argv[1], int(argv[2])

            def connect() -> None:
                time.sleep(self.delay_s)
                with socket.create_connection((host, port)) as c:
                    c.sendall(b"up 1.0\n")

            threading.Thread(target=connect, daemon=True).start()
        time.sleep(0.002)

    def exec(self, argv: list[str], timeout: float = 60.0) -> Completed:
        return Completed(argv, self.rc, self.out, "")

    def host_pids(self) -> list[int]:
        return self.pids

    def describe_state(self) -> str:
        return "fake: running"

    def _stop(self) -> None:
        self.stopped = True


class FakeEnv(Environment):
    name = "fake"

    def __init__(self, reserved: int | None = None, **kw: Any) -> None:
        self.reserved = reserved
        self.kw = kw
        self.made: list[FakeSandbox] = []

    def available(self) -> Availability:
        return Availability.yes()

    def facts(self) -> dict[str, Any]:
        return {}

    def prepare(self, spec: SandboxSpec) -> Sandbox:
        time.sleep(0.002)
        sb = FakeSandbox(**self.kw)
        self.made.append(sb)
        return sb

    def memory_reserved_mib(self, limits: Limits) -> int | None:
        return self.reserved


# -------------------------------------------------------------------------- rounds and kinds


def _claimed_benches() -> set[str]:
    text = CLAIMS.read_text()
    return set(re.findall(r'^\s*bench = "([a-z]+)"', text, re.M))


def test_every_claimed_cell_gets_rounds_enough_for_a_test() -> None:
    claimed = _claimed_benches()
    assert claimed, "claims.toml names no benchmark"
    for bench in all_benchmarks():
        for profile in ("quick", "paper"):
            p = bench.round_policy(profile)
            if bench.name in claimed:
                assert p.rounds >= 5, (bench.name, profile)
            assert p.max_rounds >= p.rounds, (bench.name, profile)


def test_quick_disk_jobs_cover_the_claims_first_checks() -> None:
    from sandbench.benchmarks.disk import Disk

    jobs = set(job_list(Disk().params("quick")))
    for pattern in ("seqread", "seqwrite", "randread", "randwrite"):
        assert (pattern, "16k") in jobs  # D1-D4's first check each
    assert ("seqwrite", "1m") in jobs  # D2: "the gap halves at 1 MB"
    assert len(job_list(Disk().params("paper"))) == 16  # the paper's grid


def test_benchmarks_know_only_the_sandbox_contract() -> None:
    """No branch on an environment's family or name, no getattr on a sandbox, every
    measurement built through a kind constructor, helpers through Sandbox.helper."""
    for path in sorted(BENCH_DIR.glob("*.py")):
        if path.name in ("registry.py", "params.py"):  # params: the decoder of dataclasses
            continue
        text = path.read_text()
        bads = ["family", "getattr(", "Measurement(", '"/sb/', "env.name =="]
        if path.name != "base.py":  # RunContext.spec is where specs are made
            bads.append("SandboxSpec(")
        for bad in bads:
            assert bad not in text, f"{path.name} uses {bad}"


# -------------------------------------------------------------------------- startup phases


def test_phases_add_up_to_startup_time() -> None:
    ph = Phases(t0=0, prepared=5 * MS, created=12 * MS, started=30 * MS, net=41 * MS,
                folded={})
    got = {m.metric: m for m in ph.measurements()}
    phases = [got[f"phase_{p}"].value for p in ("prepare", "create", "start", "network")]
    assert phases == pytest.approx([0.005, 0.007, 0.018, 0.011])
    assert sum(phases) == pytest.approx(got["startup_time"].value, abs=1e-9)
    assert all(m.kind == "time" and m.direction == "lower" for m in got.values())


def test_folded_create_is_zero_and_says_where_it_went() -> None:
    ph = Phases(0, 5 * MS, None, 30 * MS, 41 * MS, folded={"create": "start"})
    got = {m.metric: m for m in ph.measurements()}
    assert got["phase_create"].value == 0
    assert got["phase_create"].extra == {"folded_into": "start"}
    assert got["phase_start"].value == pytest.approx(0.025)


def test_probe_connecting_before_launch_returned_ends_the_start_phase() -> None:
    ph = Phases(0, 5 * MS, 10 * MS, 30 * MS, 20 * MS, folded={})
    got = {m.metric: m for m in ph.measurements()}
    assert got["phase_network"].value == 0
    assert got["phase_network"].extra == {"connected_before_start_returned": True}
    assert got["startup_time"].value == pytest.approx(0.020)


def test_a_driver_without_create_mark_or_fold_fails() -> None:
    with pytest.raises(SandboxError, match="neither marked 'created'"):
        Phases(0, 5 * MS, None, 30 * MS, 41 * MS, folded={}).measurements()


@pytest.mark.parametrize("folded", [None, {"create": "start"}])
def test_startup_session_phases_sum_within_a_millisecond(
    tmp_path: Path, folded: dict[str, str] | None
) -> None:
    env = FakeEnv(folded=folded, mark=folded is None, delay_s=0.01)
    ctx = RunContext(out=tmp_path, profile="quick")
    with Startup().session(env, ctx, Startup().params("quick")) as one:
        got = {m.metric: m for m in one(0)}
    total = got["startup_time"].value
    parts = sum(got[f"phase_{p}"].value for p in ("prepare", "create", "start", "network"))
    assert abs(parts - total) < 1e-3
    assert total >= 0.01  # the fake probe waited 10 ms after launch
    assert got["startup_time"].extra["probe"] == "up 1.0"
    assert got["teardown_time"].value >= 0
    # The first sandbox is the unlaunched prepare before round 0; the round's is the second.
    warm, measured = env.made
    assert not warm.launched and warm.stopped
    assert measured.launched and measured.stopped
    if folded:
        assert got["phase_create"].extra == {"folded_into": "start"}


# -------------------------------------------------------------------------- memory


def test_memory_count_is_bounded_by_the_budget() -> None:
    p = Memory().params("quick")
    assert sandbox_count(FakeEnv(), Limits(), p) == (p.count, "profile count")
    n, why = sandbox_count(FakeEnv(reserved=700), Limits(), p.replace(memory_budget_mib=1536))
    assert n == 2 and "budget" in why
    n, _ = sandbox_count(FakeEnv(reserved=4096), Limits(), p.replace(memory_budget_mib=1536))
    assert n == 1  # never zero sandboxes


def test_no_host_process_fails_instead_of_recording_zero(tmp_path: Path) -> None:
    sb = FakeSandbox(pids=[])
    with pytest.raises(SandboxError, match="no host process") as err:
        footprint(sb)
    assert err.value.evidence["state"] == "fake: running"
    # A process that is gone (a dead hypervisor) is no measurement either.
    gone = subprocess.Popen(["true"])
    gone.wait()
    with pytest.raises(SandboxError, match="not measured"):
        footprint(FakeSandbox(pids=[gone.pid]))
    # Through the session: the round fails, nothing is returned, the sandbox is stopped.
    env = FakeEnv(pids=[])
    ctx = RunContext(out=tmp_path, profile="quick")
    with Memory().session(env, ctx, Memory().params("quick").replace(
            count=2, settle_s=0)) as one, pytest.raises(SandboxError):
        one(0)
    assert env.made and all(sb.stopped for sb in env.made)


def test_memory_of_a_live_process_is_measured() -> None:
    use = footprint(FakeSandbox(pids=[os.getpid()]))
    assert use.processes and use.private_dirty_kib > 0


# -------------------------------------------------------------------------- syscall helper


def test_helper_success_without_output_is_a_failure_with_evidence() -> None:
    sb = FakeSandbox(out="", rc=0)
    with pytest.raises(SandboxError, match="printed no result") as err:
        measure(sb, 10000, 5.0)
    ev = err.value.evidence
    assert ev["command"] == [sb.helper("syscall"), "10000", "1"]
    assert ev["exit_status"] == 0 and ev["stdout_tail"] == ""
    assert ev["state"] == "fake: running"


def test_helper_failure_carries_evidence(tmp_path: Path) -> None:
    sb = FakeSandbox(out="", rc=127)
    with pytest.raises(SandboxError, match="exited 127") as err:
        measure(sb, 10, 5.0)
    assert err.value.evidence["exit_status"] == 127
    ok = FakeSandbox(out='{"calls": 10000, "total_ns": 1500000}\n')
    _, n, total = measure(ok, 10000, 5.0)
    assert (n, total) == (10000, 1500000)
    assert Syscall().round_policy("quick").rounds >= 5


# -------------------------------------------------------------------------- disk cache flag


def test_page_cache_flag_follows_direct_io() -> None:
    sb = FakeSandbox()
    assert cache_marks(sb) == {}
    sb.direct_io = False
    sb.direct_io_note = "gVisor serves O_DIRECT from its sentry page cache"
    assert cache_marks(sb) == {"flags": ["page_cache"],
                               "page_cache_reason": sb.direct_io_note}
