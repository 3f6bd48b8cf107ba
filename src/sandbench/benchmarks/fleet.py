"""Many sandboxes of one environment: a start timed until the network is up (as in
`startup`: the probe, the sandbox's first process, connects to a listener on the host side of
its link, then stays idle), a parallel and complete teardown, and percentiles."""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sandbench.benchmarks.base import RunContext
from sandbench.benchmarks.startup import ProbeListener
from sandbench.environments.base import Environment, Sandbox
from sandbench.errors import SandboxError, StepTimeout


@dataclass
class Probed:
    """A prepared sandbox with its listener, then the times of its start (perf_counter_ns)."""

    sb: Sandbox
    listener: socket.socket
    t_prepare: int = 0
    t_prepared: int = 0
    t_launch: int = 0
    t_up: int = 0
    message: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def prepare_s(self) -> float:
        """Before Environment.prepare until it returned with the listener bound (startup's
        phase_prepare: what sandbench does before the runtime's command)."""
        return (self.t_prepared - self.t_prepare) / 1e9

    @property
    def up_s(self) -> float:
        """Launch command until the probe connected."""
        return (self.t_up - self.t_launch) / 1e9

    @property
    def total_s(self) -> float:
        """Prepare (namespace, bundle) plus launch until the probe connected: startup's
        startup_time (any wait between the two, a burst's starting line, left out)."""
        return self.prepare_s + self.up_s


def prepare(env: Environment, ctx: RunContext, bench: str) -> Probed:
    """Prepare a sandbox and a listener on the host side of its link."""
    t0 = time.perf_counter_ns()
    spec = ctx.spec(image="minimal", log=ctx.log_path(env.name, bench, "console.log"))
    sb = env.prepare(spec)
    try:
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            ls.bind((sb.host_address, 0))
            ls.listen(1)
        except BaseException:
            ls.close()
            raise
    except BaseException:
        sb.stop()
        raise
    p = Probed(sb, ls, t_prepare=t0)
    p.t_prepared = p.t_launch = time.perf_counter_ns()
    return p


def launch_and_wait(p: Probed, ctx: RunContext) -> None:
    """Launch with the probe as first process and wait (bounded) until it connects; the
    listener is closed either way. The sandbox stays up (the probe idles)."""
    try:
        argv = [p.sb.helper("probe"), p.sb.host_address, str(p.listener.getsockname()[1])]
        # A VM under emulation boots for minutes: wait as long as its own bound.
        bound = max(ctx.timeouts["probe"], p.sb.boot_timeout_s)
        # As in startup: accept() in a thread of its own stamps the connection when it
        # happens, even while the launch command has not returned yet (Docker, Podman).
        probe = ProbeListener(p.listener)
        probe.start(bound)
        p.t_launch = time.perf_counter_ns()
        p.sb.launch(argv)
        try:
            p.t_up = probe.wait(bound)
        except StepTimeout as exc:
            raise StepTimeout(str(exc), {"state": p.sb.describe_state()}) from None
        p.message = probe.message.decode(errors="replace").strip()
    finally:
        p.listener.close()


def start(env: Environment, ctx: RunContext, bench: str) -> Probed:
    """Prepare, launch, wait for the probe; on failure everything made is removed."""
    p = prepare(env, ctx, bench)
    try:
        launch_and_wait(p, ctx)
    except BaseException:
        p.sb.stop()
        raise
    return p


def stop_each(boxes: Sequence[Sandbox], workers: int) -> list[tuple[Sandbox, Exception]]:
    """Stop every sandbox, `workers` at a time (runtimes spend most of a stop waiting; gVisor
    takes ~2 s), each whatever the others did; the ones that failed, in the given order,
    with their errors."""

    def one(sb: Sandbox) -> Exception | None:
        try:
            sb.stop()
        except Exception as e:  # noqa: BLE001 - collected, the others still stop
            return e
        return None

    if not boxes:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(boxes)))) as pool:
        outcomes = list(pool.map(one, boxes))
    return [(sb, e) for sb, e in zip(boxes, outcomes, strict=True) if e is not None]


def stop_all(boxes: Sequence[Sandbox], workers: int) -> float:
    """stop_each, then the seconds taken; raises the first failure afterwards, with how many
    failed."""
    t0 = time.perf_counter()
    errors = [e for _, e in stop_each(boxes, workers)]
    took = time.perf_counter() - t0
    if errors:
        first = errors[0]
        evidence = dict(first.evidence) if isinstance(first, SandboxError) else {}
        raise SandboxError(
            f"{len(errors)} of {len(boxes)} sandboxes failed to stop; first: {first}",
            {**evidence, "failed_stops": len(errors)}) from first
    return took


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
