"""Corrupt or hostile results directories and study values: every command that reads a results
directory (report, compare, a merge, run --resume) answers with one line naming the file, the
line or key and what it must be, exit status 2, and writes nothing (issue 21 item 8)."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from sandbench import cli, results
from sandbench.studyfile import load as load_study
from tests.reportdata import meta, realistic_records, write_run

ENVS = ["host", "runc"]
J, M = results.JOURNAL, results.META


def _sample(**over: object) -> str:
    rec: dict[str, object] = {"type": "sample", "env": "host", "bench": "startup",
                              "metric": "startup_time", "value": 1.0, "unit": "s", "round": 9,
                              "params": {}, "timestamp": "t"}
    rec.update(over)
    for k in [k for k, v in over.items() if v is _DROP]:
        del rec[k]
    return json.dumps(rec) + "\n"


_DROP = object()


def _append(line: str) -> Callable[[Path], None]:
    return lambda d: (d / J).write_text((d / J).read_text() + line)


def _meta_with(**over: object) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        (d / M).write_text(json.dumps({**json.loads((d / M).read_text()), **over}))
    return edit


#: (case, corruption, what the one line must say)
CASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("meta truncated", lambda d: (d / M).write_text((d / M).read_text()[:50]),
     "meta.json: not valid JSON"),
    ("meta a list", lambda d: (d / M).write_text("[1, 2]"), "meta.json: not a JSON object"),
    ("meta plan a string", _meta_with(plan="x"), "'plan' must be an object"),
    ("meta host a list", _meta_with(host=[1]), "'host' must be an object"),
    ("meta nan parameter", _meta_with(plan={"envs": ENVS, "benches": ["startup"],
                                            "params": {"startup": {"n": math.nan}}}),
     "plan.params.startup.n must be a finite number"),
    ("line not an object", lambda d: (d / J).write_text("[1]\n" + (d / J).read_text()),
     "line 1: not a JSON object"),
    ("line not JSON mid-file", lambda d: (d / J).write_text("{x\n" + (d / J).read_text()),
     "line 1 is not JSON"),
    ("sample without value", _append(_sample(value=_DROP)), "sample record without 'value'"),
    ("value a string", _append(_sample(value="fast")),
     "field 'value' must be a finite number, got \"fast\""),
    ("value NaN", _append('{"type":"sample","env":"host","bench":"startup","metric":"m",'
                          '"value":NaN,"unit":"s","round":1,"params":{},"timestamp":"t"}\n'),
     "field 'value' must be a finite number, got nan"),
    ("round a string", _append(_sample(round="a")), "field 'round' must be an integer"),
    ("round negative", _append(_sample(round=-1)), "field 'round' must be 0 or more"),
    ("params a list", _append(_sample(params=[])), "field 'params' must be an object"),
    ("raw absolute", _append(_sample(raw="/etc/shadow")),
     "field 'raw' must be a path inside the results directory"),
    ("raw climbs out", _append(_sample(raw="../../etc/shadow")),
     "field 'raw' must be a path inside the results directory"),
    ("unknown record type", _append('{"type": "bogus"}\n'), "unknown record type \"bogus\""),
    ("failure without error", _append(json.dumps(
        {"type": "failure", "env": "host", "bench": "startup", "round": 0, "params": {},
         "timestamp": "t"}) + "\n"), "failure record without 'error'"),
]


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("good") / "run"
    m = meta(ENVS, profile="quick")
    m["plan"]["params"] = {b: {} for b in m["plan"]["benches"]}
    return write_run(d, realistic_records(ENVS, rounds=3), m)


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command", ["report", "compare", "merge", "resume"])
@pytest.mark.parametrize(("case", "corrupt", "message"), CASES, ids=[c[0] for c in CASES])
def test_corrupt_results_one_line_exit_2_nothing_written(
    command: str, case: str, corrupt: Callable[[Path], None], message: str, good: Path,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    corrupt(bad)
    before = _snapshot(bad)
    out = tmp_path / "out"
    argv = {"report": ["report", str(bad), "--out", str(out)],
            "compare": ["compare", str(good), str(bad)],
            "merge": ["report", str(good), str(bad), "--out", str(out)],
            "resume": ["run", "--resume", str(bad)]}[command]
    code, err = _main(argv, capsys)
    assert code == 2, (case, err)
    assert len(err) == 1 and message in err[0], err
    assert str(bad) in err[0], "the line names the file"
    assert not out.exists(), "nothing half-written"
    assert _snapshot(bad) == before, "the directory read is untouched"


def test_the_same_directory_twice_is_not_merged(good: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    link = tmp_path / "alias"
    link.symlink_to(good)
    for argv in (["report", str(good), str(good), "--out", str(out)],
                 ["report", str(good), str(link), "--out", str(out)]):
        code, err = _main(argv, capsys)
        assert code == 2 and len(err) == 1 and "given twice" in err[0], err
    assert not out.exists()


def test_report_out_with_foreign_files_is_refused_and_kept(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "mine"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "holiday.png").write_bytes(b"not sandbench's")
    (out / "notes.txt").write_text("mine")
    code, err = _main(["report", str(good), "--out", str(out)], capsys)
    assert code == 2 and len(err) == 1 and "not a sandbench report (notes.txt)" in err[0], err
    assert (out / "figures" / "holiday.png").read_bytes() == b"not sandbench's"
    assert (out / "notes.txt").read_text() == "mine"


def test_a_raw_symlink_out_of_the_directory_is_not_read(tmp_path: Path) -> None:
    d = tmp_path / "run"
    (d / "raw").mkdir(parents=True)
    secret = tmp_path / "secret.json"
    secret.write_text("[1, 2, 3]")
    (d / "raw" / "leak.json").symlink_to(secret)
    (d / "raw" / "mine.json").write_text("[4]")
    assert results.raw_file(d, "raw/leak.json") is None
    assert results.raw_file(d, "raw/mine.json") == (d / "raw" / "mine.json").resolve()
    assert results.raw_file(d, "/etc/passwd") is None
    assert results.raw_file(d, "raw/../../secret.json") is None


STUDY_CASES = [
    ("budget = nan", "budget must be a positive finite number, got nan"),
    ("budget = inf", "budget must be a positive finite number, got inf"),
    ("budget = 1e9", "budget must be between 0.1 and 10080"),
    ("rounds = 100000000", "rounds must be between 1 and 10000"),
    ("[timeouts]\nstart = inf", "timeouts.start must be a positive finite number, got inf"),
    ("[timeouts]\nstart = nan", "timeouts.start must be a positive finite number, got nan"),
    ("[bench.density]\nmem_floor_fraction = 1.5",
     "bench.density.mem_floor_fraction must be a finite number between 0.01 and 0.9, got 1.5"),
    ("[bench.density]\npsi_max = 400.0",
     "bench.density.psi_max must be a finite number between 0.1 and 100"),
    ("[bench.density]\nslow_factor = 1.0",
     "bench.density.slow_factor must be a finite number between 1.5 and 1000"),
    ("[bench.startup]\nrounds = nan",
     "bench.startup.rounds must be an integer between 1 and 10000, got nan"),
]


@pytest.mark.parametrize(("text", "message"), STUDY_CASES, ids=[c[0] for c in STUDY_CASES])
def test_study_values_non_finite_or_out_of_range(text: str, message: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "study.toml"
    f.write_text(text + "\n")
    out = tmp_path / "out"
    code, err = _main(["run", "--study", str(f), "--out", str(out)], capsys)
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_study_bounds_accept_the_profiles_own_values(tmp_path: Path) -> None:
    """Every benchmark's quick and paper values lie within its declared bounds: the bounds
    refuse typos, never a shipped profile."""
    from sandbench.benchmarks.registry import all_benchmarks

    benches = all_benchmarks()
    for profile in ("quick", "paper"):
        lines = []
        for b in benches:
            nums = {k: v for k, v in {**b.params(profile).to_dict(),
                                      **b.round_policy(profile).to_dict()}.items()
                    if isinstance(v, int | float) and not isinstance(v, bool) and v > 0}
            if nums:
                lines.append(f"[bench.{b.name}]")
                lines += [f"{k} = {v!r}" for k, v in nums.items()]
        f = tmp_path / f"{profile}.toml"
        f.write_text("\n".join(lines) + "\n")
        study = load_study(f, ["host"], {b.name: b.Params for b in benches},
                           ("quick", "paper"), ["start"])
        assert study.bench, profile
        for b in benches:  # every value, lists and strings included, decodes as shipped
            assert b.params(profile).replace(**b.params(profile).to_dict()) == b.params(profile)
