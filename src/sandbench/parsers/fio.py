"""fio: build the argv of one disk job (benchmark 5) and parse `fio --output-format=json`.

fio 3.x prints notes and warnings as plain text on stdout before the JSON ("note: both iodepth
>= 1 and synchronous I/O engine are selected...") and errors as "fio: ..." lines; callers may
also hand in stdout and stderr together. The parser therefore looks for the JSON object inside
the text and keeps the other lines, so that an error can quote fio's own words.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Literal

FioPattern = Literal["seqread", "seqwrite", "randread", "randwrite"]
FioEngine = Literal["psync", "libaio"]

# The paper's four access patterns, as fio's rw= values.
FIO_RW: dict[str, str] = {
    "seqread": "read",
    "seqwrite": "write",
    "randread": "randread",
    "randwrite": "randwrite",
}

# Completion-latency percentiles asked of fio: enough for box plots (quartiles, whiskers at
# 5/95 or 1/99) without asking for json+ histograms.
PERCENTILES: tuple[float, ...] = (1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0)
PERCENTILE_LIST = ":".join(f"{p:g}" for p in PERCENTILES)

_MIB = 1024 * 1024
# Longest quote of fio's own text in an error message: enough for its error lines, short enough
# for one journal entry.
_QUOTE_MAX = 2000


@dataclass(frozen=True)
class FioLatency:
    """Completion latency (clat: submission to completion) of one direction, in microseconds."""

    mean_us: float
    min_us: float
    max_us: float
    stddev_us: float
    samples: int
    # Percentile (e.g. 25.0) -> latency in us; empty when fio reported none.
    percentiles_us: dict[float, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FioJob:
    """One fio job, reduced to the direction (read or write) that did the I/O."""

    name: str
    direction: Literal["read", "write"]
    rw: str | None  # the job's rw= option as fio echoes it, when it does
    bandwidth_mib_s: float
    iops: float
    runtime_s: float  # time this direction ran, from fio's per-direction runtime (ms)
    io_bytes: int
    total_ios: int
    clat: FioLatency


@dataclass(frozen=True)
class FioResult:
    version: str
    jobs: tuple[FioJob, ...]
    # Non-JSON lines fio printed around the JSON (notes, warnings), in order.
    messages: tuple[str, ...] = ()


def fio_argv(
    filename: str,
    pattern: FioPattern,
    bs: str,
    size: str,
    runtime_s: int | None = None,
    direct: bool = True,
    ioengine: FioEngine = "psync",
    name: str | None = None,
    fio: str = "fio",
) -> list[str]:
    """The argv for one fio job whose output `parse_fio_json` reads.

    With runtime_s the job is time based (it loops over the file until the time is up);
    without, it does `size` bytes of I/O once.
    """
    if pattern not in FIO_RW:
        raise ValueError(f"unknown fio pattern {pattern!r}; expected one of {sorted(FIO_RW)}")
    if ioengine not in ("psync", "libaio"):
        raise ValueError(f"unsupported fio ioengine {ioengine!r}; expected psync or libaio")
    if runtime_s is not None and runtime_s <= 0:
        raise ValueError(f"fio runtime must be a positive number of seconds, not {runtime_s}")
    argv = [
        fio,
        f"--name={name or pattern}",
        f"--filename={filename}",
        f"--rw={FIO_RW[pattern]}",
        f"--bs={bs}",
        f"--size={size}",
        f"--ioengine={ioengine}",
        f"--direct={1 if direct else 0}",
        "--output-format=json",
        f"--percentile_list={PERCENTILE_LIST}",
    ]
    if runtime_s is not None:
        argv += ["--time_based", f"--runtime={runtime_s}"]
    return argv


def fio_jobs_argv(
    filename: str,
    jobs: list[tuple[FioPattern, str]],
    size: str,
    runtime_ms: int,
    ramp_ms: int = 0,
    direct: bool = True,
    ioengine: FioEngine = "psync",
    fio: str = "fio",
) -> list[str]:
    """One fio run of several time-based jobs on one file, one after the other (stonewall):
    fio starts once per round instead of once per job. Each job is named PATTERN-BS and
    first runs ramp_ms unmeasured (fio's ramp_time), then runtime_ms measured."""
    if runtime_ms <= 0 or ramp_ms < 0:
        raise ValueError(f"fio runtime {runtime_ms} ms / ramp {ramp_ms} ms: runtime must be "
                         "positive and ramp not negative")
    argv = [
        fio,
        "--output-format=json",
        f"--filename={filename}",
        f"--size={size}",
        f"--ioengine={ioengine}",
        f"--direct={1 if direct else 0}",
        f"--percentile_list={PERCENTILE_LIST}",
        "--time_based",
        f"--runtime={int(runtime_ms)}ms",
    ]
    if ramp_ms:
        argv.append(f"--ramp_time={int(ramp_ms)}ms")
    for pattern, bs in jobs:
        if pattern not in FIO_RW:
            raise ValueError(f"unknown fio pattern {pattern!r}; expected one of {sorted(FIO_RW)}")
        argv += [f"--name={pattern}-{bs}", f"--rw={FIO_RW[pattern]}", f"--bs={bs}", "--stonewall"]
    return argv


def parse_fio_json(text: str) -> FioResult:
    """Parse fio's JSON output (stdout, or stdout and stderr together).

    Raises ValueError, quoting fio's own messages, when there is no complete JSON object,
    when a job reports an error, or when a job did no I/O.
    """
    doc, messages = _split_json(text)
    jobs_raw = doc.get("jobs")
    if not isinstance(jobs_raw, list) or not jobs_raw:
        raise ValueError(_with_messages("fio JSON has no jobs", messages))
    jobs = tuple(_parse_job(job, messages) for job in jobs_raw)
    return FioResult(version=str(doc.get("fio version", "")), jobs=jobs, messages=messages)


def _split_json(text: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    lines = text.splitlines(keepends=True)
    # fio's JSON starts with a line holding only "{"; a warning never does.
    start_line = next((i for i, line in enumerate(lines) if line.strip() == "{"), None)
    if start_line is None:
        raise ValueError(_with_messages("fio printed no JSON output", _nonblank(lines)))
    offset = sum(len(line) for line in lines[:start_line])
    before = _nonblank(lines[:start_line])
    try:
        doc, end = json.JSONDecoder().raw_decode(text, offset)
    except json.JSONDecodeError as exc:
        raise ValueError(
            _with_messages(f"fio output is not complete JSON ({exc.msg} at char {exc.pos})", before)
        ) from exc
    if not isinstance(doc, dict):
        raise ValueError(_with_messages("fio JSON output is not an object", before))
    return doc, before + _nonblank(text[end:].splitlines())


def _parse_job(job: dict[str, Any], messages: tuple[str, ...]) -> FioJob:
    name = str(job.get("jobname", "?"))
    error = job.get("error", 0)
    if error:
        # fio puts only the errno in the JSON; the words are in its "fio: ... error=" lines.
        reason = os.strerror(error) if isinstance(error, int) else str(error)
        raise ValueError(
            _with_messages(f"fio job {name!r} failed with error {error} ({reason})", messages)
        )
    did_io = [d for d in ("read", "write") if _side(job, d).get("io_bytes", 0) > 0]
    if not did_io:
        raise ValueError(_with_messages(f"fio job {name!r} did no I/O", messages))
    if len(did_io) > 1:
        # sandbench only runs pure read or pure write jobs; a mix has no single latency.
        raise ValueError(f"fio job {name!r} both read and wrote; expected one direction")
    direction: Literal["read", "write"] = "read" if did_io[0] == "read" else "write"
    side = _side(job, direction)
    try:
        clat = side["clat_ns"]
        latency = FioLatency(
            mean_us=float(clat["mean"]) / 1000.0,
            min_us=float(clat["min"]) / 1000.0,
            max_us=float(clat["max"]) / 1000.0,
            stddev_us=float(clat["stddev"]) / 1000.0,
            samples=int(clat["N"]),
            percentiles_us={
                float(p): float(ns) / 1000.0 for p, ns in clat.get("percentile", {}).items()
            },
        )
        options = job.get("job options", {})
        return FioJob(
            name=name,
            direction=direction,
            rw=str(options["rw"]) if "rw" in options else None,
            bandwidth_mib_s=float(side["bw_bytes"]) / _MIB,
            iops=float(side["iops"]),
            runtime_s=float(side["runtime"]) / 1000.0,
            io_bytes=int(side["io_bytes"]),
            total_ios=int(side["total_ios"]),
            clat=latency,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"fio job {name!r}: unexpected JSON layout ({exc!r})") from exc


def _side(job: dict[str, Any], direction: str) -> dict[str, Any]:
    side = job.get(direction)
    return side if isinstance(side, dict) else {}


def _nonblank(lines: list[str]) -> tuple[str, ...]:
    return tuple(line.rstrip() for line in lines if line.strip())


def _with_messages(what: str, messages: tuple[str, ...]) -> str:
    if not messages:
        return what
    quoted = "\n".join(messages)
    if len(quoted) > _QUOTE_MAX:
        quoted = quoted[:_QUOTE_MAX] + " [...]"
    return f"{what}; fio said:\n{quoted}"
