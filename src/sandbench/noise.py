"""What else used the CPU while a round ran.

A round is only like for like when nothing but the measured environment runs. The runner
freezes the other environments' sandboxes; this module checks the result: it sums the CPU
time (user + system, from each process's own counters) that processes outside the measured
set used during the round. The measured set is sandbench itself and its children (the host
side of a benchmark: iperf3, wrk, sysbench clients), the measured environment's sandboxes
and its shared daemons (dockerd, containerd). Kernel threads are left out: the kernel works
for the measured processes too (softirqs of a network benchmark). Processes born during the
round are left out as well: a start creates them (runtimes, shims, sandboxes).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

#: A round whose other processes used more than this fraction of one core is "noisy".
NOISY_CORE_FRACTION = 0.02


@dataclass(frozen=True)
class Noise:
    other_cpu_s: float
    wall_s: float
    busiest: tuple[str, ...]  # "name(pid) 0.12s" of the top users, for the evidence

    @property
    def core_fraction(self) -> float:
        return self.other_cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def noisy(self) -> bool:
        return self.core_fraction > NOISY_CORE_FRACTION


def _is_kernel_thread(p: psutil.Process) -> bool:
    try:
        return p.pid == 2 or p.ppid() == 2
    except psutil.Error:
        return True


def _cpu(p: psutil.Process) -> float | None:
    try:
        t = p.cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return None


class CpuWatch:
    """Start before a round, `stop()` after it: the CPU time of the other processes."""

    def __init__(self, measured: Iterable[int]) -> None:
        exclude = set(measured)
        me = psutil.Process(os.getpid())
        exclude.add(me.pid)
        with contextlib.suppress(psutil.Error):
            exclude.update(c.pid for c in me.children(recursive=True))
        self._start: dict[int, tuple[psutil.Process, float]] = {}
        for p in psutil.process_iter():
            if p.pid in exclude or _is_kernel_thread(p):
                continue
            c = _cpu(p)
            if c is not None:
                self._start[p.pid] = (p, c)
        self._t0 = time.perf_counter()

    def stop(self) -> Noise:
        wall = time.perf_counter() - self._t0
        used: list[tuple[float, str]] = []
        for pid, (p, c0) in self._start.items():
            c1 = _cpu(p)
            if c1 is None or c1 <= c0:
                continue
            try:
                name = p.name()
            except psutil.Error:
                name = "?"
            used.append((c1 - c0, f"{name}({pid})"))
        used.sort(reverse=True)
        total = sum(u for u, _ in used)
        top = tuple(f"{n} {u:.2f}s" for u, n in used[:3])
        return Noise(total, wall, top)
