"""Startup time: from the launch command until a probe, started as the sandbox's first
process, has a working network stack and connects to a TCP listener on the host side of its
link (the paper: until the network stack is initialized). Also the teardown time, and the
time spent preparing what precedes the launch command (network namespace, bundle)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sandbench.benchmarks.base import Benchmark, RoundFn, RunContext
from sandbench.environments.base import Environment, SandboxSpec
from sandbench.errors import StepTimeout
from sandbench.results import Measurement


def wait_for_probe(listener: socket.socket, timeout: float) -> tuple[int, bytes]:
    """perf_counter_ns at accept() and the probe's message. Bounded by timeout."""
    listener.settimeout(timeout)
    try:
        conn, _ = listener.accept()
    except TimeoutError:
        raise StepTimeout(f"the probe did not connect within {timeout:g} s") from None
    t = time.perf_counter_ns()
    with conn:
        conn.settimeout(5)
        try:
            msg = conn.recv(64)
        except OSError:
            msg = b""
    return t, msg


class Startup(Benchmark):
    name = "startup"
    description = "launch command until the probe inside connects to the host (s)"
    profiles = {"quick": {"rounds": 10}, "paper": {"rounds": 100}}

    @contextmanager
    def session(
        self, env: Environment, ctx: RunContext, params: dict[str, Any]
    ) -> Iterator[RoundFn]:
        def one(rnd: int) -> list[Measurement]:
            log = ctx.log_path(env.name, self.name, "console.log")
            spec = SandboxSpec(image=self.image, log=log)
            with env.prepare(spec) as sb, socket.socket(socket.AF_INET, socket.SOCK_STREAM) as ls:
                ls.bind((sb.host_address, 0))
                ls.listen(1)
                argv = ["/sb/probe", sb.host_address, str(ls.getsockname()[1])]
                t0 = time.perf_counter_ns()
                sb.launch(argv)
                # A VM under emulation boots for minutes: wait as long as its own bound.
                bound = max(ctx.timeouts["probe"], float(getattr(env, "boot_timeout_s", 0.0)))
                t1, msg = wait_for_probe(ls, bound)
                guest: list[Measurement] = []
                report = getattr(sb, "guest_boot_report", None)
                boot = report() if callable(report) else {}
                if boot:
                    # The paper's VM figure: `systemd-analyze time` inside the guest.
                    guest.append(
                        Measurement("guest_boot_time", boot["guest_boot_total_s"], "s", extra=boot)
                    )
                t2 = time.perf_counter_ns()
                sb.stop()
                t3 = time.perf_counter_ns()
            extra = {"network": sb.network_path, "probe": msg.decode(errors="replace").strip()}
            return [
                Measurement("startup_time", (t1 - t0) / 1e9, "s", extra=extra),
                Measurement("teardown_time", (t3 - t2) / 1e9, "s"),
                Measurement("prepare_time", sb.prepare_time_s, "s"),
                *guest,
            ]

        yield one
