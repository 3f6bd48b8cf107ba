"""Disk I/O (benchmark 5): fio with O_DIRECT on a volume dedicated to the benchmark.

The volume is a fresh directory on the host's disk file system (volume.py: never tmpfs; its
free space is checked against what the profile needs before anything starts, naming both
numbers). It reaches the sandbox as Sandbox.volume_kind says (a bind mount, the directory
itself for the bare host, a virtio disk image of spec.volume_size_mib made on it for a VM)
and is seen inside at Sandbox.data_dir. Every environment runs under the run's limits.

Each round lays out a fresh file (an untimed O_DIRECT write pass; the previous round's file
is removed first), then runs the round's (pattern, block size) jobs one after the other in a
single fio invocation, each with fio's ramp time before the measured time, and reports per
job the completion latency (mean, with its percentiles for the box plots), the bandwidth and
the IOPS. Where a sandbox's O_DIRECT does not reach the host's block device
(Sandbox.direct_io False: gVisor serves the file from its own page cache) every sample
carries the flag "page_cache" and the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sandbench import volume
from sandbench.benchmarks.base import Benchmark, RoundFn, RunContext
from sandbench.benchmarks.params import BenchParams, Profile, RoundPolicy, param
from sandbench.benchmarks.servers import evidence, exec_quiet
from sandbench.environments.base import Completed, Environment, Sandbox
from sandbench.errors import SandboxError, UsageError
from sandbench.parsers.fio import (
    FioEngine,
    FioJob,
    FioPattern,
    fio_argv,
    fio_jobs_argv,
    parse_fio_json,
)
from sandbench.results import Measurement

MIB = 1024 * 1024
PATTERNS: tuple[FioPattern, ...] = ("seqread", "seqwrite", "randread", "randwrite")
BLOCK_SIZES = ("16k", "64k", "256k", "1m")
#: Prefix of the data files on the volume (one per round).
DATA_FILE = "sandbench-fio"
#: Room left on the volume beyond the data file (fio's own files, file system overhead).
MARGIN_MIB = 64
#: What the claims of the paper need in the quick profile: all patterns at 16k, and the
#: ends of the block-size range (1m) where a claim follows the block size.
# The 16 KiB column of every pattern (D1-D4's first checks) and 1 MiB sequential write (D2's
# "the gap halves at 1 MB"): what the quick profile can afford at 5 rounds.
QUICK_JOBS = [["seqread", "16k"], ["seqwrite", "16k"], ["seqwrite", "1m"],
              ["randread", "16k"], ["randwrite", "16k"]]
#: The paper's grid: every pattern at every block size.
PAPER_JOBS = [[p, b] for p in PATTERNS for b in BLOCK_SIZES]


@dataclass(frozen=True)
class DiskParams(BenchParams):
    size_mib: int = param(64, unit="MiB", high=1 << 24, doc="the test file's size")
    runtime_ms: int = param(300, unit="ms", high=86_400_000, doc="each job's measured time")
    ramp_ms: int = param(100, unit="ms", low=0, high=3_600_000, doc="each job's unmeasured start")
    jobs: list[list[str]] = param(QUICK_JOBS, doc="[pattern, block size] pairs run each round")
    ioengine: FioEngine = param("psync", doc="fio's I/O engine")

    def __post_init__(self) -> None:
        for job in self.jobs:
            if len(job) != 2 or job[0] not in PATTERNS or not re.fullmatch(r"[1-9]\d*[kmg]?",
                                                                          job[1]):
                raise UsageError(f"disk jobs: {job!r} is not a [pattern, block size] pair; "
                                 f"patterns: {', '.join(PATTERNS)}; sizes like 16k, 1m")
        if not self.jobs:
            raise UsageError("disk jobs: at least one [pattern, block size] pair")


def need_bytes(size_mib: int) -> int:
    """Free space the profile needs: the file plus 5 % and MARGIN_MIB."""
    size = size_mib * MIB
    return size + size // 20 + MARGIN_MIB * MIB


def volume_facts(sb: Sandbox, vol: volume.Volume) -> dict[str, Any]:
    """What the results say about the volume fio ran on."""
    return {**vol.describe(), "kind": sb.volume_kind}


def cache_marks(sb: Sandbox) -> dict[str, Any]:
    """The flag every sample of a sandbox without direct I/O carries, with the reason."""
    if sb.direct_io:
        return {}
    return {"flags": ["page_cache"], "page_cache_reason": sb.direct_io_note
            or "the environment does not pass O_DIRECT through to the host's block device"}


def fio_output(done: Completed) -> str:
    """fio's JSON is on stdout; its errors ("fio: ...") on stderr. Both, for the parser."""
    return done.stdout + ("\n" + done.stderr if done.stderr.strip() else "")


def parse_jobs(sb: Sandbox, done: Completed, what: str, count: int) -> tuple[FioJob, ...]:
    """The jobs of one fio run; SandboxError quoting fio, with evidence, on failure."""
    text = fio_output(done)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-500:]
        raise SandboxError(f"fio {what} exited {done.returncode}: {tail}", evidence(sb, done))
    try:
        result = parse_fio_json(text)
    except ValueError as exc:
        raise SandboxError(f"fio {what}: {exc}", evidence(sb, done)) from None
    if len(result.jobs) != count:
        raise SandboxError(f"fio {what}: expected {count} jobs, got {len(result.jobs)}",
                           evidence(sb, done))
    return result.jobs


def job_list(params: DiskParams) -> list[tuple[FioPattern, str]]:
    """The (pattern, block size) pairs to run each round, checked."""
    pairs = [(job[0], job[1]) if len(job) == 2 else ("", "") for job in params.jobs]
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
    short = "fio"
    title = "Disk I/O latency"
    paper_figure = "fio latency (box plots)"
    figure_metrics = ("latency",)
    converge_on = ("latency",)
    #: The paper's Figure 5 cell that the README's table quotes.
    headline_params = {"pattern": "randread", "bs": "16k"}
    description = "fio O_DIRECT latency, bandwidth and IOPS on a dedicated volume"
    image = "full"
    profiles = {
        # A quick round: a 64 MiB layout pass and 5 jobs of 100 ms ramp + 300 ms measured
        # (about 3.7 s a round here, with fio's start-up per job; claims test at n >= 5); the
        # paper profile keeps the paper's grid (4 patterns x 4 block sizes, 10 GiB).
        "quick": Profile(RoundPolicy(5, 8), DiskParams()),
        "paper": Profile(RoundPolicy(5, 5), DiskParams(
            size_mib=10240, runtime_ms=60_000, ramp_ms=5_000, jobs=PAPER_JOBS)),
    }
    Params = DiskParams

    @contextmanager
    def session(
        self, env: Environment, ctx: RunContext, params: DiskParams
    ) -> Iterator[RoundFn]:
        size_mib = params.size_mib
        runtime_ms = params.runtime_ms
        ramp_ms = params.ramp_ms
        jobs = job_list(params)
        ioengine = params.ioengine
        size = f"{size_mib}m"
        need = need_bytes(size_mib)
        run_timeout = len(jobs) * (runtime_ms + ramp_ms) / 1000 + ctx.timeouts["exec"]

        with volume.volume(size_mib * MIB, need) as vol:
            spec = ctx.spec(
                image=self.image,
                volume=vol.path,
                volume_size_mib=-(-need // MIB),
                log=ctx.log_path(env.name, self.name, "console.log"),
            )
            with env.start(spec) as sb:
                setting = {
                    "volume": volume_facts(sb, vol),
                    "file_size_mib": size_mib,
                    "runtime_ms": runtime_ms,
                    "ramp_ms": ramp_ms,
                    "ioengine": ioengine,
                    "direct": True,
                    "limits": {"cpus": ctx.limits.cpus, "memory_mib": ctx.limits.memory_mib},
                    "limits_enforced": sb.limits_enforced(),
                }
                marks = cache_marks(sb)

                def one(rnd: int) -> list[Measurement]:
                    filename = fresh_file(sb, ctx, env, rnd, size, ioengine)
                    done = sb.exec(
                        fio_jobs_argv(filename, jobs, size, runtime_ms, ramp_ms, direct=True,
                                      ioengine=ioengine),
                        timeout=run_timeout,
                    )
                    raw = ctx.save_raw(env.name, self.name, rnd, "fio.json", fio_output(done))
                    measured = parse_jobs(sb, done, f"round {rnd}", len(jobs))
                    out: list[Measurement] = []
                    for (pattern, bs), job in zip(jobs, measured, strict=True):
                        cell = {"pattern": pattern, "bs": bs}
                        out += [
                            Measurement.latency("latency", job.clat.mean_us, "us", raw=raw,
                                                params=cell,
                                                extra={**latency_extra(job), **marks}),
                            Measurement.rate("bandwidth", job.bandwidth_mib_s, "MiB/s", raw=raw,
                                             params=cell, extra={**setting, **marks}),
                            Measurement.rate("iops", job.iops, "1/s", raw=raw, params=cell,
                                             extra={**setting, **marks}),
                        ]
                    return out

                yield one


def fresh_file(sb: Sandbox, ctx: RunContext, env: Environment, rnd: int, size: str,
               ioengine: Any) -> str:
    """Remove earlier rounds' files, lay out this round's (every block written, O_DIRECT,
    untimed) and return its path inside the sandbox: no earlier pass has touched it."""
    data = sb.data_dir.rstrip("/")
    gone = exec_quiet(sb, ["/bin/sh", "-c", f'rm -f "$1"/{DATA_FILE}-*.dat', "sh", data])
    if gone.returncode != 0:
        raise SandboxError(f"could not remove earlier fio files in {data}", evidence(sb, gone))
    filename = f"{data}/{DATA_FILE}-r{rnd:03d}.dat"
    layout = sb.exec(
        fio_argv(filename, "seqwrite", "1m", size, direct=True, name="layout",
                 ioengine=ioengine),
        timeout=ctx.timeouts["tool"],
    )
    ctx.save_raw(env.name, "disk", rnd, "layout.json", fio_output(layout))
    parse_jobs(sb, layout, "layout pass", 1)
    return filename
