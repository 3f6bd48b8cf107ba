"""The benchmarks of the tool itself (bench/) run and print their figures: a smoke test, never
a timed assertion (their numbers are for the README, measured on a quiet machine)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, env_or_skip


def _run(script: str, *args: str) -> dict[str, object]:
    cp = subprocess.run([sys.executable, str(REPO / "bench" / script), *args],
                        capture_output=True, text=True, timeout=300)
    assert cp.returncode == 0, cp.stderr[-2000:]
    out: dict[str, object] = json.loads(cp.stdout)
    return out


def test_harness_overhead_prints_its_figure(clean_host: None) -> None:
    env_or_skip("runc")
    if shutil.which("hyperfine") is None:
        pytest.skip("hyperfine not installed: apt-get install hyperfine")
    out = _run("harness_overhead.py", "--runs", "5")
    assert out["runs_each"] == 5
    assert isinstance(out["overhead_ms_median"], float)
    assert float(out["hyperfine_total_ms_median"]) > 0  # type: ignore[arg-type]


def test_runner_overhead_prints_its_figure(clean_host: None) -> None:
    env_or_skip("runc")
    env_or_skip("gvisor-systrap")
    out = _run("runner_overhead.py", "--boxes", "1", "--repeat", "4")
    assert out["sandboxes"] == 2
    assert float(out["isolate_ms_median"]) > 0  # type: ignore[arg-type]
