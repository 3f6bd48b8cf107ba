"""System-call latency: the static helper inside the sandbox times COUNT raw getpid calls."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sandbench.benchmarks.base import Benchmark, RoundFn, RunContext
from sandbench.environments.base import Environment, SandboxSpec
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


class Syscall(Benchmark):
    name = "syscall"
    description = "getpid latency inside the sandbox (ns per call)"
    profiles = {"quick": {"rounds": 20, "calls": 10000}, "paper": {"rounds": 20, "calls": 10000}}

    @contextmanager
    def session(
        self, env: Environment, ctx: RunContext, params: dict[str, Any]
    ) -> Iterator[RoundFn]:
        spec = SandboxSpec(image=self.image, log=ctx.log_path(env.name, self.name, "console.log"))
        with env.start(spec) as sb:

            def one(rnd: int) -> list[Measurement]:
                calls = int(params["calls"])
                done = sb.exec(["/sb/syscall", str(calls), "1"], timeout=ctx.timeouts["exec"])
                raw = ctx.save_raw(env.name, self.name, rnd, "syscall.json", done.stdout)
                if done.returncode != 0:
                    raise SandboxError(f"syscall helper exited {done.returncode}: {done.stderr}")
                n, total_ns = parse_syscall_output(done.stdout)
                return [
                    Measurement("getpid_latency", total_ns / n, "ns", raw=raw),
                    Measurement("getpid_10000_total", total_ns / n * 10000 / 1000, "us", raw=raw),
                ]

            yield one
