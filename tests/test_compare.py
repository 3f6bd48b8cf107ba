"""compare_runs on constructed runs: identical, a 2x regression, differing facts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from sandbench.compare import compare_runs, higher_is_better
from sandbench.errors import UsageError
from tests.reportdata import meta, realistic_records, write_run

ENVS = ["host", "docker", "kata-fc"]


def test_identical_runs_have_no_differences(tmp_path: Path) -> None:
    recs = realistic_records(ENVS, rounds=6)
    a = write_run(tmp_path / "a", recs, meta(ENVS))
    b = write_run(tmp_path / "b", recs, meta(ENVS))
    cmp = compare_runs(a, b)
    assert cmp.rows
    assert not cmp.differences and not cmp.regressions
    assert all(r.ratio == pytest.approx(1.0) for r in cmp.rows if r.ratio is not None)


def test_same_distribution_different_draws_are_not_differences(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", realistic_records(ENVS, rounds=6, seed=1), meta(ENVS))
    b = write_run(tmp_path / "b", realistic_records(ENVS, rounds=6, seed=2), meta(ENVS))
    assert not compare_runs(a, b).regressions


def test_slower_cell_is_a_regression_and_faster_throughput_is_not(tmp_path: Path) -> None:
    recs = realistic_records(ENVS, rounds=6)
    a = write_run(tmp_path / "a", recs, meta(ENVS))

    def change(s):  # type: ignore[no-untyped-def]
        if (s.env, s.metric) == ("docker", "startup_time"):
            return replace(s, value=s.value * 2)
        if (s.env, s.metric) == ("kata-fc", "throughput"):
            return replace(s, value=s.value * 2)
        return s
    b = write_run(tmp_path / "b", [change(s) for s in recs], meta(ENVS))
    cmp = compare_runs(a, b)
    assert [(r.env, r.metric) for r in cmp.regressions] == [("docker", "startup_time")]
    reg = cmp.regressions[0]
    assert reg.ratio == pytest.approx(2.0)
    assert reg.p_value < 0.01
    assert reg.ratio_low is not None and reg.ratio_low > 1.5
    diffs = {(r.env, r.metric): r.verdict for r in cmp.differences}
    assert diffs == {("docker", "startup_time"): "REGRESSION",
                     ("kata-fc", "throughput"): "improvement"}
    text = cmp.render_text()
    assert "REGRESSION" in text and "startup_time" in text and "1 regressions" in text


def test_factor_hides_small_changes(tmp_path: Path) -> None:
    recs = realistic_records(ENVS, rounds=6, noise=0.001)
    a = write_run(tmp_path / "a", recs, meta(ENVS))
    b = write_run(tmp_path / "b", [replace(s, value=s.value * 1.05) if s.env == "docker"
                                   else s for s in recs], meta(ENVS))
    assert not compare_runs(a, b, factor=1.1).differences
    assert compare_runs(a, b, factor=1.02).regressions


def test_differing_kernel_is_refused_unless_forced(tmp_path: Path) -> None:
    recs = realistic_records(ENVS, rounds=5)
    a = write_run(tmp_path / "a", recs, meta(ENVS, kernel="6.1.0"))
    b = write_run(tmp_path / "b", recs, meta(ENVS, kernel="6.8.0"))
    with pytest.raises(UsageError) as exc:
        compare_runs(a, b)
    msg = str(exc.value)
    assert "kernel" in msg and "6.1.0" in msg and "6.8.0" in msg and "\n" not in msg
    forced = compare_runs(a, b, force=True)
    assert forced.rows and forced.differing_facts


def test_differing_runtime_version_is_refused(tmp_path: Path) -> None:
    recs = realistic_records(ENVS, rounds=5)
    a = write_run(tmp_path / "a", recs, meta(ENVS, versions={"docker": "24.0"}))
    b = write_run(tmp_path / "b", recs, meta(ENVS, versions={"docker": "27.1"}))
    with pytest.raises(UsageError, match="docker version"):
        compare_runs(a, b)


def test_only_common_cells_are_compared(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", realistic_records(ENVS, rounds=5), meta(ENVS))
    b = write_run(tmp_path / "b", realistic_records(["host"], rounds=5), meta(["host"]))
    assert {r.env for r in compare_runs(a, b).rows} == {"host"}


def test_higher_is_better_table() -> None:
    for m in ("throughput", "tps", "qps", "requests_per_second", "events_per_second", "events",
              "bandwidth", "iops"):
        assert higher_is_better(m), m
    for m in ("latency", "startup_time", "private_dirty", "getpid_latency", "latency_p99",
              "retransmits", "sender_cpu", "errors"):
        assert not higher_is_better(m), m
