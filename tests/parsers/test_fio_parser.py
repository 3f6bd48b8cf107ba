from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sandbench.parsers.fio import (
    PERCENTILES,
    FioPattern,
    fio_argv,
    fio_jobs_argv,
    parse_fio_json,
)
from tests.parsers.captures import captured

# (file, direction, rw, bw_bytes, iops, runtime ms, total_ios, clat_ns min/max/mean/stddev/N,
#  clat percentiles 1/25/50/99 in ns) as printed in the captured JSON.
# fmt: off
CASES = [
    (
        "fio_seqread_16k.json", "read", "read", 154988873, 9459.770115, 2001, 18929,
        (44536, 6591922, 104624.546516, 143483.539112, 18929), (56576, 75264, 86528, 395264),
    ),
    (
        "fio_seqread_1m.json", "read", "read", 2126497455, 2027.986007, 2001, 4058,
        (342779, 7113741, 489683.332183, 259083.528519, 4058), (358400, 403456, 452608, 1253376),
    ),
    (
        "fio_seqwrite_16k.json", "write", "write", 177759440, 10849.575212, 2001, 21710,
        (20831, 2546660, 90562.905481, 68866.846855, 21710), (40192, 60160, 77312, 313344),
    ),
    (
        "fio_seqwrite_1m.json", "write", "write", 1772255888, 1690.154923, 2001, 3382,
        (295248, 5400923, 532156.747191, 227534.72405, 3382), (333824, 419840, 493568, 1335296),
    ),
    (
        "fio_randread_16k.json", "read", "randread", 162210606, 9900.549725, 2001, 19811,
        (31707, 2116570, 99645.916259, 58501.356845, 19811), (51968, 78336, 93696, 234496),
    ),
    (
        "fio_randread_1m.json", "read", "randread", 1125083794, 1072.963518, 2001, 2147,
        (711576, 6869387, 929520.362366, 298686.59396, 2147), (724992, 782336, 847872, 2179072),
    ),
    (
        "fio_randwrite_16k.json", "write", "randwrite", 185366004, 11313.843078, 2001, 22639,
        (36495, 3011338, 86771.286232, 42040.34562, 22639), (49408, 68096, 80384, 171008),
    ),
    (
        "fio_randwrite_1m.json", "write", "randwrite", 2531045517, 2413.793103, 2001, 4830,
        (270662, 2970578, 397924.904141, 101580.222617, 4830), (296960, 354304, 387072, 643072),
    ),
]
# fmt: on


@pytest.mark.parametrize(
    ("name", "direction", "rw", "bw_bytes", "iops", "runtime_ms", "total_ios", "clat", "pcts"),
    CASES,
)
def test_parse_captured_patterns(
    name: str,
    direction: str,
    rw: str,
    bw_bytes: int,
    iops: float,
    runtime_ms: int,
    total_ios: int,
    clat: tuple[int, int, float, float, int],
    pcts: tuple[int, int, int, int],
) -> None:
    result = parse_fio_json(captured(name))
    assert result.version == "fio-3.33"
    assert result.messages == ()
    (job,) = result.jobs
    assert job.direction == direction
    assert job.rw == rw
    assert job.bandwidth_mib_s == pytest.approx(bw_bytes / 1048576)
    assert job.iops == pytest.approx(iops)
    assert job.runtime_s == pytest.approx(runtime_ms / 1000)
    assert job.total_ios == total_ios
    assert job.io_bytes > 0
    lat = job.clat
    assert (lat.min_us, lat.max_us) == pytest.approx((clat[0] / 1000, clat[1] / 1000))
    assert lat.mean_us == pytest.approx(clat[2] / 1000)
    assert lat.stddev_us == pytest.approx(clat[3] / 1000)
    assert lat.samples == clat[4]
    # Exactly the percentiles fio_argv asks for, keyed by float.
    assert tuple(lat.percentiles_us) == PERCENTILES
    got = tuple(lat.percentiles_us[p] for p in (1.0, 25.0, 50.0, 99.0))
    assert got == pytest.approx(tuple(ns / 1000 for ns in pcts))


def test_seqread_16k_bandwidth_in_mib() -> None:
    # The capture says "bw_bytes" : 154988873 (and "bw" : 151356 KiB/s): 147.81 MiB/s.
    (job,) = parse_fio_json(captured("fio_seqread_16k.json")).jobs
    assert job.bandwidth_mib_s == pytest.approx(147.809, abs=1e-3)
    assert job.name == "seqread"


def test_note_line_before_json_is_kept_as_message() -> None:
    result = parse_fio_json(captured("fio_note_prefix.json"))
    assert result.messages == (
        "note: both iodepth >= 1 and synchronous I/O engine are selected, queue depth will be "
        "capped at 1",
    )
    (job,) = result.jobs
    assert job.direction == "read"
    assert job.total_ios == 256
    # fio's default percentile list when none is asked for.
    assert job.clat.percentiles_us[99.99] == pytest.approx(5799.936)


def test_stderr_appended_after_json_is_kept() -> None:
    text = captured("fio_randread_16k.json") + "fio: some trailing warning\n"
    result = parse_fio_json(text)
    assert result.messages == ("fio: some trailing warning",)
    assert result.jobs[0].iops == pytest.approx(9900.549725)


def test_job_error_quotes_fio_error_lines() -> None:
    with pytest.raises(ValueError) as info:
        parse_fio_json(captured("fio_error_nosize.txt"))
    msg = str(info.value)
    assert "job 'x' failed with error 22 (Invalid argument)" in msg
    assert "x: you need to specify size=" in msg
    assert "fio: pid=0, err=22/file:filesetup.c:1155, func=total_file_size" in msg


def test_bad_option_no_json_quotes_fio() -> None:
    with pytest.raises(ValueError, match="no JSON output") as info:
        parse_fio_json(captured("fio_error_badrw.txt"))
    assert "fio: failed parsing rw=bogus" in str(info.value)


def test_truncated_json() -> None:
    text = captured("fio_note_prefix.json")
    with pytest.raises(ValueError, match="not complete JSON") as info:
        parse_fio_json(text[: len(text) // 2])
    # The note fio printed before the JSON travels with the error.
    assert "queue depth will be capped at 1" in str(info.value)


@pytest.mark.parametrize("text", ["", "\n\n", "fio-3.33\n"])
def test_empty_or_no_json(text: str) -> None:
    with pytest.raises(ValueError, match="no JSON output"):
        parse_fio_json(text)


def test_no_jobs() -> None:
    with pytest.raises(ValueError, match="no jobs"):
        parse_fio_json('{\n  "fio version" : "fio-3.33",\n  "jobs" : []\n}\n')


def test_job_without_io() -> None:
    text = captured("fio_randread_16k.json").replace('"io_bytes" : 324583424', '"io_bytes" : 0')
    with pytest.raises(ValueError, match="did no I/O"):
        parse_fio_json(text)


def test_fio_argv_time_based() -> None:
    argv = fio_argv("/var/tmp/f", "randwrite", "16k", "10g", runtime_s=40, ioengine="libaio")
    assert argv == [
        "fio",
        "--name=randwrite",
        "--filename=/var/tmp/f",
        "--rw=randwrite",
        "--bs=16k",
        "--size=10g",
        "--ioengine=libaio",
        "--direct=1",
        "--output-format=json",
        "--percentile_list=1:5:10:25:50:75:90:95:99",
        "--time_based",
        "--runtime=40",
    ]


@pytest.mark.parametrize(
    ("pattern", "rw"),
    [
        ("seqread", "read"),
        ("seqwrite", "write"),
        ("randread", "randread"),
        ("randwrite", "randwrite"),
    ],
)
def test_fio_argv_patterns(pattern: FioPattern, rw: str) -> None:
    argv = fio_argv("f", pattern, "1m", "64m", direct=False, name="job1")
    assert f"--rw={rw}" in argv
    assert "--direct=0" in argv
    assert "--name=job1" in argv
    assert "--ioengine=psync" in argv
    assert "--time_based" not in argv
    assert not any(a.startswith("--runtime") for a in argv)


def test_fio_argv_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown fio pattern"):
        fio_argv("f", "readwrite", "16k", "1m")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ioengine"):
        fio_argv("f", "seqread", "16k", "1m", ioengine="io_uring")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        fio_argv("f", "seqread", "16k", "1m", runtime_s=0)


@pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed")
def test_fio_argv_runs_and_parses(tmp_path: Path) -> None:
    # The argv is what real fio accepts, and its output is what the parser reads. Buffered
    # I/O: tmp_path may be on a filesystem without O_DIRECT.
    argv = fio_argv(str(tmp_path / "f.dat"), "seqwrite", "64k", "4m", runtime_s=1, direct=False)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    (job,) = parse_fio_json(proc.stdout).jobs
    assert job.direction == "write"
    assert job.rw == "write"
    assert job.total_ios > 0
    assert tuple(job.clat.percentiles_us) == PERCENTILES


def test_fio_jobs_argv_runs_jobs_one_after_the_other(tmp_path: Path) -> None:
    """One fio run, several stonewalled jobs with ramp and measured time, parsed in order."""
    if shutil.which("fio") is None:
        pytest.skip("fio is not installed (Debian package fio)")
    jobs: list[tuple[FioPattern, str]] = [("seqwrite", "64k"), ("randread", "16k")]
    argv = fio_jobs_argv(str(tmp_path / "f.dat"), jobs, "4m", runtime_ms=200, ramp_ms=100,
                         direct=False)
    assert argv.count("--stonewall") == 2
    assert "--runtime=200ms" in argv and "--ramp_time=100ms" in argv
    assert argv.index("--name=seqwrite-64k") < argv.index("--name=randread-16k")
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    res = parse_fio_json(cp.stdout + cp.stderr)
    assert [j.name for j in res.jobs] == ["seqwrite-64k", "randread-16k"]
    assert [j.direction for j in res.jobs] == ["write", "read"]
    for job in res.jobs:
        # ramp time is not measured: about 200 ms of I/O remain.
        assert 0.15 <= job.runtime_s <= 0.5 and job.total_ios > 0
    with pytest.raises(ValueError):
        fio_jobs_argv("f", jobs, "4m", runtime_ms=0)
    with pytest.raises(ValueError):
        fio_jobs_argv("f", [("mixed", "16k")], "4m", runtime_ms=10)  # type: ignore[list-item]
