"""Disk I/O (benchmark 5): fio with O_DIRECT on a volume dedicated to the benchmark.

The volume is a fresh host directory (volume.py) mounted at /data in the sandbox; on the bare
host fio uses that directory itself. Every environment gets the same CPU and memory limits. A
write pass lays the file out once per session, outside the timed jobs; then each round runs
the four access patterns at the four block sizes as time-based jobs on that file and reports,
per pattern and block size, the completion latency (mean, with its percentiles for the box
plots), the bandwidth and the IOPS.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sandbench import volume
from sandbench.benchmarks.base import Benchmark, RoundFn, RunContext
from sandbench.environments.base import Completed, Environment, Limits, Sandbox, SandboxSpec
from sandbench.errors import SandboxError
from sandbench.parsers.fio import FioJob, FioPattern, fio_argv, parse_fio_json
from sandbench.results import Measurement

MIB = 1024 * 1024
PATTERNS: tuple[FioPattern, ...] = ("seqread", "seqwrite", "randread", "randwrite")
BLOCK_SIZES = ("16k", "64k", "256k", "1m")
DATA_FILE = "sandbench-fio.dat"
#: Room left on the volume beyond the data file (fio's own files, file system overhead).
MARGIN_MIB = 64


def need_bytes(size_mib: int) -> int:
    """Free space the profile needs: the file plus 5 % and MARGIN_MIB."""
    size = size_mib * MIB
    return size + size // 20 + MARGIN_MIB * MIB


def limits_for(params: dict[str, Any]) -> Limits:
    """The same limits for every environment: the profile's CPUs (at most what the machine
    has; None = all of them) and memory."""
    have = os.cpu_count() or 1
    want = params.get("cpus")
    cpus = float(have) if want is None else min(float(want), float(have))
    return Limits(cpus=cpus, memory_mib=int(params["memory_mib"]))


def data_dir(sb: Sandbox, env: Environment, vol: volume.Volume) -> str:
    """Where the volume appears for commands run through sb.exec."""
    given = getattr(sb, "data_dir", None)
    if isinstance(given, str) and given:
        return given
    # The host runs commands on the host itself: the volume's own directory.
    return str(vol.path) if env.family == "host" else "/data"


def volume_facts(env: Environment, vol: volume.Volume) -> dict[str, Any]:
    """What the results say about the volume fio ran on."""
    facts = vol.describe()
    if env.family == "vm":
        # The VM driver gives the guest its own virtio disk at /data (an ext4 image file),
        # not the host directory.
        facts["kind"] = "virtio-disk"
    return facts


def fio_output(done: Completed) -> str:
    """fio's JSON is on stdout; its errors ("fio: ...") on stderr. Both, for the parser."""
    return done.stdout + ("\n" + done.stderr if done.stderr.strip() else "")


def parse_job(done: Completed, what: str) -> FioJob:
    """The single job of one fio run; ValueError/SandboxError quoting fio on failure."""
    text = fio_output(done)
    try:
        result = parse_fio_json(text)
    except ValueError as exc:
        if done.returncode != 0:
            raise SandboxError(f"fio {what} exited {done.returncode}: {exc}") from None
        raise
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-500:]
        raise SandboxError(f"fio {what} exited {done.returncode}: {tail}")
    if len(result.jobs) != 1:
        raise ValueError(f"fio {what}: expected one job, got {len(result.jobs)}")
    return result.jobs[0]


def job_list(params: dict[str, Any]) -> list[tuple[FioPattern, str]]:
    """(pattern, block size) pairs to run each round: every pattern at every block size, or
    the explicit "jobs" list of [pattern, bs] pairs when the parameters give one."""
    if params.get("jobs"):
        pairs = [(str(p), str(b)) for p, b in params["jobs"]]
    else:
        pairs = [(str(p), str(b)) for p in params["patterns"] for b in params["block_sizes"]]
    out: list[tuple[FioPattern, str]] = []
    for pattern, bs in pairs:
        if pattern not in PATTERNS:
            raise ValueError(f"unknown fio pattern {pattern!r}; expected one of {PATTERNS}")
        out.append((pattern, bs))
    return out


def latency_extra(job: FioJob) -> dict[str, Any]:
    """The shape the report's box plots read: percentiles, min, max, stddev in us."""
    return {
        "percentiles": {f"{p:g}": v for p, v in sorted(job.clat.percentiles_us.items())},
        "min": job.clat.min_us,
        "max": job.clat.max_us,
        "stddev": job.clat.stddev_us,
    }


class Disk(Benchmark):
    name = "disk"
    description = "fio O_DIRECT latency, bandwidth and IOPS on a dedicated volume"
    image = "full"
    profiles = {
        "quick": {
            "rounds": 1,
            "size_mib": 128,
            "runtime_s": 1,
            "patterns": list(PATTERNS),
            "block_sizes": list(BLOCK_SIZES),
            "cpus": None,
            "memory_mib": 2048,
            "ioengine": "psync",
        },
        "paper": {
            "rounds": 1,
            "size_mib": 10240,
            "runtime_s": 60,
            "patterns": list(PATTERNS),
            "block_sizes": list(BLOCK_SIZES),
            "cpus": 6,
            "memory_mib": 2048,
            "ioengine": "psync",
        },
    }

    @contextmanager
    def session(
        self, env: Environment, ctx: RunContext, params: dict[str, Any]
    ) -> Iterator[RoundFn]:
        size_mib = int(params["size_mib"])
        runtime_s = int(params["runtime_s"])
        jobs = job_list(params)
        ioengine = params.get("ioengine", "psync")
        limits = limits_for(params)
        size = f"{size_mib}m"
        job_timeout = runtime_s + ctx.timeouts["exec"]

        with volume.volume(size_mib * MIB, need_bytes(size_mib)) as vol:
            spec = SandboxSpec(
                image=self.image,
                limits=limits,
                volume=vol.path,
                log=ctx.log_path(env.name, self.name, "console.log"),
            )
            with env.start(spec) as sb:
                filename = f"{data_dir(sb, env, vol)}/{DATA_FILE}"
                # Lay the file out (every block written) before any timed job reads it.
                layout = sb.exec(
                    fio_argv(filename, "seqwrite", "1m", size, direct=True, name="layout",
                             ioengine=ioengine),
                    timeout=ctx.timeouts["tool"],
                )
                ctx.save_raw(env.name, self.name, 0, "layout.json", fio_output(layout))
                parse_job(layout, "layout pass")
                setting = {
                    "volume": volume_facts(env, vol),
                    "file_size_mib": size_mib,
                    "runtime_s": runtime_s,
                    "ioengine": ioengine,
                    "direct": True,
                    "limits": {"cpus": limits.cpus, "memory_mib": limits.memory_mib},
                    "limits_enforced": env.family != "host",
                }

                def one(rnd: int) -> list[Measurement]:
                    out: list[Measurement] = []
                    for pattern, bs in jobs:
                        argv = fio_argv(
                            filename, pattern, bs, size, runtime_s=runtime_s,
                            direct=True, ioengine=ioengine,
                        )
                        done = sb.exec(argv, timeout=job_timeout)
                        raw = ctx.save_raw(
                            env.name, self.name, rnd, f"{pattern}-{bs}.json", fio_output(done)
                        )
                        job = parse_job(done, f"{pattern} bs={bs}")
                        cell = {"pattern": pattern, "bs": bs}
                        out += [
                            Measurement("latency", job.clat.mean_us, "us", raw=raw,
                                        params=cell, extra=latency_extra(job)),
                            Measurement("bandwidth", job.bandwidth_mib_s, "MiB/s", raw=raw,
                                        params=cell, extra=setting),
                            Measurement("iops", job.iops, "1/s", raw=raw, params=cell,
                                        extra=setting),
                        ]
                    return out

                yield one
