"""Exec: the latency of running a command in a sandbox that is already up (an agent's tool
call, `kubectl exec`, a CI step), through the environment's own path (Sandbox.exec: runc /
crun / runsc exec, docker / podman exec, the VM agent; on the host a fork+exec).

One idle sandbox per environment for all rounds. Each round runs N times, alternately, a
trivial command (the static probe helper's `probe true`) and one that writes 1 MiB to stdout
(`probe out 1048576`), each timed on the host's monotonic clock from the call until its exit
status and whole output are in hand. A round's sample is the median of its N times, with the
round's p50 and p99 (and n, min, max) in the sample's extra, the p99 also as a metric of its
own (exec_latency_p99, exec_1mib_latency_p99), and every time in raw/. A command
that exits non-zero, or an output that is not exactly 1 MiB of the helper's bytes, fails the
round with the command, its status and stderr.

An environment with no way to run a command inside its running sandbox (it declares
`exec_not_applicable`, e.g. bubblewrap, whose exec starts a second sandbox) gets a "not
applicable" cell with that reason, never a number.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sandbench.benchmarks.base import Benchmark, RoundFn, RunContext
from sandbench.benchmarks.fleet import percentile
from sandbench.benchmarks.params import BenchParams, Profile, RoundPolicy, param
from sandbench.benchmarks.servers import evidence
from sandbench.environments.base import Completed, Environment, Sandbox
from sandbench.errors import NotApplicable, SandboxError
from sandbench.results import Measurement

OUT_BYTES = 1 << 20
#: The byte the helper writes (probe.c's `out`).
OUT_BYTE = "x"


def round_stats(times: list[float]) -> dict[str, float | int]:
    """n, p50, p99, min and max of one round's times (seconds)."""
    if not times:
        raise ValueError("no exec times in the round")
    return {"n": len(times), "p50": percentile(times, 50), "p99": percentile(times, 99),
            "min": min(times), "max": max(times)}


def check_done(sb: Sandbox, done: Completed, out_bytes: int) -> None:
    """A failed command, or output other than `out_bytes` of the helper's byte, is a
    SandboxError with the command, its status, its stderr and the sandbox's state."""
    got = len(done.stdout)
    if done.returncode != 0:
        raise SandboxError(
            f"{' '.join(done.argv)} exited {done.returncode}: "
            f"{(done.stderr or done.stdout).strip()[-300:]}",
            evidence(sb, done, stdout_chars=got))
    if got != out_bytes or done.stdout != OUT_BYTE * out_bytes:
        raise SandboxError(
            f"{' '.join(done.argv)} printed {got} characters, not {out_bytes} "
            f"{OUT_BYTE!r}s", evidence(sb, done, stdout_chars=got, expected_chars=out_bytes))


def timed(sb: Sandbox, argv: list[str], out_bytes: int, timeout: float) -> float:
    """Seconds from the call until argv's exit status and whole output are in hand."""
    t0 = time.perf_counter()
    done = sb.exec(argv, timeout=timeout)
    took = time.perf_counter() - t0
    check_done(sb, done, out_bytes)
    return took


@dataclass(frozen=True)
class ExecParams(BenchParams):
    n: int = param(8, high=10_000, doc="commands of each kind a round")


class Exec(Benchmark):
    name = "exec"
    short = "exec"
    converge_on = ("exec_latency",)
    figure_metrics = ("exec_latency", "exec_latency_p99", "exec_1mib_latency",
                      "exec_1mib_latency_p99")
    description = ("a command run in a running sandbox: trivial, and writing 1 MiB to stdout "
                   "(s, call to exit status and whole output)")
    #: Not in the default study: run it with --bench exec.
    default = False
    profiles = {
        # "n" commands of each kind a round (p99 of 8 is the round's slowest). Quick, here:
        # runc and runsc exec about 40 ms, docker 90 ms, podman 170 ms: 3-16 s a cell.
        "quick": Profile(RoundPolicy(5, 6), ExecParams()),
        "paper": Profile(RoundPolicy(10, 20), ExecParams(n=50)),
    }
    Params = ExecParams

    @contextmanager
    def session(
        self, env: Environment, ctx: RunContext, params: ExecParams
    ) -> Iterator[RoundFn]:
        if env.exec_not_applicable:
            raise NotApplicable(env.exec_not_applicable)
        n = params.n
        timeout = ctx.timeouts["exec"]
        spec = ctx.spec(image=self.image, log=ctx.log_path(env.name, self.name, "console.log"))
        with env.start(spec) as sb:
            probe = sb.helper("probe")
            trivial = [probe, "true"]
            big = [probe, "out", str(OUT_BYTES)]
            # Once each, untimed: the helper answers both (an image without them fails the
            # cell here, with the evidence) and the first exec's cold caches stay out.
            timed(sb, trivial, 0, timeout)
            timed(sb, big, OUT_BYTES, timeout)

            def one(rnd: int) -> list[Measurement]:
                small: list[float] = []
                large: list[float] = []
                for _ in range(n):
                    small.append(timed(sb, trivial, 0, timeout))
                    large.append(timed(sb, big, OUT_BYTES, timeout))
                raw = ctx.save_raw(env.name, self.name, rnd, "exec.json", json.dumps(
                    {"exec_s": small, "exec_1mib_s": large, "out_bytes": OUT_BYTES}))
                ss, ls = round_stats(small), round_stats(large)
                return [
                    Measurement.latency("exec_latency", statistics.median(small), "s",
                                        raw=raw, extra=ss),
                    Measurement.latency("exec_1mib_latency", statistics.median(large), "s",
                                        raw=raw, extra=ls),
                    # The round's tail as metrics of their own: the report draws p99 beside
                    # the median per environment, and compare tests it like any metric.
                    Measurement.latency("exec_latency_p99", float(ss["p99"]), "s", raw=raw),
                    Measurement.latency("exec_1mib_latency_p99", float(ls["p99"]), "s",
                                        raw=raw),
                ]

            yield one
