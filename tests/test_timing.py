"""A run journals where each benchmark's wall time went (timing records) and says it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbench.results import read_samples, read_timings
from sandbench.timing import timing_lines
from tests.conftest import env_or_skip, run_cli

pytestmark = pytest.mark.runtime


def test_run_journals_where_the_time_went(tmp_path: Path) -> None:
    env_or_skip("runc")
    out = tmp_path / "run"
    cp = run_cli("run", "--env", "host,runc", "--bench", "startup,syscall", "--rounds", "3",
                 "--no-report", "--out", str(out), timeout=600)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    recs = {r.bench: r for r in read_timings(out)}
    assert set(recs) == {"startup", "syscall", "_run"}
    for bench in ("startup", "syscall"):
        r = recs[bench]
        spans = r.spans
        assert {"setup", "rounds", "isolate", "noise", "teardown", "other"} <= set(spans)
        assert all(v >= 0 for v in spans.values())
        # The spans partition the wall time ("other" is the rest), to rounding.
        assert abs(sum(spans.values()) - r.wall_s) < 0.01 + 0.001 * len(spans)
        assert spans["rounds"] > 0
    run = recs["_run"]
    assert run.spans["benchmarks"] <= run.wall_s + 0.01
    assert "where the time went: " in cp.stdout.replace("\n", "")
    assert timing_lines(out)[-1].startswith("run: ")
    assert len(read_samples(out)) > 0, "timing records do not disturb the samples' readers"
