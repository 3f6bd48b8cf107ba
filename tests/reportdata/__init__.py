"""Constructed results directories for the report, scorecard and compare tests.

Values are drawn around paper-like medians with a seeded generator, written through the
real results.py journal so the tests read exactly what a run writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from sandbench.results import KINDS, Failure, Journal, Sample, now_iso, write_meta

PAPER_ENVS = ["host", "runc", "docker", "docker-gvisor-ptrace", "docker-gvisor-kvm",
              "kata-qemu", "kata-fc", "qemu-vm"]

# Medians shaped after the paper's findings (per env), so the scorecard has both outcomes.
STARTUP = {"host": 0.005, "runc": 0.12, "docker": 0.60, "docker-gvisor-ptrace": 0.47,
           "docker-gvisor-kvm": 0.47, "kata-fc": 0.97, "kata-qemu": 1.07, "qemu-vm": 8.76}
MEMORY = {"runc": 1.5, "docker": 2.0, "docker-gvisor-ptrace": 14.0, "docker-gvisor-kvm": 14.5,
          "kata-qemu": 180.0, "kata-fc": 170.0, "qemu-vm": 650.0}
GETPID = {"host": 50.0, "runc": 52.0, "docker": 55.0, "docker-gvisor-ptrace": 1800.0,
          "docker-gvisor-kvm": 78.0, "kata-qemu": 51.0, "kata-fc": 50.5, "qemu-vm": 50.0}
NET = {"host": 60.0, "runc": 40.0, "docker": 35.0, "docker-gvisor-ptrace": 2.0,
       "docker-gvisor-kvm": 2.5, "kata-qemu": 20.0, "kata-fc": 15.0, "qemu-vm": 25.0}
CPU = {e: 1000.0 for e in PAPER_ENVS}
TPS = {"host": 900.0, "runc": 850.0, "docker": 300.0, "docker-gvisor-ptrace": 170.0,
       "docker-gvisor-kvm": 115.0, "kata-qemu": 310.0, "kata-fc": 1900.0, "qemu-vm": 290.0}
RPS = {"host": 60000.0, "runc": 50000.0, "docker": 40000.0, "docker-gvisor-ptrace": 8000.0,
       "docker-gvisor-kvm": 8200.0, "kata-qemu": 45000.0, "kata-fc": 13000.0,
       "qemu-vm": 42000.0}
DISK_BASE = {"host": 60.0, "runc": 62.0, "docker": 120.0, "docker-gvisor-ptrace": 600.0,
             "docker-gvisor-kvm": 580.0, "kata-qemu": 110.0, "kata-fc": 55.0, "qemu-vm": 210.0}
BS = {"16k": 1.0, "64k": 2.5, "256k": 8.0, "1m": 30.0}
# What each metric measures, as the benchmarks journal it (results.KINDS gives the direction).
METRIC_KINDS = {
    "startup_time": "time", "teardown_time": "time", "private_dirty": "size", "pss": "size",
    "shared_daemon_private_dirty": "size", "getpid_latency": "latency",
    "getpid_10000_total": "time", "throughput": "rate", "retransmits": "count",
    "sender_cpu": "size", "latency": "latency", "bandwidth": "rate", "iops": "rate",
    "events_per_second": "rate", "events": "amount", "tps": "rate", "qps": "rate",
    "latency_avg": "latency", "latency_p95": "latency", "requests_per_second": "rate",
    "latency_p50": "latency", "latency_p99": "latency",
}


def sample(env: str, bench: str, metric: str, value: float, unit: str, rnd: int,
           params: dict[str, Any] | None = None, flags: Iterable[str] = (),
           extra: dict[str, Any] | None = None, kind: str | None = None,
           raw: str | None = None) -> Sample:
    """kind None: the metric's usual kind (METRIC_KINDS), "" for none (an older journal)."""
    k = METRIC_KINDS.get(metric, "") if kind is None else kind
    return Sample(env=env, bench=bench, metric=metric, value=float(value), unit=unit,
                  round=rnd, params=params or {}, timestamp=now_iso(), flags=list(flags),
                  extra=extra or {}, kind=k, direction=KINDS.get(k, ""), raw=raw)


def meta(envs: list[str], kernel: str = "6.1.0-test", versions: dict[str, str] | None = None,
         unavailable: dict[str, str] | None = None, profile: str = "paper",
         virtualized: bool = False) -> dict[str, Any]:
    versions = versions or {}
    return {
        "tool_version": "0.1.0", "created": now_iso(), "profile": profile,
        "plan": {"envs": envs, "benches": ["startup", "memory", "syscall", "network", "disk",
                                           "cpu", "mysql", "nginx"],
                 "rounds": {}, "params": {}},
        "host": {"kernel": kernel, "cpu_model": "Test CPU i7-9750H", "cores": 12,
                 "memory_mib": 32000, "virtualized": virtualized,
                 "hypervisor": "kvm" if virtualized else None},
        # as a run records them: gVisor environments name their platform
        "environments": {e: {"version": versions.get(e, "1.0"), "binary": f"/usr/bin/{e}",
                             **({"platform": e.rsplit("-", 1)[1]} if "gvisor-" in e else {})}
                         for e in envs},
        "unavailable": unavailable or {},
        "baseline": "host",
    }


def write_run(directory: Path, records: Iterable[Sample | Failure],
              meta_doc: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_meta(directory, meta_doc)
    with Journal(directory) as j:
        for r in records:
            j.append(r)
    return directory


def realistic_records(envs: list[str], rounds: int = 7, seed: int = 1,
                      noise: float = 0.02, emulated: Iterable[str] = (),
                      directions: bool = True) -> list[Sample]:
    """A full paper-shaped run: every benchmark, every metric, CoV about `noise`; without
    `directions`, journaled as before kinds and directions existed."""
    rng = np.random.default_rng(seed)
    emu = set(emulated)
    out: list[Sample] = []

    def jitter(v: float) -> float:
        return float(v * (1.0 + rng.normal(0.0, noise)))

    for rnd in range(rounds):
        for env in envs:
            fl = ["emulated"] if env in emu else []

            def add(bench: str, metric: str, v: float, unit: str,
                    params: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None, env: str = env,
                    fl: list[str] = fl, rnd: int = rnd) -> None:
                out.append(sample(env, bench, metric, v, unit, rnd, params, fl, extra,
                                  kind=None if directions else ""))

            add("startup", "startup_time", jitter(STARTUP[env]), "s")
            add("startup", "teardown_time", jitter(STARTUP[env] / 3), "s")
            if env in MEMORY:
                add("memory", "private_dirty", jitter(MEMORY[env]), "MiB")
                add("memory", "pss", jitter(MEMORY[env] * 1.3), "MiB")
            if env.startswith("docker"):
                add("memory", "shared_daemon_private_dirty", jitter(40.0), "MiB")
            add("syscall", "getpid_latency", jitter(GETPID[env]), "ns")
            add("syscall", "getpid_10000_total", jitter(GETPID[env] * 10), "us")
            add("network", "throughput", jitter(NET[env]), "Gbit/s")
            add("network", "retransmits", float(rng.integers(0, 5)), "count")
            add("network", "sender_cpu", jitter(80.0), "%")
            for pattern in ("seqread", "seqwrite", "randread", "randwrite"):
                for bs, scale in BS.items():
                    base = DISK_BASE[env] * scale
                    if pattern == "seqwrite" and "gvisor" in env:
                        base *= 30.0 if bs == "16k" else 15.0
                    mean = jitter(base)
                    pct = {str(p): mean * f for p, f in
                           (("1", 0.4), ("5", 0.5), ("10", 0.6), ("25", 0.8), ("50", 0.95),
                            ("75", 1.1), ("90", 1.4), ("95", 1.7), ("99", 2.5))}
                    params = {"pattern": pattern, "bs": bs}
                    add("disk", "latency", mean, "us", params,
                        {"percentiles": pct, "min": mean * 0.3, "max": mean * 5})
                    add("disk", "bandwidth", jitter(1e6 / base), "MiB/s", params)
                    add("disk", "iops", jitter(1e6 / base * 64), "1/s", params)
            add("cpu", "events_per_second", jitter(CPU[env]), "1/s")
            add("cpu", "events", jitter(CPU[env] * 600), "count")
            add("mysql", "tps", jitter(TPS[env]), "1/s")
            add("mysql", "qps", jitter(TPS[env] * 20), "1/s")
            add("mysql", "latency_avg", jitter(1000.0 / TPS[env] * 8), "ms")
            add("mysql", "latency_p95", jitter(1000.0 / TPS[env] * 20), "ms")
            add("nginx", "requests_per_second", jitter(RPS[env]), "1/s")
            add("nginx", "latency_p50", jitter(1e6 / RPS[env]), "ms")
            add("nginx", "latency_p99", jitter(3e6 / RPS[env]), "ms")
    return out
