"""Benchmarks by name, in the paper's order, then any registered by register() (tests, a
plugin): the report, the CLI and study files read them from here only."""

from __future__ import annotations

from sandbench.benchmarks.base import Benchmark
from sandbench.benchmarks.burst import Burst
from sandbench.benchmarks.cpu import Cpu
from sandbench.benchmarks.density import Density
from sandbench.benchmarks.devloop import Devloop
from sandbench.benchmarks.disk import Disk
from sandbench.benchmarks.exec import Exec
from sandbench.benchmarks.memory import Memory
from sandbench.benchmarks.mysql import Mysql
from sandbench.benchmarks.network import Network
from sandbench.benchmarks.nginx import Nginx
from sandbench.benchmarks.restore import Restore, RestoreNginx
from sandbench.benchmarks.startup import Startup
from sandbench.benchmarks.syscall import Syscall

_EXTRA: list[Benchmark] = []


def register(bench: Benchmark) -> None:
    if bench.name in names():
        raise RuntimeError(f"benchmark {bench.name!r} registered twice")
    _EXTRA.append(bench)


def unregister(name: str) -> None:
    _EXTRA[:] = [b for b in _EXTRA if b.name != name]


def all_benchmarks() -> list[Benchmark]:
    benches: list[Benchmark] = [Startup(), Memory(), Syscall(), Network(), Disk(), Cpu()]
    benches += [Mysql(), Nginx()]
    benches += [Devloop()]  # after the paper's eight
    # default = False: only when named (--bench)
    benches += [Density(), Burst(), Exec(), Restore(), RestoreNginx()]
    benches += _EXTRA
    names = [b.name for b in benches]
    if len(set(names)) != len(names):
        raise RuntimeError(f"benchmark names registered twice: {names}")
    return benches


def names() -> list[str]:
    return [b.name for b in all_benchmarks()]


def by_name(name: str) -> Benchmark:
    for b in all_benchmarks():
        if b.name == name:
            return b
    raise KeyError(name)
