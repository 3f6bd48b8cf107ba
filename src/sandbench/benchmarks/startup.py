"""Startup time in phases, with the same boundaries in every environment, on one clock
(time.perf_counter_ns):

  t0          before Environment.prepare(spec)
  t_prepared  prepare returned and the host-side listener is bound (everything before the
              runtime's command: namespaces, bundle, volume)
  created     the driver's sb.mark("created"), when its create step returned
  t_started   sb.launch(argv) returned (the runtime's command said the sandbox started)
  t_net       the host-side listener accepted the probe, the sandbox's first process, which
              connects as soon as its network stack works (the paper: until the network
              stack is initialized)

phase_prepare = t_prepared - t0, phase_create = created - t_prepared, phase_start =
t_started - created, phase_network = t_net - t_started, and startup_time = t_net - t0, their
sum. A runtime without a separate create step (one command creates and starts, e.g. Docker's
run) declares Sandbox.folded_phases: its phase_create is 0 with extra {"folded_into":
"start"}, and the time is in phase_start. The listener accepts in a thread of its own, so a
probe that connects before the runtime's command has returned is timed when it connects: then
phase_start ends at t_net and phase_network is 0 (extra {"connected_before_start_returned"}).

Also the teardown time (stop) and, for a VM, its own account of its boot.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sandbench.benchmarks.base import Benchmark, RoundFn, RunContext
from sandbench.benchmarks.params import BenchParams, Profile, RoundPolicy
from sandbench.environments.base import PHASES, Environment, Sandbox
from sandbench.errors import SandboxError, StepTimeout
from sandbench.results import Measurement


@dataclass
class ProbeListener:
    """Accepts the probe's connection in a thread, stamping perf_counter_ns at accept()."""

    sock: socket.socket
    accepted_ns: int | None = None
    message: bytes = b""
    error: BaseException | None = None
    _done: threading.Event = field(default_factory=threading.Event)

    def start(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        threading.Thread(target=self._accept, daemon=True, name="probe-accept").start()

    def _accept(self) -> None:
        try:
            conn, _ = self.sock.accept()
            self.accepted_ns = time.perf_counter_ns()
            with conn:
                conn.settimeout(5)
                try:
                    self.message = conn.recv(64)
                except OSError:
                    self.message = b""
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            self.error = exc
        finally:
            self._done.set()

    def wait(self, timeout: float) -> int:
        """perf_counter_ns at accept(); StepTimeout when the probe did not connect."""
        if not self._done.wait(timeout + 5) or self.accepted_ns is None:
            raise StepTimeout(f"the probe did not connect within {timeout:g} s"
                              + (f" ({self.error})" if self.error and not isinstance(
                                  self.error, TimeoutError) else ""))
        return self.accepted_ns


@dataclass(frozen=True)
class Phases:
    """The boundaries of one start, perf_counter_ns each."""

    t0: int
    prepared: int
    created: int | None
    started: int
    net: int
    folded: dict[str, str]

    def measurements(self, extra: dict[str, Any] | None = None) -> list[Measurement]:
        """startup_time (with extra) and phase_*, which add up to it exactly."""
        folded_create = self.folded.get("create")
        if self.created is None and folded_create is None:
            raise SandboxError(
                "the driver neither marked 'created' during launch nor declared "
                "folded_phases['create']: its create phase cannot be told apart"
            )
        created = self.prepared if folded_create is not None else self.created
        assert created is not None
        # A probe that connected before launch returned: the start ends at its connection.
        started = min(self.started, self.net)
        bounds = {
            "prepare": (self.t0, self.prepared),
            "create": (self.prepared, created),
            "start": (created, started),
            "network": (started, self.net),
        }
        assert tuple(bounds) == PHASES
        out = []
        for phase, (a, b) in bounds.items():
            if b < a:
                raise SandboxError(f"phase {phase} ended before it began ({(b - a) / 1e6:.3f} "
                                   "ms): the driver's marks are out of order")
            note: dict[str, Any] = {}
            if phase in self.folded:
                note["folded_into"] = self.folded[phase]
            if phase == "network" and self.net < self.started:
                note["connected_before_start_returned"] = True
            out.append(Measurement.time(f"phase_{phase}", (b - a) / 1e9, "s", extra=note))
        total = Measurement.time("startup_time", (self.net - self.t0) / 1e9, "s",
                                 extra=dict(extra or {}))
        return [total, *out]


def wait_for_probe(listener: socket.socket, timeout: float) -> tuple[int, bytes]:
    """perf_counter_ns at accept() and the probe's message, waiting in this thread (for
    tools that time a launch themselves: bench/harness_overhead.py). Bounded by timeout."""
    probe = ProbeListener(listener)
    probe.start(timeout)
    return probe.wait(timeout), probe.message


def boot_bound(ctx: RunContext, sb: Sandbox) -> float:
    """How long the probe may take: the run's bound, or the sandbox's own boot bound (a VM
    under emulation boots for minutes)."""
    return max(ctx.timeouts["probe"], float(sb.boot_timeout_s))


@dataclass(frozen=True)
class StartupParams(BenchParams):
    """None: a round is one start and stop."""


class Startup(Benchmark):
    name = "startup"
    short = "start"
    title = "Startup time"
    paper_figure = "startup time (box plot)"
    figure_metrics = ("startup_time",)
    converge_on = ("startup_time",)
    description = "prepare until the probe inside connects to the host (s), in phases"
    profiles = {
        # A round is one start and stop (claims test at n >= 5).
        "quick": Profile(RoundPolicy(5, 20), StartupParams()),
        "paper": Profile(RoundPolicy(100, 100), StartupParams()),
    }
    Params = StartupParams

    @contextmanager
    def session(
        self, env: Environment, ctx: RunContext, params: StartupParams
    ) -> Iterator[RoundFn]:
        spec = ctx.spec(image=self.image, log=ctx.log_path(env.name, self.name, "console.log"))

        def one(rnd: int) -> list[Measurement]:
            t0 = time.perf_counter_ns()
            sb = env.prepare(spec)
            with sb, socket.socket(socket.AF_INET, socket.SOCK_STREAM) as ls:
                ls.bind((sb.host_address, 0))
                ls.listen(1)
                bound = boot_bound(ctx, sb)
                probe = ProbeListener(ls)
                probe.start(bound)
                argv = [sb.helper("probe"), sb.host_address, str(ls.getsockname()[1])]
                prepared = time.perf_counter_ns()
                sb.launch(argv)
                started = time.perf_counter_ns()
                try:
                    net = probe.wait(bound)
                except StepTimeout as e:
                    raise StepTimeout(str(e), {**sb.failure_evidence(), **e.evidence}) from None
                phases = Phases(t0, prepared, sb.marks.get("created"), started, net,
                                dict(sb.folded_phases))
                guest: list[Measurement] = []
                boot = sb.guest_boot_report()
                if boot:
                    # The paper's VM figure: `systemd-analyze time` inside the guest.
                    guest.append(Measurement.time("guest_boot_time", boot["guest_boot_total_s"],
                                                  "s", extra=dict(boot)))
                t_stop = time.perf_counter_ns()
                sb.stop()
                t_gone = time.perf_counter_ns()
            said = probe.message.decode(errors="replace").strip()
            measured = phases.measurements({"network": sb.network_path, "probe": said})
            return [*measured, Measurement.time("teardown_time", (t_gone - t_stop) / 1e9, "s"),
                    *guest]

        # One prepare, never launched, before round 0: what an environment does once per
        # image (Docker's and Podman's image check: 15 and 45 ms measured) then stays out of
        # the first round, whose prepare phase was an outlier against every later one.
        env.prepare(spec).stop()
        yield one
