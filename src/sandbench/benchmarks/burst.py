"""Burst: K sandboxes of one environment started at the same moment (the serverless / CI
fleet case, Firecracker's "50 microVMs at once"). All K are prepared first (namespace, link,
bundle, listener); then K threads released together by a barrier each run the launch command
and wait for their probe. The boundaries are startup's: a start is timed from its own launch
command to the accept of its probe, stamped in the listener's thread when it happens (startup's
create + start + network phases); the prepare before it (startup's phase_prepare: namespace,
link, bundle), done one sandbox after another before the starting line, is a metric of its
own. Where a runtime makes its namespaces inside its start command (Docker, Podman) that work
is in the start time; where sandbench makes them (runc, crun, runsc, the process sandboxes)
it is in the prepare time, as in startup. Per round: p50, p99 and max of the K start times,
the p50 of their prepares, and the burst's throughput (K over the time from the first launch
to the last probe)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from sandbench.benchmarks import fleet, hostmem
from sandbench.benchmarks.base import Benchmark, RoundFn, RunContext
from sandbench.benchmarks.params import BenchParams, Profile, RoundPolicy, param
from sandbench.environments.base import Environment
from sandbench.errors import SandboxError
from sandbench.raw_records import BurstStarts
from sandbench.results import Measurement

#: Seconds the K threads may take to reach the starting line (they are all started first).
BARRIER_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class BurstParams(BenchParams):
    k: int = param(10, high=1000, doc="sandboxes started at once")
    mem_floor_fraction: float = param(0.10, low=0.01, high=0.9, doc="share of memory kept free")
    teardown_workers: int = param(16, high=256, doc="parallel stops")


class Burst(Benchmark):
    name = "burst"
    short = "burst"
    own_figures = True  # report/figures_extra: the ramp, the burst
    converge_on = ("burst_start_time_p50",)
    description = "K sandboxes started at once: start time to network up (s), starts/s"
    #: Not in the default study (it would not fit the quick budget); --bench burst.
    default = False
    profiles = {
        "quick": Profile(RoundPolicy(5, 5), BurstParams()),
        "paper": Profile(RoundPolicy(10, 20), BurstParams(k=50)),
    }
    Params = BurstParams

    @contextmanager
    def session(
        self, env: Environment, ctx: RunContext, params: BurstParams
    ) -> Iterator[RoundFn]:
        teardown_errors: list[SandboxError] = []

        def one(rnd: int) -> list[Measurement]:
            return self._burst(env, ctx, params, rnd, teardown_errors)

        yield one
        if teardown_errors:
            raise teardown_errors[0]

    @staticmethod
    def size(env: Environment, ctx: RunContext, params: BurstParams) -> int:
        """K, or fewer where the memory K sandboxes reserve up front (VM guest RAM) would
        take MemAvailable under the floor; the K used is recorded with every sample."""
        k = params.k
        reserved = env.memory_reserved_mib(ctx.limits)
        if reserved:
            floor = hostmem.mem_total_mib() * params.mem_floor_fraction
            fits = int((hostmem.mem_available_mib() - floor) // reserved)
            if fits < 1:
                raise SandboxError(
                    f"not one sandbox reserving {reserved} MiB fits above the memory floor "
                    f"of {floor:.0f} MiB", {"mem_available_mib": hostmem.mem_available_mib()})
            k = min(k, fits)
        return k

    def _burst(self, env: Environment, ctx: RunContext, params: BurstParams, rnd: int,
               teardown_errors: list[SandboxError]) -> list[Measurement]:
        k = self.size(env, ctx, params)
        probes: list[fleet.Probed] = []
        try:
            for _ in range(k):
                probes.append(fleet.prepare(env, ctx, self.name))
            barrier = threading.Barrier(k)

            def go(p: fleet.Probed) -> None:
                barrier.wait(timeout=BARRIER_TIMEOUT_S)
                fleet.launch_and_wait(p, ctx)

            with ThreadPoolExecutor(max_workers=k) as pool:
                futures = [pool.submit(go, p) for p in probes]
                errors = [e for f in futures if (e := f.exception()) is not None]
            if errors:
                first = errors[0]
                evidence = dict(first.evidence) if isinstance(first, SandboxError) else {}
                raise SandboxError(f"{len(errors)} of {k} starts of the burst failed; "
                                   f"first: {first}", {**evidence, "failed_starts": len(errors)})
            times = [p.up_s for p in probes]
            prepares = [p.prepare_s for p in probes]
            span = (max(p.t_up for p in probes) - min(p.t_launch for p in probes)) / 1e9
            raw = ctx.save_raw(env.name, self.name, rnd, "burst.json",
                               BurstStarts(tuple(times)).to_json())
            ctx.save_raw(env.name, self.name, rnd, "burst-prepare.json", json.dumps(prepares))
            par = {"k": k}
            return [
                Measurement.time("burst_start_time_p50", fleet.percentile(times, 50), "s",
                                 raw=raw, params=par),
                Measurement.time("burst_start_time_p99", fleet.percentile(times, 99), "s",
                                 raw=raw, params=par),
                Measurement.time("burst_start_time_max", max(times), "s", raw=raw, params=par),
                Measurement.time("burst_prepare_time_p50", fleet.percentile(prepares, 50), "s",
                                 params=par),
                Measurement.rate("starts_per_second", k / span, "1/s", raw=raw, params=par,
                                 extra={"span_s": span}),
            ]
        finally:
            for p in probes:
                p.listener.close()
            try:
                fleet.stop_all([p.sb for p in probes], params.teardown_workers)
            except SandboxError as e:
                teardown_errors.append(e)
