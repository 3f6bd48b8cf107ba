"""The run plan (profile, environments, benchmarks, rounds) and the loop that executes it.

Rounds are interleaved across environments (A B C A B C, not AAA BBB CCC) so that slow drifts
of the machine (thermal, background load) spread over all environments instead of biasing one.
Every sample is journaled (fsync'd) as soon as it is measured.
"""

from __future__ import annotations

import contextlib
import errno
import os
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

from sandbench import __version__, paths
from sandbench.benchmarks.base import DEFAULT_TIMEOUTS, Benchmark, RoundFn, RunContext
from sandbench.environments.base import Environment
from sandbench.hostfacts import host_facts
from sandbench.results import Failure, Journal, Sample, finished_cells, now_iso, write_meta

PROFILES = ("quick", "paper")
EMULATED_QUICK_ROUNDS = 3


@dataclass
class Plan:
    profile: str
    envs: list[Environment]
    benches: list[Benchmark]
    rounds_override: int | None = None
    unavailable: dict[str, str] = field(default_factory=dict)
    baseline: str = "host"
    #: Per-benchmark parameter overrides (from a study file).
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Step timeouts overriding DEFAULT_TIMEOUTS.
    timeouts: dict[str, float] = field(default_factory=dict)

    def rounds_for(self, env: Environment, bench: Benchmark) -> int:
        """Rounds of bench in env. The quick profile caps emulated environments (QEMU under
        TCG: each boot takes seconds to minutes) at EMULATED_QUICK_ROUNDS, so that a quick
        study stays quick; their numbers are flagged as not comparable anyway."""
        rounds = int(self.params(bench)["rounds"])
        if self.profile == "quick" and self.rounds_override is None and "emulated" in env.flags():
            return min(rounds, EMULATED_QUICK_ROUNDS)
        return rounds

    def params(self, bench: Benchmark) -> dict[str, Any]:
        p = bench.params(self.profile)
        p.update(self.overrides.get(bench.name, {}))
        if self.rounds_override is not None:
            p["rounds"] = self.rounds_override
        return p

    def cells(self) -> int:
        return sum(self.rounds_for(e, b) for b in self.benches for e in self.envs)

    def describe(self) -> dict[str, Any]:
        return {
            "envs": [e.name for e in self.envs],
            "benches": [b.name for b in self.benches],
            "rounds": {b.name: int(self.params(b)["rounds"]) for b in self.benches},
            "params": {b.name: self.params(b) for b in self.benches},
            "rounds_override": self.rounds_override,
            "rounds_by_env": {
                b.name: {e.name: self.rounds_for(e, b) for e in self.envs} for b in self.benches
            },
            "timeouts": {**DEFAULT_TIMEOUTS, **self.timeouts},
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


def active_runs() -> list[tuple[int, str]]:
    """(pid, results dir) of sandbench runs alive now, from their lock files."""
    import psutil

    d = paths.STATE_DIR / "runs"
    out = []
    if d.is_dir():
        for f in d.iterdir():
            try:
                pid = int(f.name)
            except ValueError:
                continue
            if psutil.pid_exists(pid) and pid != os.getpid():
                out.append((pid, f.read_text().strip()))
            elif not psutil.pid_exists(pid):
                f.unlink(missing_ok=True)
    return out


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Marks this run as alive so that `sandbench clean` leaves its sandboxes alone."""
    f = paths.state("runs") / str(os.getpid())
    f.write_text(str(out.resolve()))
    try:
        yield
    finally:
        f.unlink(missing_ok=True)


def _error_text(exc: BaseException) -> str:
    msg = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {msg}"


class Runner:
    def __init__(
        self, plan: Plan, out: Path, console: Console, previous: dict[str, Any] | None = None
    ) -> None:
        self.plan = plan
        self.out = out
        self.console = console
        self.ctx = RunContext(
            out=out, profile=plan.profile, timeouts={**DEFAULT_TIMEOUTS, **plan.timeouts}
        )
        self.failures = 0
        #: meta.json of the run being resumed, if any.
        self.previous = previous
        self.done = finished_cells(out) if previous else set()

    def meta(self) -> dict[str, Any]:
        meta = {
            "tool_version": __version__,
            "created": now_iso(),
            "profile": self.plan.profile,
            "plan": self.plan.describe(),
            "host": host_facts(),
            "environments": {e.name: e.facts() for e in self.plan.envs},
            "unavailable": self.plan.unavailable,
            "baseline": self.plan.baseline,
        }
        if self.previous:
            meta["created"] = self.previous["created"]
            meta["resumed"] = [*self.previous.get("resumed", []), now_iso()]
        return meta

    def pending(self) -> int:
        return sum(
            1
            for b in self.plan.benches
            for e in self.plan.envs
            for r in range(self.plan.rounds_for(e, b))
            if (e.name, b.name, r) not in self.done
        )

    def run(self) -> None:
        write_meta(self.out, self.meta())
        with (
            run_lock(self.out),
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
            task = progress.add_task("starting", total=self.pending())
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
        todo = {
            e.name: [
                r
                for r in range(self.plan.rounds_for(e, bench))
                if (e.name, bench.name, r) not in self.done
            ]
            for e in self.plan.envs
        }

        def fail(env: Environment, rnds: list[int], exc: BaseException) -> None:
            self.failures += len(rnds)
            text = _error_text(exc)
            journal.append_many(
                [Failure(env.name, bench.name, r, text, {}, now_iso()) for r in rnds]
            )
            self.console.print(f"[red]{bench.name} on {env.name}, round {rnds[0]}: {text}")
            debug = self.ctx.log_path(env.name, bench.name, "errors.log")
            with open(debug, "a") as fh:
                fh.write(f"--- rounds {rnds}\n{traceback.format_exc()}\n")
            progress.advance(task, len(rnds))

        with ExitStack() as stack:
            sessions: dict[str, RoundFn] = {}
            for env in self.plan.envs:
                if not todo[env.name]:
                    continue
                progress.update(task, description=f"{bench.name}: setting up {env.name}")
                try:
                    sessions[env.name] = stack.enter_context(bench.session(env, self.ctx, params))
                except Exception as exc:  # noqa: BLE001 - the cell fails, the study goes on
                    fail(env, todo[env.name], exc)
            for rnd in range(rounds):
                for env in self.plan.envs:
                    fn = sessions.get(env.name)
                    if fn is None or rnd not in todo[env.name]:
                        continue
                    progress.update(
                        task, description=f"{bench.name} {env.name} round {rnd + 1}/{rounds}"
                    )
                    try:
                        measured = fn(rnd)
                    except OSError as exc:
                        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                            raise  # the results disk is full: no later cell can be kept
                        fail(env, [rnd], exc)
                        continue
                    except Exception as exc:  # noqa: BLE001 - the cell fails, the study goes on
                        fail(env, [rnd], exc)
                        continue
                    stamp = now_iso()
                    journal.append_many(
                        [
                            Sample(
                                env=env.name,
                                bench=bench.name,
                                metric=m.metric,
                                value=float(m.value),
                                unit=m.unit,
                                round=rnd,
                                params=m.params,
                                timestamp=stamp,
                                raw=m.raw,
                                flags=flags[env.name],
                                extra=m.extra,
                            )
                            for m in measured
                        ]
                    )
                    progress.advance(task)
            progress.update(task, description=f"{bench.name}: tearing down")
