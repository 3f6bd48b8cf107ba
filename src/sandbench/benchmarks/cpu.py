"""CPU (benchmark 6): sysbench's prime-number test, one thread, inside the sandbox.

Reports events per second and the total number of events (the paper's unit: rounds of the
prime search completed in the run's fixed time).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sandbench.benchmarks.base import Benchmark, RoundFn, RunContext
from sandbench.environments.base import Environment, SandboxSpec
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


class Cpu(Benchmark):
    name = "cpu"
    description = "sysbench cpu (primes up to 200,000, 1 thread): events per second and total"
    image = "full"
    profiles = {
        "quick": {"rounds": 1, "time_s": 10, "max_prime": 200000, "threads": 1},
        "paper": {"rounds": 1, "time_s": 600, "max_prime": 200000, "threads": 1},
    }

    @contextmanager
    def session(
        self, env: Environment, ctx: RunContext, params: dict[str, Any]
    ) -> Iterator[RoundFn]:
        time_s = int(params["time_s"])
        argv = sysbench_cpu_argv(int(params["max_prime"]), int(params["threads"]), time_s)
        spec = SandboxSpec(image=self.image, log=ctx.log_path(env.name, self.name, "console.log"))
        with env.start(spec) as sb:

            def one(rnd: int) -> list[Measurement]:
                done = sb.exec(argv, timeout=time_s + ctx.timeouts["exec"])
                text = done.stdout + ("\n" + done.stderr if done.stderr.strip() else "")
                raw = ctx.save_raw(env.name, self.name, rnd, "sysbench-cpu.txt", text)
                try:
                    res = parse_sysbench_cpu(text)
                except ValueError as exc:
                    if done.returncode != 0:
                        raise SandboxError(f"sysbench exited {done.returncode}: {exc}") from None
                    raise
                if done.returncode != 0:
                    done.check()
                if res.total_events <= 0:
                    raise ValueError(f"sysbench completed no events in {res.total_time_s} s")
                extra = {
                    "max_prime": res.cpu_max_prime,
                    "threads": res.threads,
                    "time_s": res.total_time_s,
                    "latency_avg_ms": res.latency.avg_ms,
                    "sysbench_version": res.version,
                }
                return [
                    Measurement("events_per_second", res.events_per_second, "1/s", raw=raw,
                                extra=extra),
                    Measurement("events", float(res.total_events), "count", raw=raw,
                                extra=extra),
                ]

            yield one
