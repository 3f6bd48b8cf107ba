"""What else used the CPU while a round ran.

A round is only like for like when nothing but the measured environment runs. The runner
freezes the other environments' sandboxes; this module checks the result: it sums the CPU
time that processes outside the measured set used during the round. The measured set is
sandbench itself and its children (the host side of a benchmark: iperf3, wrk, sysbench
clients), the measured environment's sandboxes and its shared daemons (dockerd,
containerd). Kernel threads are left out: the kernel works for the measured processes too
(softirqs of a network benchmark). Processes born during the round are left out as well: a
start creates them (runtimes, shims, sandboxes).

Resolution. A process's user + system time in /proc/PID/stat is counted in clock ticks
(10 ms at USER_HZ 100), and a difference of two readings can be nearly a tick more than the
process really ran: judged on ticks, one tick of any process is 10 % of a core over a 0.1 s
round. So the time is read in nanoseconds where the kernel gives it (the first field of
/proc/PID/task/TID/schedstat, each thread's sum_exec_runtime), with the tick counters kept
as a floor for threads that ended during the round. Where schedstat cannot be read, a
process counts only what it provably used: its tick difference less one tick. A round is
noisy when that provable share of one core is above NOISY_CORE_FRACTION.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

#: A round whose other processes provably used more than this fraction of one core is
#: "noisy": 2 % of a core is what a quiet idle Debian host's daemons stay well below.
NOISY_CORE_FRACTION = 0.02
TICK_S = 1.0 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)
SCHEDSTAT = "schedstat"
TICKS = "ticks"


def _schedstat_s(pid: int, proc: Path = Path("/proc")) -> float | None:
    """The CPU time of a process's live threads in seconds (ns resolution), or None."""
    total = 0
    try:
        tids = os.listdir(proc / str(pid) / "task")
    except OSError:
        return None
    for tid in tids:
        try:
            first = (proc / str(pid) / "task" / tid / "schedstat").read_text().split()[0]
            total += int(first)
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def schedstat_works(proc: Path = Path("/proc")) -> bool:
    """Whether this kernel reports per-thread run time (PID 1 has run, so it is > 0)."""
    v = _schedstat_s(1, proc)
    return v is not None and v > 0


def source() -> str:
    return SCHEDSTAT if schedstat_works() else TICKS


def resolution_text(src: str) -> str:
    return ("1 ns, per-thread schedstat" if src == SCHEDSTAT
            else f"{TICK_S * 1000:.0f} ms clock ticks, less one tick a process")


def rule(src: str | None = None) -> dict[str, Any]:
    """What meta.json records about the noise flag: source, resolution, threshold."""
    src = src or source()
    return {"source": src, "resolution": resolution_text(src),
            "core_fraction": NOISY_CORE_FRACTION,
            "rule": f"noisy when other processes provably used more than "
                    f"{NOISY_CORE_FRACTION:.0%} of one core over the round"}


def provable_cpu_s(ticks_delta: float, ns_delta: float | None,
                   tick_s: float = TICK_S) -> float:
    """What a process provably used between two readings: the nanosecond count where there
    is one (never less than the ticks show beyond their own error: threads that ended), else
    the tick difference less one tick, the most that truncation can add."""
    floor = max(0.0, ticks_delta - tick_s)
    return max(ns_delta, floor) if ns_delta is not None else floor


@dataclass(frozen=True)
class Noise:
    other_cpu_s: float  # provably used by other processes (see the module's docstring)
    wall_s: float
    busiest: tuple[str, ...]  # "name(pid) 0.12s" of the top users, for the evidence
    source: str = TICKS

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


def _cpu(p: psutil.Process, fine: bool) -> tuple[float, float | None] | None:
    try:
        t = p.cpu_times()
    except psutil.Error:
        return None
    return float(t.user + t.system), (_schedstat_s(p.pid) if fine else None)


class CpuWatch:
    """Start before a round, `stop()` after it: the CPU time of the other processes."""

    def __init__(self, measured: Iterable[int], fine: bool | None = None) -> None:
        exclude = set(measured)
        me = psutil.Process(os.getpid())
        exclude.add(me.pid)
        with contextlib.suppress(psutil.Error):
            exclude.update(c.pid for c in me.children(recursive=True))
        self._fine = schedstat_works() if fine is None else fine
        self._start: dict[int, tuple[psutil.Process, tuple[float, float | None]]] = {}
        for p in psutil.process_iter():
            if p.pid in exclude or _is_kernel_thread(p):
                continue
            c = _cpu(p, self._fine)
            if c is not None:
                self._start[p.pid] = (p, c)
        self._t0 = time.perf_counter()

    def stop(self) -> Noise:
        wall = time.perf_counter() - self._t0
        used: list[tuple[float, str]] = []
        for pid, (p, (t0, n0)) in self._start.items():
            c1 = _cpu(p, self._fine)
            if c1 is None:
                continue
            t1, n1 = c1
            ns = n1 - n0 if n1 is not None and n0 is not None else None
            u = provable_cpu_s(t1 - t0, ns)
            if u <= 0:
                continue
            try:
                name = p.name()
            except psutil.Error:
                name = "?"
            used.append((u, f"{name}({pid})"))
        used.sort(reverse=True)
        total = sum(u for u, _ in used)
        top = tuple(f"{n} {u:.3f}s" for u, n in used[:3])
        return Noise(total, wall, top, SCHEDSTAT if self._fine else TICKS)
