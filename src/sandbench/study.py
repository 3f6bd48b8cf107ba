"""The run plan (profile, environments, benchmarks, rounds) and the loop that executes it.

Rounds are interleaved across environments (A B C A B C, not AAA BBB CCC), in an order
shuffled anew each round with a seed kept in meta.json, so that slow drifts of the machine
(thermal, background load) spread over all environments instead of biasing one. Only the
measured environment runs: every other environment's sandboxes are frozen during its round,
and each round records the CPU time that other processes used meanwhile ("noisy" above a
threshold). Every sample is journaled (fsync'd) as soon as it is measured.

Rounds are adaptive (pyperf's calibration, hyperfine's min-runs): a cell gets at least its
benchmark's `rounds` (enough for the scorecard's tests), then more until the 95 % interval of
each of its medians is within the plan's relative width, its `max_rounds` cap, or the
benchmark's share of the study's time budget. Each (env, bench) ends with a "cell" record
saying why it stopped.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import random
import signal
import statistics
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sandbench import __version__, paths
from sandbench.benchmarks.base import DEFAULT_TIMEOUTS, Benchmark, RoundFn, RunContext
from sandbench.benchmarks.params import (
    ROUND_KEYS,
    BenchParams,
    Profile,
    RoundPolicy,
    decode_profile,
)
from sandbench.environments.base import Environment, Limits, live_sandboxes
from sandbench.errors import NotApplicable, PartialRound, SandboxError
from sandbench.hostfacts import host_facts
from sandbench.noise import NOISY_CORE_FRACTION, CpuWatch
from sandbench.noise import rule as noise_rule
from sandbench.results import (
    CellEnd,
    Failure,
    Journal,
    NotApplicableCell,
    Sample,
    Timing,
    cell_progress,
    now_iso,
    write_meta,
)

# Imported with the module, not inside the first round: scipy's import takes ~0.6 s.
from sandbench.stats import params_key

PROFILES = ("quick", "paper")
EMULATED_QUICK_ROUNDS = 3
#: Relative half-width of a median's 95 % interval at which a cell stops early, per profile.
TARGET_REL_HALFWIDTH = {"quick": 0.05, "paper": 0.02}
#: The study's time budget per profile (seconds; None = unbounded): extra rounds stop there,
#: the minimum rounds always run (so a study can end somewhat past its budget).
DEFAULT_BUDGET_S: dict[str, float | None] = {"quick": 12 * 60.0, "paper": None}
#: Memory every sandbox may use, per profile (the paper gave each environment 2 GB).
MEMORY_MIB = {"quick": 2048, "paper": 2048}
#: Kinds of metric whose interval decides when a cell has enough rounds (counts of rare
#: events such as retransmits are mostly zero and say nothing about stability).
CONVERGING_KINDS = ("latency", "time", "rate", "size", "amount")


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
    #: The study's time budget in seconds; None = the profile's default (quick: 12 min).
    budget_s: float | None = None
    #: Seed of the per-round environment order (stored in meta.json; resume reuses it).
    seed: int = field(default_factory=lambda: random.SystemRandom().randrange(1, 2**31))
    #: Default seccomp profile on (everywhere it applies) or off (everywhere).
    seccomp: bool = True

    def settings(self, bench: Benchmark) -> Profile:
        """The benchmark's round policy and parameters under this plan: its profile's, with
        the study file's [bench.NAME] values decoded over them by its Params dataclass (the
        one decoder of profiles, study files and --resume); --rounds N fixes the policy."""
        prof = decode_profile(bench.Params, self.overrides.get(bench.name, {}),
                              f"bench.{bench.name}", bench.profiles[self.profile])
        if self.rounds_override is not None:
            prof = Profile(RoundPolicy(self.rounds_override, self.rounds_override), prof.params)
        return prof

    def check(self) -> None:
        """Raises UsageError where a benchmark's settings do not decode."""
        for b in self.benches:
            self.settings(b)

    def rounds_for(self, env: Environment, bench: Benchmark) -> int:
        """Minimum rounds of bench in env. The quick profile caps emulated environments (QEMU
        under TCG: each boot takes seconds to minutes) at EMULATED_QUICK_ROUNDS, so that a
        quick study stays quick; their numbers are flagged and decide no claim anyway."""
        rounds = self.settings(bench).rounds.rounds
        if self.profile == "quick" and self.rounds_override is None and "emulated" in env.flags():
            return min(rounds, EMULATED_QUICK_ROUNDS)
        return rounds

    def max_rounds_for(self, env: Environment, bench: Benchmark) -> int:
        """The cap of adaptive rounds: the policy's max_rounds (never below the minimum);
        --rounds N fixes both, and emulated environments in the quick profile get no extra."""
        low = self.rounds_for(env, bench)
        if self.rounds_override is not None:
            return low
        if self.profile == "quick" and "emulated" in env.flags():
            return low
        return max(low, self.settings(bench).rounds.max_rounds)

    @property
    def target_rel_halfwidth(self) -> float:
        return TARGET_REL_HALFWIDTH[self.profile]

    @property
    def budget(self) -> float | None:
        if self.rounds_override is not None:
            return None  # fixed rounds: nothing adaptive to bound
        return self.budget_s if self.budget_s is not None else DEFAULT_BUDGET_S[self.profile]

    @property
    def limits(self) -> Limits:
        """The same CPU and memory for every environment: every core of this machine and the
        profile's memory (capped to half of the machine's)."""
        import psutil

        mem = min(MEMORY_MIB[self.profile], psutil.virtual_memory().total // (2 * 1024 * 1024))
        return Limits(cpus=float(os.cpu_count() or 1), memory_mib=int(mem))

    def params(self, bench: Benchmark) -> BenchParams:
        """What the benchmark's session gets: an instance of its Params."""
        return self.settings(bench).params

    def cells(self) -> int:
        return sum(self.rounds_for(e, b) for b in self.benches for e in self.envs)

    def describe(self) -> dict[str, Any]:
        lim = self.limits
        return {
            "envs": [e.name for e in self.envs],
            "benches": [b.name for b in self.benches],
            # What each cell measures with: never a round setting (see "rounds").
            "params": {b.name: self.params(b).to_dict() for b in self.benches},
            # The round policy, once per benchmark: its rounds and max_rounds, and what each
            # environment gets of them (the quick profile caps emulated ones).
            "rounds": {b.name: {**self.settings(b).rounds.to_dict(), "by_env": {
                e.name: {"min": self.rounds_for(e, b), "max": self.max_rounds_for(e, b)}
                for e in self.envs}} for b in self.benches},
            "rounds_override": self.rounds_override,
            "adaptive": {
                "rule": "after the minimum rounds, a cell gets more rounds until every "
                "median's 95 % bootstrap interval is within +-target of it (the benchmark's "
                "converge_on metrics, else those of kind " + "/".join(CONVERGING_KINDS)
                + "), its max_rounds, or its benchmark's share "
                "of the remaining budget (the remaining time split evenly over the "
                "benchmarks not yet run)",
                "target_rel_halfwidth": self.target_rel_halfwidth,
                "budget_s": self.budget,
            },
            "converge_on": {b.name: list(b.converge_on) for b in self.benches},
            "seed": self.seed,
            "order": "environments shuffled every round with random.Random(seed + round)",
            "isolation": "other environments' sandboxes frozen (SIGSTOP or the runtime's "
            "pause) during each round; other processes' CPU time recorded, rounds above "
            f"{NOISY_CORE_FRACTION:.0%} of a core flagged noisy",
            "noise": noise_rule(),
            "limits": {"cpus": lim.cpus, "memory_mib": lim.memory_mib},
            "seccomp": "default" if self.seccomp else "off",
            "timeouts": {**DEFAULT_TIMEOUTS, **self.timeouts},
        }


def resume_meta(
    out: Path, given: dict[str, str | None], force: bool = False
) -> tuple[dict[str, Any], dict[str, str | None]]:
    """The meta.json of the run to resume and the flags its plan stands for. Flags given
    again must say the same; raises UsageError naming the one that differs. A directory a
    live run holds is refused; so is one begun on another machine or boot, unless force."""
    from sandbench.errors import UsageError
    from sandbench.results import SchemaError, read_meta, read_records, require_plan

    for pid, held in active_runs():
        if held and Path(held).resolve() == out.resolve():
            raise UsageError(f"--resume {str(out)!r}: run {pid} is still running in it; "
                             "wait for it or stop it first")

    try:
        meta = read_meta(out)
        require_plan(meta, out)
        for _ in read_records(out):  # a corrupt journal is refused before anything runs
            pass
    except SchemaError as e:
        raise UsageError(f"--resume: {e}") from None
    if meta.get("finished"):
        raise UsageError(f"--resume {str(out)!r}: that run finished; nothing to resume")
    if not force:
        now = host_facts()
        for key in ("hostname", "machine_id", "boot_id"):
            was = (meta.get("host") or {}).get(key)
            if was and now.get(key) and was != now[key]:
                raise UsageError(
                    f"--resume {str(out)!r}: the run began with {key} {was!r}, this is "
                    f"{now[key]!r}; its cells would mix machines or boots (--force to accept)")
    if given.get("--out") and Path(str(given["--out"])).resolve() != out.resolve():
        raise UsageError("--resume and --out name different directories; give only --resume")
    plan = meta["plan"]
    stored: dict[str, str | None] = {
        "--profile": meta["profile"],
        "--env": ",".join(plan["envs"]),
        "--bench": ",".join(plan["benches"]),
        "--rounds": None if plan.get("rounds_override") is None else str(plan["rounds_override"]),
        "--baseline": meta.get("baseline"),
    }
    for flag, value in given.items():
        if flag in stored and value is not None and value != stored[flag]:
            raise UsageError(
                f"--resume: {flag} {value!r} differs from the run's plan ({stored[flag]!r})"
            )
    return meta, stored


def resume_plan(meta: dict[str, Any], envs: Sequence[Environment],
                benches: Sequence[Benchmark]) -> Plan:
    """The stored plan, rebuilt once from meta.json as data (no flags in between): the same
    environments, benchmarks, parameters, rounds, timeouts, seed, seccomp and budget. Refused
    (UsageError) when an environment or benchmark of the run is unknown or unavailable here,
    or when this machine or its runtimes would not give comparable cells (the checked facts
    are comparability's, shared with compare)."""
    from sandbench.comparability import resume_differences
    from sandbench.errors import UsageError

    stored = meta["plan"]
    by_env = {e.name: e for e in envs}
    by_bench = {b.name: b for b in benches}
    chosen = []
    for name in stored["envs"]:
        if name not in by_env:
            raise UsageError(f"--resume: the run's environment {name!r} is not one this "
                             f"sandbench knows; known: {', '.join(by_env)}")
        av = by_env[name].available()
        if not av.ok:
            raise UsageError(f"--resume: the run's environment {name!r} is not available "
                             f"here: {av.reason}")
        chosen.append(by_env[name])
    unknown = [b for b in stored["benches"] if b not in by_bench]
    if unknown:
        raise UsageError(f"--resume: the run's benchmark {unknown[0]!r} is not one this "
                         f"sandbench knows; known: {', '.join(by_bench)}")
    diffs = resume_differences(meta, host_facts(), {e.name: e.facts() for e in chosen})
    if diffs:
        raise UsageError("--resume: " + "; ".join(diffs))
    adaptive = stored.get("adaptive") or {}
    plan = Plan(
        profile=str(meta["profile"]),
        envs=chosen,
        benches=[by_bench[b] for b in stored["benches"]],
        rounds_override=stored.get("rounds_override"),
        unavailable=dict(meta.get("unavailable") or {}),
        baseline=str(meta.get("baseline") or "host"),
        # The stored parameters and round policy are the plan: resume measures exactly what
        # the run began, decoded again by each benchmark's Params (never trusted as a dict).
        overrides={b: {**(stored["params"].get(b) or {}),
                       **{k: v for k, v in ((stored.get("rounds") or {}).get(b) or {}).items()
                          if k in ROUND_KEYS}}
                   for b in stored["benches"]},
        timeouts=stored.get("timeouts", {}),
        budget_s=adaptive.get("budget_s"),
        seccomp=stored.get("seccomp", "default") != "off",
    )
    if "seed" in stored:
        plan.seed = int(stored["seed"])
    try:
        plan.check()
    except UsageError as e:
        raise UsageError(f"--resume: the run's stored plan: {e}") from None
    return plan


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


def stop_live_sandboxes(console: Console) -> None:
    for sb in live_sandboxes():
        try:
            sb.stop()
        except Exception as exc:  # noqa: BLE001 - report, keep stopping
            console.print(f"[red]stopping {sb.name} failed: {exc}")


@contextlib.contextmanager
def shielded_from_signals(console: Console, reraise: bool = True) -> Iterator[None]:
    """Teardown runs to its end: a second Ctrl-C or SIGTERM while sandboxes and daemons are
    being removed would leave half of them. The signal is noted, said, and raised after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        got.append(signum)
        console.print("[yellow]finishing teardown first (kill -9 and `sandbench clean` "
                      "if it hangs)")

    old = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if got and reraise:
        raise KeyboardInterrupt


def remove_own_leftovers() -> list[str]:
    """What this process still has on record after its teardown (a sandbox interrupted after
    its owner record was written and before its object could be stopped), removed the way
    clean removes a killed run's. Returns one line per item that could not be removed."""
    from sandbench import cgroups, cleanup, net

    # An interrupt inside a stop can drop a sandbox's owner record before its address slot
    # (the cgroup's removal releases the id once the netns is gone): the slot still names
    # this process.
    mine = paths.abandon_own_records() | net.slot_ids_of(os.getpid())
    if not mine:
        cgroups.remove_base_if_empty()  # a sandbox removed in full may leave the shared parent
        return []
    # This process's children count too: a sandbox's first process whose object was lost.
    items = [i for i in cleanup.find_leftovers(own_children=True)
             if paths.ids_in(i.ident) & mine]
    errors = []
    for item in items:
        try:
            item.remove()
        except Exception as exc:  # noqa: BLE001 - say it and go on
            errors.append(f"could not remove {item.kind} {item.ident}: {exc}")
    cgroups.remove_base_if_empty()
    return errors


def active_runs() -> list[tuple[int, str]]:
    """(pid, results dir) of sandbench runs alive now, from their lock files."""

    d = paths.STATE_DIR / "runs"
    out = []
    if d.is_dir():
        for f in d.iterdir():
            try:
                pid = int(f.name)
            except ValueError:
                continue
            lines = f.read_text().splitlines()
            if pid == os.getpid():
                continue
            if _lock_alive(pid, lines[1] if len(lines) > 1 else ""):
                out.append((pid, lines[0].strip() if lines else ""))
            else:
                f.unlink(missing_ok=True)
    return out


def _lock_alive(pid: int, created: str) -> bool:
    """A lock's pid is alive only as the process that wrote it: same start time (pid reuse)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return not created or abs(proc.create_time() - float(created)) <= 0.01
    except (psutil.NoSuchProcess, ValueError):
        return False


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Marks this run as alive so that `sandbench clean` leaves its sandboxes alone."""
    import psutil

    f = paths.state("runs") / str(os.getpid())
    # Second line: our start time, so a later process reusing the pid is not taken for us.
    f.write_text(f"{out.resolve()}\n{psutil.Process().create_time()!r}\n")
    try:
        yield
    finally:
        f.unlink(missing_ok=True)


def _error_text(exc: BaseException) -> str:
    msg = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {msg}"


def _evidence(exc: BaseException) -> dict[str, Any]:
    ev = getattr(exc, "evidence", None)
    return dict(ev) if isinstance(ev, dict) else {}


def _thaw_all() -> None:
    for sb in live_sandboxes():
        with contextlib.suppress(Exception):
            sb.thaw()


def isolate(env_name: str) -> None:
    """Let only env_name's sandboxes run: freeze every other live sandbox, thaw its own."""
    for sb in live_sandboxes():
        try:
            if sb.env_name == env_name:
                sb.thaw()
            else:
                sb.freeze()
        except Exception:  # noqa: BLE001, S112 - a dead sandbox has nothing to freeze
            continue


class _GuardedSession:
    """A benchmark session whose teardown cannot end the study: an exception from its exit
    is handed to `on_error` (which journals it) instead of escaping the ExitStack."""

    def __init__(self, cm: contextlib.AbstractContextManager[RoundFn],
                 on_error: Any) -> None:
        self.cm = cm
        self.on_error = on_error

    def __enter__(self) -> RoundFn:
        return self.cm.__enter__()

    def __exit__(self, *exc: Any) -> bool:
        try:
            return bool(self.cm.__exit__(*exc))
        except Exception as err:  # noqa: BLE001 - journaled; the study goes on
            self.on_error(err)
            return False


class _Sessions:
    """The open sessions of one benchmark. A benchmark ends with every sandbox idle and none
    measured, so its sessions are closed in parallel: teardown is mostly waiting (gVisor's
    sandbox and Docker's shim take 1-2 s to exit with the CPU idle), and 12 environments
    closed one after another cost a study about a minute. When the benchmark ends with an
    exception (Ctrl-C, a full disk) they are closed one after another, newest first, each
    seeing the exception, as an ExitStack would. Every sandbox is thawed first so that
    teardown can exec in it."""

    def __init__(self) -> None:
        self._open: list[_GuardedSession] = []

    def enter(self, session: _GuardedSession) -> RoundFn:
        fn = session.__enter__()
        self._open.append(session)
        return fn

    def __enter__(self) -> _Sessions:
        return self

    def __exit__(self, *exc: Any) -> None:
        _thaw_all()
        sessions, self._open = self._open, []
        if exc[0] is not None or len(sessions) < 2:
            stack = ExitStack()
            for s in sessions:  # pushed in the order entered: the stack unwinds newest first
                stack.push(s)
            stack.__exit__(*exc)
            return
        # _GuardedSession journals its own errors; anything else (a BaseException) is
        # re-raised here once every session has been closed.
        pool = ThreadPoolExecutor(max_workers=len(sessions))
        futures = [pool.submit(s.__exit__, None, None, None) for s in sessions]
        interrupted: BaseException | None = None
        while True:
            try:
                wait(futures)
                break
            except KeyboardInterrupt as exc:
                # The closes go on in their threads: leaving now would let the run's own
                # teardown stop the daemons under them. Wait, then pass the interrupt on.
                interrupted = exc
        pool.shutdown()
        for f in futures:
            f.result()
        if interrupted is not None:
            raise interrupted


@dataclass
class _CellState:
    """One (env, bench) while its rounds run."""

    env: Environment
    min_rounds: int
    max_rounds: int
    done: set[int]
    ended: bool
    #: Headline values by (metric, params) and round: convergence takes one value per
    #: round (the round's median), the unit of replication (stats.per_round).
    values: dict[tuple[str, str], dict[int, list[float]]] = field(default_factory=dict)
    fn: RoundFn | None = None
    extra_rounds: int = 0

    @property
    def count(self) -> int:
        return len(self.done)


def rel_halfwidth(values: dict[tuple[str, str], dict[int, list[float]]]) -> float | None:
    """The widest relative half-width of the medians' 95 % intervals over the cell's metrics,
    one value per round (its median); None before any value. A metric that is constant
    (e.g. 0 everywhere) is settled."""
    from sandbench import stats

    worst: float | None = None
    for rounds in values.values():
        vals = [statistics.median(v) for v in rounds.values()]
        if len(vals) < 2:
            return math.inf
        if max(vals) == min(vals):
            w = 0.0
        else:
            med = statistics.median(vals)
            lo, hi = stats.median_ci(vals)
            w = math.inf if med == 0 or not math.isfinite(lo) else (hi - lo) / 2 / abs(med)
        worst = w if worst is None else max(worst, w)
    return worst


class Runner:
    def __init__(
        self, plan: Plan, out: Path, console: Console, previous: dict[str, Any] | None = None
    ) -> None:
        self.plan = plan
        self.out = out
        self.console = console
        self.ctx = RunContext(
            out=out, profile=plan.profile, timeouts={**DEFAULT_TIMEOUTS, **plan.timeouts},
            limits=plan.limits, seccomp=plan.seccomp,
        )
        self.failures = 0
        #: meta.json of the run being resumed, if any.
        self.previous = previous
        self.done, self.ended = cell_progress(out) if previous else (set(), set())
        self.t0 = time.monotonic()
        budget = plan.budget
        self.budget_end = None if budget is None else self.t0 + budget
        self.noisy_rounds = 0
        #: bench -> (wall seconds, spans): where each benchmark's time went (Timing records).
        self.timings: dict[str, tuple[float, dict[str, float]]] = {}
        self._spans: dict[str, float] = {}
        self._facts: dict[str, Any] | None = None

    def _env_facts(self) -> dict[str, Any]:
        # Asked once: versions and settings do not change during a run, and asking every
        # runtime and QEMU again when the run ends cost several seconds.
        if self._facts is None:
            self._facts = {e.name: {**e.facts(), "isolation_class": e.isolation_class,
                                    "paper_lineage": e.paper_lineage}
                           for e in self.plan.envs}
        return self._facts

    def meta(self) -> dict[str, Any]:
        limits = self.plan.limits
        meta: dict[str, Any] = {
            "tool_version": __version__,
            "created": now_iso(),
            "profile": self.plan.profile,
            "plan": self.plan.describe(),
            "host": host_facts(),
            "environments": self._env_facts(),
            "unavailable": self.plan.unavailable,
            "baseline": self.plan.baseline,
            "resources": {
                "requested": {"cpus": limits.cpus, "memory_mib": limits.memory_mib},
                "by_env": {e.name: e.limits_applied(limits) for e in self.plan.envs},
            },
        }
        if self.previous:
            meta["created"] = self.previous["created"]
            # The run's host facts are those it began with; a resume (same machine, or
            # --force) appends the facts it found instead of overwriting them.
            if self.previous.get("host"):
                meta["host"] = self.previous["host"]
                hosts: list[Any] = list(self.previous.get("resumed_host") or [])
                meta["resumed_host"] = [*hosts, host_facts()]
            meta["resumed"] = [*self.previous.get("resumed", []), now_iso()]
        return meta

    def pending(self) -> int:
        return sum(
            max(0, self.plan.rounds_for(e, b) - sum(
                1 for (en, bn, _r) in self.done if en == e.name and bn == b.name))
            for b in self.plan.benches
            for e in self.plan.envs
            if (e.name, b.name) not in self.ended
        )

    def run(self) -> None:
        self._t_run = time.monotonic()
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
                benches = self.plan.benches
                for i, bench in enumerate(benches):
                    deadline = None
                    if self.budget_end is not None:
                        now = time.monotonic()
                        deadline = now + max(0.0, self.budget_end - now) / (len(benches) - i)
                    try:
                        self._run_bench(bench, journal, progress, task, deadline)
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except OSError as exc:
                        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                            raise
                        self._runner_fault(bench, exc)
                    except Exception as exc:  # noqa: BLE001 - one benchmark, not the study
                        self._runner_fault(bench, exc)
            finally:
                t_close = time.monotonic()
                with shielded_from_signals(self.console):
                    _thaw_all()
                    # A sandbox interrupted between its creation and its session's entry has
                    # no session to stop it: stop it here, before its daemon goes.
                    stop_live_sandboxes(self.console)
                    for env in self.plan.envs:
                        try:
                            env.close()
                        except Exception as exc:  # noqa: BLE001 - report, keep closing
                            self.console.print(f"[red]closing {env.name} failed: {exc}")
                    for line in remove_own_leftovers():
                        self.console.print(f"[red]{line}")
                    closing = time.monotonic() - t_close
                    bench_wall = sum(w for w, _s in self.timings.values())
                    run_wall = time.monotonic() - self._t_run
                    with contextlib.suppress(OSError, ValueError):
                        journal.append(Timing("_run", round(run_wall, 3), {
                            "benchmarks": round(bench_wall, 3), "close": round(closing, 3),
                            "other": round(max(0.0, run_wall - bench_wall - closing), 3)},
                            now_iso()))
        # Facts such as "daemon started by sandbench" are only known after the run.
        write_meta(self.out, {**self.meta(), "finished": now_iso()})

    def _runner_fault(self, bench: Benchmark, exc: BaseException) -> None:
        """A fault outside any one cell (a bug): say so in one line, keep the traceback."""
        self.failures += 1
        log = self.ctx.log_path("_runner", bench.name, "errors.log")
        with open(log, "a") as fh:
            fh.write(traceback.format_exc() + "\n")
        self.console.print(
            f"[red]{bench.name}: stopped by an unexpected error ({_error_text(exc)}); "
            f"traceback in {log}; going on with the next benchmark")

    @contextlib.contextmanager
    def _span(self, what: str) -> Iterator[None]:
        """Add the time spent inside to the current benchmark's span `what`."""
        t0 = time.monotonic()
        try:
            yield
        finally:
            self._spans[what] = self._spans.get(what, 0.0) + time.monotonic() - t0

    def _run_bench(self, bench: Benchmark, journal: Journal, progress: Progress, task: Any,
                   deadline: float | None) -> None:
        """One benchmark, and a timing record of where its wall time went."""
        self._spans = {}
        t0 = time.monotonic()
        try:
            self._bench_cells(bench, journal, progress, task, deadline)
        finally:
            wall = time.monotonic() - t0
            spans = {k: round(v, 3) for k, v in self._spans.items()}
            spans["other"] = round(max(0.0, wall - sum(self._spans.values())), 3)
            self.timings[bench.name] = (wall, spans)
            with contextlib.suppress(OSError, ValueError):  # a closed or full journal
                journal.append(Timing(bench.name, round(wall, 3), spans, now_iso()))

    def _bench_cells(self, bench: Benchmark, journal: Journal, progress: Progress, task: Any,
                     deadline: float | None) -> None:
        params = self.plan.params(bench)
        target = self.plan.target_rel_halfwidth
        cells: dict[str, _CellState] = {}
        for e in self.plan.envs:
            done = {r for (en, bn, r) in self.done if en == e.name and bn == bench.name}
            cells[e.name] = _CellState(
                env=e, min_rounds=self.plan.rounds_for(e, bench),
                max_rounds=self.plan.max_rounds_for(e, bench), done=done,
                ended=(e.name, bench.name) in self.ended)
        if self.previous:
            from sandbench.results import read_samples

            for smp in read_samples(self.out):
                c = cells.get(smp.env)
                if c is not None and smp.bench == bench.name:
                    self._keep(c, smp.metric, smp.params, smp.kind, float(smp.value),
                               bench.converge_on, smp.round)
        flags = {e.name: e.flags() for e in self.plan.envs}

        lock = threading.Lock()  # teardown failures may come from several closing threads

        def fail(env: Environment, rnds: list[int], exc: BaseException, what: str = "",
                 beside: Sequence[Sample] = ()) -> None:
            with lock:
                _fail(env, rnds, exc, what, beside)

        def _fail(env: Environment, rnds: list[int], exc: BaseException, what: str,
                  beside: Sequence[Sample]) -> None:
            """Journal the failure of `rnds` (with a round's finished samples `beside` it, in
            the same write: a kill leaves both or neither)."""
            self.failures += len(rnds) or 1
            text = (what + _error_text(exc)) if what else _error_text(exc)
            journal.append_many([*beside, *(
                Failure(env.name, bench.name, r, text, {}, now_iso(), _evidence(exc))
                for r in rnds)])
            where = f"round {rnds[0]}" if rnds and rnds[0] >= 0 else "teardown"
            self.console.print(f"[red]{bench.name} on {env.name}, {where}: {text}")
            debug = self.ctx.log_path(env.name, bench.name, "errors.log")
            with open(debug, "a") as fh:
                fh.write(f"--- rounds {rnds}\n{traceback.format_exc()}\n")
            progress.advance(task, len([r for r in rnds if r >= 0]))

        def not_applicable(c: _CellState, exc: NotApplicable) -> None:
            """The benchmark has no meaning here: its reason is the cell's outcome, no
            rounds, no failure; the cell ends "not applicable" (a resume skips it)."""
            c.ended = True
            stamp = now_iso()
            # One write: a resumed run sees the reason and the cell's end, or neither.
            journal.append_many([
                NotApplicableCell(c.env.name, bench.name, exc.reason, stamp,
                                  dict(exc.evidence)),
                CellEnd(c.env.name, bench.name, 0, "not applicable", None, stamp)])
            self.console.print(f"{bench.name} on {c.env.name}: not applicable ({exc.reason})")
            progress.advance(task, len([r for r in range(c.min_rounds) if r not in c.done]))

        def end(c: _CellState, reason: str) -> None:
            c.ended = True
            width = rel_halfwidth(c.values)
            journal.append(CellEnd(
                c.env.name, bench.name, c.count, reason,
                None if width is None or not math.isfinite(width) else round(width, 5),
                now_iso()))

        with _Sessions() as sessions:
            for c in cells.values():
                if c.ended:
                    continue
                env = c.env
                progress.update(task, description=f"{bench.name}: setting up {env.name}")
                with self._span("isolate"):
                    isolate(env.name)
                try:
                    with self._span("setup"):
                        env.setup()
                        guarded = _GuardedSession(
                            bench.session(env, self.ctx, params),
                            lambda err, env=env: fail(env, [-1], err, "teardown: "))
                        c.fn = sessions.enter(guarded)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except NotApplicable as exc:
                    not_applicable(c, exc)
                except Exception as exc:  # noqa: BLE001 - the cell fails, the study goes on
                    todo = [r for r in range(c.min_rounds) if r not in c.done]
                    fail(env, todo, exc)
                    c.done.update(todo)
                    end(c, "failed")
            rnd = 0
            while True:
                active = [c for c in cells.values() if not c.ended and c.fn is not None]
                if not active:
                    break
                order = list(active)
                random.Random(f"{self.plan.seed}:{bench.name}:{rnd}").shuffle(order)
                for c in order:
                    if rnd in c.done:
                        continue
                    if c.count >= c.min_rounds:
                        reason = self._stop_reason(c, target, deadline)
                        if reason:
                            end(c, reason)
                            continue
                        c.extra_rounds += 1
                        progress.update(task, total=(progress.tasks[0].total or 0) + 1)
                    self._round(bench, c, rnd, journal, progress, task, flags, fail)
                # A cell whose minimum and cap are reached ends without another pass.
                for c in active:
                    if not c.ended and c.count >= c.min_rounds:
                        reason = self._stop_reason(c, target, deadline)
                        if reason:
                            end(c, reason)
                rnd += 1
            progress.update(task, description=f"{bench.name}: tearing down")
            t_teardown = time.monotonic()
        self._spans["teardown"] = time.monotonic() - t_teardown

    def _stop_reason(self, c: _CellState, target: float, deadline: float | None) -> str:
        """Why the cell has enough rounds now, or "" to go on."""
        with self._span("convergence"):
            return self._stop_reason_now(c, target, deadline)

    def _stop_reason_now(self, c: _CellState, target: float, deadline: float | None) -> str:
        if not c.values:
            return "failed" if c.count >= c.min_rounds else ""
        if self.plan.rounds_override is not None:
            return "fixed"
        width = rel_halfwidth(c.values)
        if width is not None and width <= target:
            return "converged"
        if c.count >= c.max_rounds:
            return "cap"
        if deadline is not None and time.monotonic() >= deadline:
            return "budget"
        return ""

    @staticmethod
    def _keep(c: _CellState, metric: str, params: dict[str, Any], kind: str,
              value: float, converge_on: tuple[str, ...] = (), rnd: int = -1) -> None:
        if converge_on and metric not in converge_on:
            return
        if kind and kind not in CONVERGING_KINDS:
            return
        key = (metric, repr(params_key(params)))
        rounds = c.values.setdefault(key, {})
        # A value without a round is a unit of its own.
        rounds.setdefault(rnd if rnd >= 0 else -1 - len(rounds), []).append(value)

    def _round(self, bench: Benchmark, c: _CellState, rnd: int, journal: Journal,
               progress: Progress, task: Any, flags: dict[str, list[str]], fail: Any) -> None:
        env = c.env
        fn = c.fn
        assert fn is not None
        progress.update(task, description=f"{bench.name} {env.name} round {rnd + 1}")
        with self._span("isolate"):
            isolate(env.name)
        with self._span("noise"):
            measured_pids: list[int] = []
            for sb in live_sandboxes():
                if sb.env_name == env.name:
                    with contextlib.suppress(Exception):
                        measured_pids += sb.host_pids()
            with contextlib.suppress(Exception):
                measured_pids += env.shared_pids()
            watch = CpuWatch(measured_pids)
        c.done.add(rnd)
        after: PartialRound | None = None
        try:
            with self._span("rounds"):
                measured = fn(rnd)
        except PartialRound as exc:  # finished samples, then a failure: both are kept
            measured, after = exc.measured, exc
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise  # the results disk is full: no later cell can be kept
            fail(env, [rnd], exc)
            return
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the cell fails, the study goes on
            fail(env, [rnd], exc)
            return
        with self._span("noise"):
            noise = watch.stop()
        unmeasured = [m for m in measured if not math.isfinite(float(m.value))]
        if unmeasured:  # never journaled: a number the tool did not measure is no sample
            fail(env, [rnd], SandboxError(
                f"{bench.name} returned a non-finite {unmeasured[0].metric} "
                f"({unmeasured[0].value!r}): a benchmark bug, the round is not recorded",
                {"metrics": {m.metric: repr(m.value) for m in unmeasured}}))
            return
        if noise.noisy:
            self.noisy_rounds += 1
        stamp = now_iso()
        samples = []
        for m in measured:
            extra = dict(m.extra)
            own_flags = [str(f) for f in extra.pop("flags", [])]
            extra["other_cpu_pct"] = round(noise.core_fraction * 100, 3)
            if noise.noisy:
                extra["other_cpu_top"] = list(noise.busiest)
            sample_flags = sorted({*flags[env.name], *own_flags,
                                   *(["noisy"] if noise.noisy else [])})
            samples.append(Sample(
                env=env.name, bench=bench.name, metric=m.metric, value=float(m.value),
                unit=m.unit, round=rnd, params=m.params, timestamp=stamp, raw=m.raw,
                flags=sample_flags, extra=extra, kind=m.kind, direction=m.direction))
            self._keep(c, m.metric, m.params, m.kind, float(m.value), bench.converge_on, rnd)
        if after is not None:
            with self._span("journal"):
                fail(env, [rnd], after, beside=samples)
            return
        with self._span("journal"):
            journal.append_many(samples)
        progress.advance(task)
