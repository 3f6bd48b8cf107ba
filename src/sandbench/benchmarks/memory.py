"""Memory footprint: N idle sandboxes at once; for each, Private_Dirty (the paper's measure) and
PSS summed over every host process that belongs to it, from /proc/PID/smaps_rollup.

Which processes count is each Sandbox's host_pids() less its monitor_pids() (firejail's,
lxc-start, systemd-nspawn: their private dirty is the metric monitor_private_dirty, a
per-sandbox overhead reported apart) (the idle process on the host; the
container's processes for runc and crun; gVisor's sentry, gofer and stubs; Docker's shim and
everything under it; a VM's hypervisor process, whose private memory includes the guest's
RAM). Shared daemons (dockerd, containerd) are measured once per round as their own metric.

How many sandboxes a round starts: the profile's count, bounded so that the memory they
reserve up front (Environment.memory_reserved_mib: a VM's guest RAM) stays within the
profile's memory budget, and at least one. A sandbox whose processes cannot be found or read
fails the round with evidence: a footprint is never recorded as 0 for want of a measurement.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sandbench import procs
from sandbench.benchmarks import fleet
from sandbench.benchmarks.base import Benchmark, RoundFn, RunContext
from sandbench.benchmarks.params import BenchParams, Profile, RoundPolicy, param
from sandbench.benchmarks.servers import state_of
from sandbench.environments.base import Environment, Limits, Sandbox
from sandbench.errors import PartialRound, SandboxError
from sandbench.results import Measurement

KIB_PER_MIB = 1024.0


@dataclass(frozen=True)
class MemoryParams(BenchParams):
    count: int = param(3, high=10_000, doc="sandboxes started at once each round")
    memory_budget_mib: int = param(1024, unit="MiB", doc="what their reserved memory may add up to")
    settle_s: float = param(0.5, unit="s", low=0.0, high=600.0, doc="wait before reading memory")


def sandbox_count(env: Environment, limits: Limits, params: MemoryParams) -> tuple[int, str]:
    """(sandboxes per round, why that many): the profile's count, or fewer where what each
    reserves up front would exceed the profile's memory budget."""
    count = params.count
    reserved = env.memory_reserved_mib(limits)
    if not reserved:
        return count, "profile count"
    fit = max(1, params.memory_budget_mib // int(reserved))
    if fit < count:
        return fit, (f"memory budget: {params.memory_budget_mib} MiB / {reserved} MiB "
                     "reserved per sandbox")
    return count, "profile count"


def footprint(sb: Sandbox) -> procs.MemUse:
    """The memory of sb's host processes, less its monitors (Sandbox.monitor_pids, counted
    apart); SandboxError with evidence when there are none to measure (a dead hypervisor, a
    container without an id)."""
    monitors = set(sb.monitor_pids())
    pids = [p for p in sb.host_pids() if p not in monitors]
    use = procs.memory_of(pids)
    if not use.processes:
        raise SandboxError(
            f"sandbox {sb.name} of {sb.env_name}: no host process to measure "
            f"(host_pids() = {pids}); its memory was not measured",
            {"host_pids": pids, "state": state_of(sb)},
        )
    return use


def stop_all(boxes: list[Sandbox]) -> list[dict[str, Any]]:
    """Stop every sandbox at once (fleet.stop_each); the errors of those that failed, with
    their evidence."""
    return [{"sandbox": sb.name, "error": str(exc),
             "evidence": exc.evidence if isinstance(exc, SandboxError) else {}}
            for sb, exc in fleet.stop_each(boxes, workers=8)]


class Memory(Benchmark):
    name = "memory"
    short = "memory"
    title = "Memory footprint per sandbox"
    paper_figure = "memory footprint"
    figure_metrics = ("private_dirty",)
    converge_on = ("private_dirty",)
    description = "private dirty and PSS memory per idle sandbox (MiB)"
    profiles = {
        # Each round starts `count` sandboxes at once (claims test at n >= 5), fewer where
        # their reserved memory (a VM's guest RAM) exceeds memory_budget_mib (quick: one
        # 700 MiB qemu-vm, three 256 MiB microvms per round, each booting under TCG).
        "quick": Profile(RoundPolicy(5, 10), MemoryParams()),
        "paper": Profile(RoundPolicy(5, 10), MemoryParams(count=100, memory_budget_mib=7168,
                                                          settle_s=2.0)),
    }
    Params = MemoryParams

    @contextmanager
    def session(
        self, env: Environment, ctx: RunContext, params: MemoryParams
    ) -> Iterator[RoundFn]:
        count, why = sandbox_count(env, ctx.limits, params)

        def one(rnd: int) -> list[Measurement]:
            out: list[Measurement] = []
            boxes: list[Sandbox] = []
            try:
                for _ in range(count):
                    spec = ctx.spec(
                        image=self.image, log=ctx.log_path(env.name, self.name, "console.log")
                    )
                    boxes.append(env.start(spec))
                # Let lazily started helpers (gofers, stubs) appear before counting.
                time.sleep(params.settle_s)
                for i, sb in enumerate(boxes):
                    use = footprint(sb)
                    extra = {"sandbox": i, "of": count, "count_from": why,
                             "processes": use.processes}
                    out.append(Measurement.size("private_dirty",
                                                use.private_dirty_kib / KIB_PER_MIB, "MiB",
                                                extra=extra))
                    out.append(Measurement.size("pss", use.pss_kib / KIB_PER_MIB, "MiB",
                                                extra=extra))
                    monitors = sb.monitor_pids()
                    if monitors:
                        mon = procs.memory_of(monitors)
                        out.append(Measurement.size(
                            "monitor_private_dirty", mon.private_dirty_kib / KIB_PER_MIB,
                            "MiB", extra={**extra, "processes": mon.processes}))
                shared = env.shared_pids()
                if shared:
                    use = procs.memory_of(shared)
                    if not use.processes:
                        raise SandboxError(
                            f"{env.name}: shared daemons {shared} could not be measured",
                            {"shared_pids": shared},
                        )
                    out.append(Measurement.size("shared_daemon_private_dirty",
                                                use.private_dirty_kib / KIB_PER_MIB, "MiB",
                                                extra={"processes": use.processes}))
            except BaseException as exc:
                stop_errors = stop_all(boxes)
                if stop_errors and isinstance(exc, SandboxError):
                    exc.evidence.setdefault("stop_errors", stop_errors)
                raise
            stop_errors = stop_all(boxes)
            if stop_errors:
                # The footprints were read before the stops: keep them, fail the round beside.
                raise PartialRound(
                    f"{len(stop_errors)} of {len(boxes)} sandboxes of {env.name} failed to "
                    f"stop after their memory was measured: {stop_errors[0]['error']}",
                    out, {"stop_errors": stop_errors})
            return out

        yield one
