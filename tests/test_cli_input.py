"""Bad input: one line naming the bad value and the valid ones, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli

CASES = [
    (["run", "--env", "nope"], "unknown environment 'nope'"),
    (["run", "--env", "host,nope"], "unknown environment 'nope'"),
    (["run", "--env", ","], "empty environment list"),
    (["run", "--env", "host,host"], "listed twice"),
    (["run", "--bench", "fast"], "unknown benchmark 'fast'"),
    (["run", "--profile", "huge"], "unknown profile 'huge'; allowed: quick, paper"),
    (["run", "--rounds", "abc"], "--rounds must be a positive integer, got 'abc'"),
    (["run", "--rounds", "0"], "--rounds must be a positive integer, got '0'"),
    (["run", "--rounds", "-3"], "--rounds must be a positive integer, got '-3'"),
    (["run", "--rounds", "1.5"], "--rounds must be a positive integer, got '1.5'"),
    (["run", "--baseline", "vmware"], "unknown baseline 'vmware'"),
    (["run", "--out", "/proc/sandbench-results"], "is not writable"),
    (["run", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["image", "build", "huge"], "unknown image 'huge'; known: full, minimal"),
    (["report", "/nonexistent-dir"], "not a sandbench results directory"),
    (["frob"], "invalid choice: 'frob'"),
]


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_one_line_exit_2(argv: list[str], message: str, tmp_path: Path) -> None:
    cp = run_cli(*argv, timeout=60)
    assert cp.returncode == 2, cp.stderr
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 1, cp.stderr
    assert message in lines[0]
    assert cp.stdout == ""


def test_bad_input_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cp = run_cli("run", "--env", "nope", "--out", str(out), timeout=60)
    assert cp.returncode == 2
    assert not out.exists()


def test_out_with_results_refused_and_kept(tmp_path: Path) -> None:
    (tmp_path / "results.jsonl").write_text('{"type":"sample"}\n')
    cp = run_cli("run", "--env", "host", "--out", str(tmp_path), timeout=60)
    assert cp.returncode == 2
    assert "already holds files" in cp.stderr
    assert (tmp_path / "results.jsonl").read_text() == '{"type":"sample"}\n'
