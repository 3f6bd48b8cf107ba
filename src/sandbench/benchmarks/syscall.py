"""System-call latency: the static helper inside the sandbox times COUNT raw getpid calls."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sandbench.benchmarks.base import Benchmark, RoundFn, RunContext
from sandbench.benchmarks.params import BenchParams, Profile, RoundPolicy, param
from sandbench.benchmarks.servers import evidence
from sandbench.environments.base import Completed, Environment, Sandbox
from sandbench.errors import SandboxError
from sandbench.results import Measurement


def parse_syscall_output(text: str) -> tuple[int, int]:
    """(calls, total_ns) from the helper's one-line JSON."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            data = json.loads(line)
            calls, total = int(data["calls"]), int(data["total_ns"])
            if calls <= 0 or total <= 0:
                raise ValueError(f"syscall helper printed non-positive values: {line}")
            return calls, total
    raise ValueError(f"syscall helper printed no result: {text.strip()[:200]!r}")


def measure(sb: Sandbox, calls: int, timeout: float) -> tuple[Completed, int, int]:
    """Run the helper once: (its completion, calls, total ns). A failed run, and a successful
    one that printed no result, raise SandboxError with the command's evidence and the
    sandbox's state."""
    done = sb.exec([sb.helper("syscall"), str(calls), "1"], timeout=timeout)
    if done.returncode != 0:
        raise SandboxError(f"syscall helper exited {done.returncode}: "
                           f"{(done.stderr or done.stdout).strip()[-300:]}",
                           evidence(sb, done))
    try:
        n, total_ns = parse_syscall_output(done.stdout)
    except ValueError as exc:
        raise SandboxError(str(exc), evidence(sb, done)) from None
    return done, n, total_ns


@dataclass(frozen=True)
class SyscallParams(BenchParams):
    calls: int = param(10_000, high=10_000_000, doc="getpid calls a round times")


class Syscall(Benchmark):
    name = "syscall"
    short = "getpid"
    title = "getpid() latency"
    paper_figure = "system call latency"
    figure_metrics = ("getpid_latency",)
    converge_on = ("getpid_latency",)
    description = "getpid latency inside the sandbox (ns per call)"
    profiles = {
        # A round is one exec of the helper (0.1 s natively, 1.3 s under ptrace).
        # C4 (Docker slightly slower than the host) is a difference of a few percent between
        # cells whose rounds vary by 10-20 % here (whole rounds slowed by the VM this host
        # is): a test needs about 30 rounds a side to decide it, which cheap rounds afford.
        "quick": Profile(RoundPolicy(30, 40), SyscallParams()),
        "paper": Profile(RoundPolicy(30, 60), SyscallParams()),
    }
    Params = SyscallParams

    @contextmanager
    def session(
        self, env: Environment, ctx: RunContext, params: SyscallParams
    ) -> Iterator[RoundFn]:
        spec = ctx.spec(image=self.image, log=ctx.log_path(env.name, self.name, "console.log"))
        with env.start(spec) as sb:

            def one(rnd: int) -> list[Measurement]:
                done, n, total_ns = measure(sb, params.calls, ctx.timeouts["exec"])
                raw = ctx.save_raw(env.name, self.name, rnd, "syscall.json", done.stdout)
                return [
                    Measurement.latency("getpid_latency", total_ns / n, "ns", raw=raw),
                    Measurement.time("getpid_10000_total", total_ns / n * 10000 / 1000, "us",
                                     raw=raw),
                ]

            yield one
