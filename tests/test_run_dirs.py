"""Runs never share or steal a results directory: two runs started in the same second get
two directories; --resume refuses a directory a live run holds, and one begun on another
machine or boot unless --force."""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import psutil
import pytest

from sandbench import paths
from sandbench.cli import _make_out
from tests.conftest import env_or_skip, run_cli


def test_default_dirs_of_runs_started_in_the_same_second_differ(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ns = argparse.Namespace(out=None, profile="quick")
    made = {_make_out(ns) for _ in range(3)}
    assert len(made) == 3, made
    assert all(p.is_dir() and p.parent == Path("results") for p in made)


def test_resume_refuses_a_directory_a_live_run_holds(tmp_path: Path) -> None:
    held = tmp_path / "run"
    held.mkdir()
    other = subprocess.Popen(["sleep", "60"])
    lock = paths.state("runs") / str(other.pid)
    try:
        lock.write_text(f"{held.resolve()}\n{psutil.Process(other.pid).create_time()!r}\n")
        cp = run_cli("run", "--resume", str(held), timeout=120)
        assert cp.returncode == 2, cp.stdout + cp.stderr
        assert f"run {other.pid} is still running in it" in cp.stderr
        assert len(cp.stderr.strip().splitlines()) == 1
    finally:
        lock.unlink(missing_ok=True)
        other.kill()
        other.wait()


def test_resume_refuses_another_machines_run_unless_forced(tmp_path: Path) -> None:
    env_or_skip("host")
    out = tmp_path / "run"
    cp = run_cli("run", "--env", "host", "--bench", "syscall", "--rounds", "2", "--no-report",
                 "--out", str(out), timeout=300)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    meta = json.loads((out / "meta.json").read_text())
    meta.pop("finished", None)
    meta["host"]["machine_id"] = "0123456789abcdef0123456789abcdef"
    (out / "meta.json").write_text(json.dumps(meta))
    before = (out / "results.jsonl").read_bytes()
    cp = run_cli("run", "--resume", str(out), timeout=300)
    assert cp.returncode == 2 and "machine_id" in cp.stderr and "--force" in cp.stderr, cp.stderr
    assert (out / "results.jsonl").read_bytes() == before, "a refused resume wrote nothing"
    cp = run_cli("run", "--resume", str(out), "--force", "--no-report", timeout=300)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    kept = json.loads((out / "meta.json").read_text())
    assert kept["host"]["machine_id"] == "0123456789abcdef0123456789abcdef", \
        "a resume keeps the host facts the run began with"
    assert kept["resumed_host"][-1]["machine_id"] != kept["host"]["machine_id"]


def test_resume_rebuilds_the_plan_from_meta_as_data(tmp_path: Path) -> None:
    """Issue 27 item 3: the plan a resume runs is the stored one, rebuilt once from meta.json
    (no flags in between): it describes itself exactly as the run recorded it; an
    environment the run had that this sandbench does not know is refused in one line."""
    from sandbench.benchmarks.registry import all_benchmarks
    from sandbench.environments.registry import all_environments
    from sandbench.study import resume_plan

    env_or_skip("host")
    out = tmp_path / "run"
    cp = run_cli("run", "--env", "host", "--bench", "syscall,cpu", "--rounds", "2",
                 "--no-report", "--out", str(out), timeout=300)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    meta = json.loads((out / "meta.json").read_text())
    plan = resume_plan(meta, all_environments(), all_benchmarks())
    got = json.loads(json.dumps(plan.describe(), default=str))
    assert got == json.loads(json.dumps(meta["plan"], default=str))
    meta.pop("finished")
    meta["plan"]["envs"] = ["host", "vmware"]
    (out / "meta.json").write_text(json.dumps(meta))
    before = (out / "results.jsonl").read_bytes()
    cp = run_cli("run", "--resume", str(out), timeout=120)
    lines = cp.stderr.strip().splitlines()
    assert cp.returncode == 2 and len(lines) == 1, cp.stderr
    assert "environment 'vmware' is not one this sandbench knows" in lines[0]
    assert (out / "results.jsonl").read_bytes() == before
