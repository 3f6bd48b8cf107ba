"""Density: how many idle sandboxes of one environment fit on this host, and what each costs
as the host fills.

Sandboxes are started one after another, each timed from prepare until its probe (the first
process) has connected to the host side of its link, as in `startup`, and kept. The ramp
stops at the first rule that fires:

  before a start  cap (the profile's count), time_cap (the profile's seconds),
                  memory_reserved (the memory VMs reserve up front would pass the floor),
                  a host limit the next start would cross (hostlimits: pids.max, open files,
                  inotify instances, network namespaces, address slots; named with its knob)
  a start         start_failed / start_timeout, or the host limit it ran into
  after a start   slow_start (more than slow_factor x the median of the first ten starts),
                  memory_pressure (PSI memory "some avg10" above psi_max),
                  mem_available_floor (MemAvailable under mem_floor_fraction of MemTotal)

Each step records N, its start time, MemAvailable, PSI and the load average; every k steps
the mean private dirty and PSS of the last k sandboxes (counted as `memory` counts them). At
the end: max_sandboxes with the stop reason, memory per sandbox at N (MemAvailable drop / N,
and mean private dirty over a sample spread over the ramp), and the start time's p50 and p99
over the last tenth of the ramp. Everything is stopped, in parallel, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from sandbench import procs
from sandbench.benchmarks import fleet, hostmem
from sandbench.benchmarks.base import Benchmark, RoundFn, RunContext
from sandbench.benchmarks.hostlimits import LimitWatch
from sandbench.benchmarks.params import BenchParams, Profile, RoundPolicy, param
from sandbench.environments.base import Environment, Sandbox
from sandbench.errors import SandboxError, StepTimeout
from sandbench.raw_records import RampStep, ramp_json
from sandbench.results import Measurement

KIB_PER_MIB = 1024.0


@dataclass
class Stop:
    reason: str
    detail: str
    knob: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


def mean_memory(boxes: list[Sandbox]) -> tuple[float | None, float | None, int]:
    """Mean private dirty and PSS (MiB) per sandbox over `boxes`, and how many counted;
    None for both when none could be counted (never a zero that was not measured)."""
    dirty = pss = 0.0
    counted = 0
    for sb in boxes:
        try:
            use = procs.memory_of(sb.host_pids())
        except (SandboxError, OSError):
            continue
        if not use.processes:
            continue
        dirty += use.private_dirty_kib / KIB_PER_MIB
        pss += use.pss_kib / KIB_PER_MIB
        counted += 1
    if not counted:
        return None, None, 0
    return dirty / counted, pss / counted, counted


def spread(n: int, m: int) -> list[int]:
    """Up to m indices spread evenly over range(n), first and last included."""
    if n <= m:
        return list(range(n))
    return sorted({round(i * (n - 1) / (m - 1)) for i in range(m)})


@dataclass(frozen=True)
class DensityParams(BenchParams):
    cap: int = param(200, low=1, high=100_000, doc="most sandboxes a ramp starts")
    time_cap_s: float = param(60.0, unit="s", low=1.0, high=86_400.0, doc="guard on a ramp's time")
    k: int = param(10, low=1, high=1000, doc="limits are sampled every k sandboxes")
    psi_max: float = param(10.0, unit="%", low=0.1, high=100.0, doc="memory pressure that stops it")
    mem_floor_fraction: float = param(0.10, low=0.01, high=0.9, doc="share of memory kept free")
    slow_factor: float = param(10.0, low=1.5, high=1000.0, doc="a start this much slower stops it")
    settle_s: float = param(1.0, unit="s", low=0.0, high=600.0, doc="wait before reading memory")
    mem_sample: int = param(20, low=1, high=10_000, doc="sandboxes whose memory is read")
    teardown_workers: int = param(16, low=1, high=256, doc="parallel stops")
    drop_caches: bool = param(False, doc="drop the page cache before the ramp and the reading")


class Density(Benchmark):
    name = "density"
    short = "density"
    own_figures = True  # report/figures_extra: the ramp, the burst
    converge_on = ("max_sandboxes",)
    description = "idle sandboxes started one after another until a limit: how many fit"
    #: Not in the default study: a ramp is long; run it with --bench density.
    default = False
    profiles = {
        "quick": Profile(RoundPolicy(1, 1), DensityParams()),
        # Until a rule other than the cap fires; the floor bounds it at 90 % of memory, and
        # the time cap is only a guard against a ramp that never ends.
        "paper": Profile(RoundPolicy(1, 1), DensityParams(
            cap=100_000, time_cap_s=7200.0, k=20, settle_s=2.0, mem_sample=50,
            drop_caches=True)),
    }
    Params = DensityParams

    @contextmanager
    def session(
        self, env: Environment, ctx: RunContext, params: DensityParams
    ) -> Iterator[RoundFn]:
        teardown_errors: list[SandboxError] = []

        def one(rnd: int) -> list[Measurement]:
            return self._ramp(env, ctx, params, rnd, teardown_errors)

        yield one
        if teardown_errors:
            # The round's measurements are kept; the runner records this as a teardown
            # failure with the evidence.
            raise teardown_errors[0]

    def _ramp(self, env: Environment, ctx: RunContext, p: DensityParams, rnd: int,
              teardown_errors: list[SandboxError]) -> list[Measurement]:
        cap, time_cap, k = p.cap, p.time_cap_s, p.k
        if p.drop_caches:
            hostmem.drop_caches()
        total = hostmem.mem_total_mib()
        floor = total * p.mem_floor_fraction
        base = hostmem.mem_available_mib()
        reserved = env.memory_reserved_mib(ctx.limits)
        reserve_cap = int((base - floor) // reserved) if reserved else None
        watch = LimitWatch()
        boxes: list[Sandbox] = []
        steps: list[RampStep] = []
        stop: Stop | None = None
        t0 = time.perf_counter()
        try:
            while stop is None:
                n = len(boxes)
                stop = self._before(n, cap, time_cap, reserve_cap, reserved, floor,
                                    time.perf_counter() - t0, watch, k)
                if stop is not None:
                    break
                try:
                    probed = fleet.start(env, ctx, self.name)
                except Exception as exc:  # noqa: BLE001 - a failed start ends the ramp
                    if n == 0:
                        raise  # nothing measured: the round fails with the error
                    stop = self._failed(exc, n, watch)
                    break
                boxes.append(probed.sb)
                n += 1
                if n == 1 or n % k == 0:
                    with contextlib.suppress(SandboxError, OSError):
                        watch.learn(probed.sb.host_pids())
                step = RampStep(
                    n=n, start_time_s=probed.total_s, prepare_s=probed.prepare_s,
                    mem_available_mib=hostmem.mem_available_mib(),
                    psi_some_avg10=hostmem.psi_some_avg10(), load_1m=os.getloadavg()[0],
                    t_s=time.perf_counter() - t0)
                if n % k == 0:
                    dirty, pss, _ = mean_memory(boxes[-k:])
                    if dirty is None:
                        step = replace(step, memory_note=f"none of the last {k} sandboxes "
                                       "could be counted")
                    else:
                        step = replace(step, private_dirty_mib=dirty, pss_mib=pss)
                steps.append(step)
                stop = self._after(step, steps, p, floor)
            duration = time.perf_counter() - t0
            return self._measure(env, ctx, p, rnd, boxes, steps, stop, base, floor, duration)
        except (KeyboardInterrupt, SystemExit):
            # A paper ramp can run for an hour: Ctrl-C keeps the steps made so far (the
            # round itself is not journaled, it did not finish).
            if steps:
                with contextlib.suppress(OSError):
                    ctx.save_raw(env.name, self.name, rnd, "ramp-interrupted.json",
                                 ramp_json(steps))
            raise
        finally:
            took: float | None = None
            try:
                took = fleet.stop_all(boxes, p.teardown_workers)
            except SandboxError as e:
                teardown_errors.append(e)  # recorded with its evidence by the runner
            if boxes and took is not None:
                # Kept beside the steps: tearing thousands down is part of what a host costs.
                with contextlib.suppress(OSError):
                    ctx.save_raw(env.name, self.name, rnd, "teardown.json", json.dumps(
                        {"sandboxes": len(boxes), "seconds": round(took, 3),
                         "workers": p.teardown_workers}))

    @staticmethod
    def _before(n: int, cap: int, time_cap: float, reserve_cap: int | None,
                reserved: int | None, floor: float, elapsed: float,
                watch: LimitWatch, every: int) -> Stop | None:
        if n >= cap:
            return Stop("cap", f"the profile's cap of {cap} sandboxes")
        if elapsed >= time_cap:
            return Stop("time_cap", f"the profile's {time_cap:g} s for the ramp")
        if reserve_cap is not None and n >= reserve_cap:
            return Stop("memory_reserved",
                        f"each sandbox reserves {reserved} MiB up front: one more would take "
                        f"MemAvailable under the floor of {floor:.0f} MiB",
                        knob="the run's memory limit (memory reserved per sandbox)")
        hit = watch.check(n, every)
        if hit is not None:
            return Stop(hit.reason, f"{hit.knob}: {hit.used:g} of {hit.limit:g} used, one more "
                        f"sandbox takes about {watch.cost(hit):g}", knob=hit.knob)
        return None

    @staticmethod
    def _failed(exc: BaseException, n: int, watch: LimitWatch) -> Stop:
        text = str(exc) or type(exc).__name__
        evidence = dict(exc.evidence) if isinstance(exc, SandboxError) else {}
        blamed = watch.blame(n, text + " " + json.dumps(evidence, default=str))
        if blamed is not None:
            reason, knob = blamed
            return Stop(reason, f"start {n + 1} failed: {text}", knob=knob, evidence=evidence)
        reason = "start_timeout" if isinstance(exc, StepTimeout | TimeoutError) else \
            "start_failed"
        return Stop(reason, f"start {n + 1} failed: {text}", evidence=evidence)

    @staticmethod
    def _after(step: RampStep, steps: list[RampStep], p: DensityParams,
               floor: float) -> Stop | None:
        n = step.n
        if n > 10:
            med = statistics.median(s.start_time_s for s in steps[:10])
            if step.start_time_s > p.slow_factor * med:
                return Stop("slow_start", f"start {n} took {step.start_time_s:.3g} s, more "
                            f"than {p.slow_factor:g} x the median {med:.3g} s of the first "
                            "ten")
        psi = step.psi_some_avg10
        if psi is not None and psi > p.psi_max:
            return Stop("memory_pressure", f"PSI memory some avg10 {psi:g} % above "
                        f"{p.psi_max:g} %")
        if step.mem_available_mib < floor:
            return Stop("mem_available_floor", f"MemAvailable {step.mem_available_mib:.0f} "
                        f"MiB under the floor of {floor:.0f} MiB")
        return None

    def _measure(self, env: Environment, ctx: RunContext, p: DensityParams, rnd: int,
                 boxes: list[Sandbox], steps: list[RampStep], stop: Stop | None,
                 base: float, floor: float, duration: float) -> list[Measurement]:
        assert stop is not None
        n = len(boxes)
        raw = ctx.save_raw(env.name, self.name, rnd, "ramp.json", ramp_json(steps))
        # Let lazily started helpers appear and the kernel's counters settle before counting.
        time.sleep(p.settle_s)
        if p.drop_caches:
            hostmem.drop_caches()
        after = hostmem.mem_available_mib()
        sample = [boxes[i] for i in spread(n, p.mem_sample)]
        dirty, pss, counted = mean_memory(sample)
        tail = [s.start_time_s for s in steps[-max(1, -(-n // 10)):]]
        out = [Measurement.amount(
            "max_sandboxes", n, "sandboxes", raw=raw,
            extra={"stop_reason": stop.reason, "knob": stop.knob, "duration_s": duration,
                   "stop_detail": stop.detail, "stop_evidence": stop.evidence,
                   "mem_available_before_mib": base, "mem_available_after_mib": after,
                   "mem_floor_mib": floor, "psi_max": p.psi_max})]
        drop = base - after
        if drop <= 0:
            # Other processes freed more than the sandboxes took: no honest figure.
            out[0].extra["memavailable_note"] = (
                f"MemAvailable rose by {-drop:.1f} MiB over the ramp; not recorded")
        else:
            out.append(Measurement.size(
                "memory_per_sandbox", drop / n, "MiB", params={"method": "memavailable"},
                extra={"n": n, "mem_available_drop_mib": drop,
                       "caches_dropped": p.drop_caches}))
        if counted and dirty is not None:
            out.append(Measurement.size(
                "memory_per_sandbox", dirty, "MiB", params={"method": "private_dirty"},
                extra={"n": n, "sandboxes_counted": counted, "pss_mib": pss}))
        extra = {"n": n, "steps": len(tail)}
        out.append(Measurement.time("start_time_p50", fleet.percentile(tail, 50), "s",
                                    extra=extra))
        out.append(Measurement.time("start_time_p99", fleet.percentile(tail, 99), "s",
                                    extra=extra))
        return out
