"""The run plan (profile, environments, benchmarks, rounds) and the loop that executes it.

Rounds are interleaved across environments (A B C A B C, not AAA BBB CCC) so that slow drifts
of the machine (thermal, background load) spread over all environments instead of biasing one.
Every sample is journaled (fsync'd) as soon as it is measured.
"""

from __future__ import annotations

import contextlib
import signal
import traceback
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sandbench import __version__
from sandbench.benchmarks.base import Benchmark, RoundFn, RunContext
from sandbench.environments.base import Environment
from sandbench.hostfacts import host_facts
from sandbench.results import Failure, Journal, Sample, now_iso, write_meta

PROFILES = ("quick", "paper")


@dataclass
class Plan:
    profile: str
    envs: list[Environment]
    benches: list[Benchmark]
    rounds_override: int | None = None
    unavailable: dict[str, str] = field(default_factory=dict)
    baseline: str = "host"

    def params(self, bench: Benchmark) -> dict[str, Any]:
        p = bench.params(self.profile)
        if self.rounds_override is not None:
            p["rounds"] = self.rounds_override
        return p

    def cells(self) -> int:
        return sum(int(self.params(b)["rounds"]) * len(self.envs) for b in self.benches)

    def describe(self) -> dict[str, Any]:
        return {
            "envs": [e.name for e in self.envs],
            "benches": [b.name for b in self.benches],
            "rounds": {b.name: int(self.params(b)["rounds"]) for b in self.benches},
            "params": {b.name: self.params(b) for b in self.benches},
            "rounds_override": self.rounds_override,
        }


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM takes the same path as Ctrl-C: stop the current cell, clean up, keep results."""
    old = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _error_text(exc: BaseException) -> str:
    msg = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {msg}"


class Runner:
    def __init__(self, plan: Plan, out: Path, console: Console) -> None:
        self.plan = plan
        self.out = out
        self.console = console
        self.ctx = RunContext(out=out, profile=plan.profile)
        self.failures = 0

    def meta(self) -> dict[str, Any]:
        return {
            "tool_version": __version__,
            "created": now_iso(),
            "profile": self.plan.profile,
            "plan": self.plan.describe(),
            "host": host_facts(),
            "environments": {e.name: e.facts() for e in self.plan.envs},
            "unavailable": self.plan.unavailable,
            "baseline": self.plan.baseline,
        }

    def run(self) -> None:
        write_meta(self.out, self.meta())
        with (
            sigterm_as_interrupt(),
            Journal(self.out) as journal,
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            ) as progress,
        ):
            task = progress.add_task("starting", total=self.plan.cells())
            try:
                for bench in self.plan.benches:
                    self._run_bench(bench, journal, progress, task)
            finally:
                for env in self.plan.envs:
                    try:
                        env.close()
                    except Exception as exc:  # noqa: BLE001 - report, keep closing the rest
                        self.console.print(f"[red]closing {env.name} failed: {exc}")
        # Facts such as "daemon started by sandbench" are only known after the run.
        write_meta(self.out, {**self.meta(), "finished": now_iso()})

    def _run_bench(self, bench: Benchmark, journal: Journal, progress: Progress, task: Any) -> None:
        params = self.plan.params(bench)
        rounds = int(params["rounds"])
        flags = {e.name: e.flags() for e in self.plan.envs}

        def fail(env: Environment, rnd: int, exc: BaseException) -> None:
            self.failures += 1
            journal.append(
                Failure(env.name, bench.name, rnd, _error_text(exc), {}, now_iso())
            )
            self.console.print(f"[red]{bench.name} on {env.name}, round {rnd}: {_error_text(exc)}")
            debug = self.ctx.log_path(env.name, bench.name, "errors.log")
            with open(debug, "a") as fh:
                fh.write(f"--- round {rnd}\n{traceback.format_exc()}\n")

        with ExitStack() as stack:
            sessions: dict[str, RoundFn] = {}
            for env in self.plan.envs:
                progress.update(task, description=f"{bench.name}: setting up {env.name}")
                try:
                    sessions[env.name] = stack.enter_context(bench.session(env, self.ctx, params))
                except Exception as exc:  # noqa: BLE001 - the cell fails, the study goes on
                    for rnd in range(rounds):
                        fail(env, rnd, exc)
                        progress.advance(task)
            for rnd in range(rounds):
                for env in self.plan.envs:
                    fn = sessions.get(env.name)
                    if fn is None:
                        continue
                    progress.update(
                        task, description=f"{bench.name} {env.name} round {rnd + 1}/{rounds}"
                    )
                    try:
                        measured = fn(rnd)
                    except Exception as exc:  # noqa: BLE001 - the cell fails, the study goes on
                        fail(env, rnd, exc)
                    else:
                        for m in measured:
                            journal.append(
                                Sample(
                                    env=env.name,
                                    bench=bench.name,
                                    metric=m.metric,
                                    value=float(m.value),
                                    unit=m.unit,
                                    round=rnd,
                                    params=m.params,
                                    timestamp=now_iso(),
                                    raw=m.raw,
                                    flags=flags[env.name],
                                    extra=m.extra,
                                )
                            )
                    progress.advance(task)
            progress.update(task, description=f"{bench.name}: tearing down")
