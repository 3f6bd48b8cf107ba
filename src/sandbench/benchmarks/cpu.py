"""CPU (benchmark 6): sysbench's prime-number test, one thread, inside the sandbox.

Reports events per second and the total number of events (the paper's unit: rounds of the
prime search completed in the run's fixed time).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sandbench.benchmarks.base import Benchmark, RoundFn, RunContext
from sandbench.benchmarks.params import BenchParams, Profile, RoundPolicy, param
from sandbench.benchmarks.servers import evidence
from sandbench.environments.base import Environment
from sandbench.errors import SandboxError
from sandbench.parsers.sysbench import parse_sysbench_cpu
from sandbench.results import Measurement


def sysbench_cpu_argv(max_prime: int, threads: int, time_s: int) -> list[str]:
    return [
        "sysbench",
        "cpu",
        f"--cpu-max-prime={max_prime}",
        f"--threads={threads}",
        f"--time={time_s}",
        "run",
    ]


@dataclass(frozen=True)
class CpuParams(BenchParams):
    time_s: int = param(1, unit="s", high=86_400, doc="length of one sysbench run")
    max_prime: int = param(200_000, doc="the prime search's upper bound")
    threads: int = param(1, high=1024, doc="sysbench threads")


class Cpu(Benchmark):
    name = "cpu"
    short = "cpu"
    title = "CPU (sysbench primes)"
    paper_figure = "CPU events"
    converge_on = ("events_per_second",)
    description = "sysbench cpu (primes up to 200,000, 1 thread): events per second and total"
    image = "full"
    profiles = {
        # "rounds" is the minimum per cell (claims test at n >= 5), "max_rounds" the cap of
        # the runner's adaptive rounds. A quick round is one 1 s sysbench run (about 70
        # events here, so a count's step is 1.4 %; under emulation about 10).
        "quick": Profile(RoundPolicy(5, 10), CpuParams()),
        "paper": Profile(RoundPolicy(5, 10), CpuParams(time_s=600)),
    }
    Params = CpuParams

    @contextmanager
    def session(
        self, env: Environment, ctx: RunContext, params: CpuParams
    ) -> Iterator[RoundFn]:
        time_s = params.time_s
        argv = sysbench_cpu_argv(params.max_prime, params.threads, time_s)
        spec = ctx.spec(image=self.image, log=ctx.log_path(env.name, self.name, "console.log"))
        with env.start(spec) as sb:

            def one(rnd: int) -> list[Measurement]:
                done = sb.exec(argv, timeout=time_s + ctx.timeouts["exec"])
                text = done.stdout + ("\n" + done.stderr if done.stderr.strip() else "")
                raw = ctx.save_raw(env.name, self.name, rnd, "sysbench-cpu.txt", text)
                if done.returncode != 0:
                    raise SandboxError(f"sysbench exited {done.returncode}: "
                                       f"{text.strip()[-300:]}", evidence(sb, done))
                try:
                    res = parse_sysbench_cpu(text)
                except ValueError as exc:
                    raise SandboxError(f"sysbench cpu: {exc}", evidence(sb, done)) from None
                if res.total_events <= 0:
                    raise SandboxError(f"sysbench completed no events in {res.total_time_s} s",
                                       evidence(sb, done))
                extra = {
                    "max_prime": res.cpu_max_prime,
                    "threads": res.threads,
                    "time_s": res.total_time_s,
                    "latency_avg_ms": res.latency.avg_ms,
                    "sysbench_version": res.version,
                }
                return [
                    Measurement.rate("events_per_second", res.events_per_second, "1/s",
                                     raw=raw, extra=extra),
                    Measurement.amount("events", float(res.total_events), "count", raw=raw,
                                       extra=extra),
                ]

            yield one
