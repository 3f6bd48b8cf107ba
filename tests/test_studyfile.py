"""Study files and command lines: every malformed one gives one clear line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbench.benchmarks.base import DEFAULT_TIMEOUTS
from sandbench.benchmarks.registry import all_benchmarks
from sandbench.environments.registry import names as env_names
from sandbench.study import PROFILES
from sandbench.studyfile import load
from tests.conftest import run_cli

BAD_STUDIES = [
    ('profile = "huge"', "profile 'huge' unknown; allowed: quick, paper"),
    ("profile = 3", "profile 3 unknown"),
    ('envs = "host"', "envs must be a non-empty list"),
    ("envs = []", "envs must be a non-empty list"),
    ('envs = ["host", "vmware"]', "envs: unknown name 'vmware'"),
    ('envs = ["host", "host"]', "envs: a name is listed twice"),
    ("envs = [1]", "envs must be a non-empty list"),
    ('benches = ["warp"]', "benches: unknown name 'warp'"),
    ("rounds = 0", "rounds must be a positive integer, got 0"),
    ("rounds = -1", "rounds must be a positive integer, got -1"),
    ('rounds = "5"', "rounds must be a positive integer, got '5'"),
    ("rounds = 2.5", "rounds must be a positive integer, got 2.5"),
    ("rounds = true", "rounds must be a positive integer, got True"),
    ('baseline = "nope"', "baseline 'nope' unknown"),
    ('baseline = ""', "baseline must be a non-empty string"),
    ("out = 5", "out must be a non-empty string"),
    ('colour = "red"', "unknown key 'colour'"),
    ("[timeouts]\nwarp = 5", "timeouts.warp unknown"),
    ("[timeouts]\nstart = 0", "timeouts.start must be a positive finite number, got 0"),
    ('[timeouts]\nstart = "soon"', "timeouts.start must be a positive finite number"),
    ('timeouts = "fast"', "timeouts must be a table"),
    ("[bench.warp]\nrounds = 1", "[bench.warp] unknown benchmark"),
    ("[bench.memory]\nsize = 1", "bench.memory.size unknown"),
    ("[bench.memory]\ncount = 0", "bench.memory.count must be a positive integer"),
    ('[bench.memory]\ncount = "ten"', "bench.memory.count must be a positive integer"),
    ("[bench.memory]\ncount = 1.5", "bench.memory.count must be a positive integer"),
    ("bench = 3", "bench must be a table"),
    ("[bench]\nmemory = 3", "bench.memory must be a table"),
    ("profile = ", "invalid TOML"),
    ("[[[", "invalid TOML"),
    ('envs = ["host"', "invalid TOML"),
    ("rounds = 1\nrounds = 2", "invalid TOML"),
]


def _load(path: Path) -> object:
    return load(
        path,
        env_names(),
        {b.name: b.Params for b in all_benchmarks()},
        PROFILES,
        list(DEFAULT_TIMEOUTS),
    )


@pytest.mark.parametrize(("text", "message"), BAD_STUDIES, ids=[t for t, _ in BAD_STUDIES])
def test_bad_study_file(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "study.toml"
    f.write_text(text + "\n")
    cp = run_cli("run", "--study", str(f), "--out", str(tmp_path / "out"), timeout=60)
    assert cp.returncode == 2, cp.stderr
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 1, cp.stderr
    assert str(f) in lines[0] and message in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def test_study_file_not_utf8_or_missing(tmp_path: Path) -> None:
    f = tmp_path / "bin.toml"
    f.write_bytes(b"\xff\xfe\x00rounds")
    cp = run_cli("run", "--study", str(f), timeout=60)
    assert cp.returncode == 2 and "not UTF-8" in cp.stderr
    cp = run_cli("run", "--study", str(tmp_path / "missing.toml"), timeout=60)
    assert cp.returncode == 2 and "no such file" in cp.stderr
    cp = run_cli("run", "--study", str(tmp_path), timeout=60)
    assert cp.returncode == 2 and "is a directory" in cp.stderr


def test_good_study_file_parsed(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text(
        'profile = "quick"\nenvs = ["host"]\nbenches = ["syscall"]\nrounds = 2\n'
        '[timeouts]\nstart = 30\n[bench.syscall]\ncalls = 500\n'
    )
    study = _load(f)
    assert study.envs == ["host"] and study.rounds == 2  # type: ignore[attr-defined]
    assert study.bench == {"syscall": {"calls": 500}}  # type: ignore[attr-defined]
    assert study.timeouts == {"start": 30.0}  # type: ignore[attr-defined]


def test_study_file_runs_with_its_parameters(tmp_path: Path) -> None:
    import json

    from sandbench.results import read_meta, read_samples

    f = tmp_path / "s.toml"
    out = tmp_path / "run"
    f.write_text(
        f'envs = ["host"]\nbenches = ["syscall"]\nrounds = 2\nout = "{out}"\n'
        "[bench.syscall]\ncalls = 500\n"
    )
    cp = run_cli("run", "--study", str(f), "--no-report", timeout=120)
    assert cp.returncode == 0, cp.stderr
    assert read_meta(out)["plan"]["params"]["syscall"]["calls"] == 500
    raw = [s.raw for s in read_samples(out)]
    assert raw and all('"calls": 500' in (out / r).read_text() for r in raw)
    assert json.loads((out / "meta.json").read_text())["plan"]["rounds"]["syscall"] == {
        "rounds": 2, "max_rounds": 2, "by_env": {"host": {"min": 2, "max": 2}}}


BAD_LINES = [
    (["run", "--resume", "/nonexistent"], "not a sandbench results directory"),
    (["run", "--env", "host;rm -rf /"], "unknown environment 'host;rm -rf /'"),
    (["run", "--env", "../../etc"], "unknown environment '../../etc'"),
    (["run", "--bench", "startup,$(id)"], "unknown benchmark '$(id)'"),
    (["run", "--rounds", "1e9x"], "--rounds must be a positive integer"),
    (["run", "--rounds", ""], "--rounds must be a positive integer"),
    (["compare", "/nonexistent-a", "/nonexistent-b"], "not a sandbench results directory"),
    (["compare", "/tmp", "/tmp", "--factor", "0.5"], "--factor must be a number above 1"),
    (["compare", "/tmp", "/tmp", "--factor", "x"], "--factor must be a number above 1"),
    (["report"], "the following arguments are required: dir"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_LINES, ids=[" ".join(a) for a, _ in BAD_LINES])
def test_bad_command_lines(argv: list[str], message: str) -> None:
    cp = run_cli(*argv, timeout=60)
    assert cp.returncode == 2, cp.stderr
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], cp.stderr
