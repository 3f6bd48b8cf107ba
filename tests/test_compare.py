"""compare_runs on constructed runs: identical, real regressions read from the declared
direction, thin cells, and refusals (differing facts, parameters, core count)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sandbench.benchmarks.cpu import Cpu
from sandbench.benchmarks.params import RoundPolicy
from sandbench.benchmarks.startup import Startup
from sandbench.compare import compare_runs
from sandbench.errors import UsageError
from sandbench.results import Sample
from tests.reportdata import meta, realistic_records, sample, write_run

ENVS = ["host", "docker", "kata-fc"]
# What the benchmarks declare for the realistic metrics (results.Measurement kinds).
KINDS = {"startup_time": "time", "teardown_time": "time", "private_dirty": "size", "pss": "size",
         "throughput": "rate", "retransmits": "count", "getpid_latency": "latency",
         "requests_per_second": "rate", "tps": "rate", "qps": "rate", "latency": "latency",
         "bandwidth": "rate", "iops": "rate", "events_per_second": "rate", "events": "amount"}
DIRECTION = {"time": "lower", "size": "lower", "count": "lower", "latency": "lower",
             "rate": "higher", "amount": "higher"}


def declared(recs: list[Sample]) -> list[Sample]:
    out = []
    for s in recs:
        kind = KINDS.get(s.metric, "")
        out.append(replace(s, kind=kind, direction=DIRECTION.get(kind, "")))
    return out


def test_identical_runs_have_no_differences(tmp_path: Path) -> None:
    recs = declared(realistic_records(ENVS, rounds=6))
    a = write_run(tmp_path / "a", recs, meta(ENVS))
    b = write_run(tmp_path / "b", recs, meta(ENVS))
    cmp = compare_runs(a, b)
    assert cmp.rows
    assert not cmp.differences and not cmp.regressions and not cmp.thin
    assert all(r.ratio == pytest.approx(1.0) for r in cmp.rows if r.ratio is not None)
    assert {r.verdict for r in cmp.rows} == {"no difference"}


def test_same_distribution_different_draws_are_not_differences(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", declared(realistic_records(ENVS, rounds=6, seed=1)),
                  meta(ENVS))
    b = write_run(tmp_path / "b", declared(realistic_records(ENVS, rounds=6, seed=2)),
                  meta(ENVS))
    assert not compare_runs(a, b).regressions


def test_slower_cell_is_a_regression_and_faster_throughput_is_not(tmp_path: Path) -> None:
    recs = declared(realistic_records(ENVS, rounds=6))
    a = write_run(tmp_path / "a", recs, meta(ENVS))

    def change(s: Sample) -> Sample:
        if (s.env, s.metric) in (("docker", "startup_time"), ("kata-fc", "throughput")):
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


def _odd_metric(value: float, rounds: int, kind: str = "rate", direction: str = "",
                env: str = "docker") -> list[Sample]:
    recs = [replace(sample(env, "custom", "frobnications_per_fortnight",
                           value * (1 + 0.01 * (i % 3)), "1/fortnight", i), kind=kind)
            for i in range(rounds)]
    return [replace(s, direction=direction or DIRECTION.get(s.kind, "")) for s in recs]


def test_regression_on_declared_higher_is_better_metric_with_unusual_name(
        tmp_path: Path) -> None:
    """No name list: a declared rate that drops is a regression, one that rises is not."""
    a = write_run(tmp_path / "a", _odd_metric(100.0, 6), meta(["docker"]))
    worse = write_run(tmp_path / "w", _odd_metric(50.0, 6), meta(["docker"]))
    better = write_run(tmp_path / "b", _odd_metric(200.0, 6), meta(["docker"]))
    (row,) = compare_runs(a, worse).rows
    assert row.direction == "higher" and row.verdict == "REGRESSION" and row.regression
    (row,) = compare_runs(a, better).rows
    assert row.verdict == "improvement" and not row.regression
    # A metric may override its kind's direction: a "time" that is better higher.
    a2 = write_run(tmp_path / "a2", _odd_metric(100.0, 6, "time", "higher"), meta(["docker"]))
    b2 = write_run(tmp_path / "b2", _odd_metric(50.0, 6, "time", "higher"), meta(["docker"]))
    assert compare_runs(a2, b2).rows[0].verdict == "REGRESSION"


def test_undeclared_direction_is_unknown_not_guessed(tmp_path: Path) -> None:
    """An older journal without kind/direction: a real change is reported as a change of
    unknown direction, never as a regression guessed from the name "throughput"."""
    recs = [replace(s, kind="", direction="") for s in realistic_records(["docker"], rounds=6)]
    a = write_run(tmp_path / "a", recs, meta(["docker"]))
    b = write_run(tmp_path / "b", [replace(s, value=s.value / 2) if s.metric == "throughput"
                                   else s for s in recs], meta(["docker"]))
    cmp = compare_runs(a, b)
    (row,) = [r for r in cmp.rows if r.metric == "throughput"]
    assert row.direction == "" and row.verdict == "changed (direction unknown)"
    assert not cmp.regressions
    assert "declare no direction" in cmp.render_text()


def test_thin_cell_reads_not_enough_samples(tmp_path: Path) -> None:
    """One round each (the quick profile's cpu cell): even a 2x change cannot be shown."""
    a = write_run(tmp_path / "a", _odd_metric(100.0, 1), meta(["docker"]))
    b = write_run(tmp_path / "b", _odd_metric(50.0, 1), meta(["docker"]))
    cmp = compare_runs(a, b)
    (row,) = cmp.rows
    assert row.verdict == "not enough samples" and row.thin and not row.regression
    text = cmp.render_text()
    assert "not enough samples" in text and "same" not in text and "--rounds 5" in text
    # Two rounds a side: the smallest p is 1/3; still not enough.
    a = write_run(tmp_path / "a2", _odd_metric(100.0, 2), meta(["docker"]))
    b = write_run(tmp_path / "b2", _odd_metric(50.0, 2), meta(["docker"]))
    assert compare_runs(a, b).rows[0].verdict == "not enough samples"


def test_factor_hides_small_changes(tmp_path: Path) -> None:
    recs = declared(realistic_records(ENVS, rounds=6, noise=0.001))
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


def test_differing_core_count_is_refused(tmp_path: Path) -> None:
    recs = realistic_records(ENVS, rounds=5)
    m2 = meta(ENVS)
    m2["host"]["cores"] = 2
    a = write_run(tmp_path / "a", recs, meta(ENVS))
    b = write_run(tmp_path / "b", recs, m2)
    with pytest.raises(UsageError, match=r"host cores: A 12 vs B 2"):
        compare_runs(a, b)


@pytest.mark.parametrize("fact,va,vb", [("platform", "ptrace", "systrap"),
                                        ("accel", "kvm", "tcg"),
                                        ("runtime_version", "runsc 2020", "runsc 2024")])
def test_differing_env_fact_is_refused(tmp_path: Path, fact: str, va: str, vb: str) -> None:
    recs = realistic_records(ENVS, rounds=5)
    ma, mb = meta(ENVS), meta(ENVS)
    ma["environments"]["kata-fc"][fact] = va
    mb["environments"]["kata-fc"][fact] = vb
    a = write_run(tmp_path / "a", recs, ma)
    b = write_run(tmp_path / "b", recs, mb)
    with pytest.raises(UsageError, match=f"kata-fc {fact}"):
        compare_runs(a, b)


def test_differing_runtime_version_is_refused(tmp_path: Path) -> None:
    recs = realistic_records(ENVS, rounds=5)
    a = write_run(tmp_path / "a", recs, meta(ENVS, versions={"docker": "24.0"}))
    b = write_run(tmp_path / "b", recs, meta(ENVS, versions={"docker": "27.1"}))
    with pytest.raises(UsageError, match="docker version"):
        compare_runs(a, b)


def _with_params(m: dict[str, Any], profile: str, cpu_time_s: int,
                 rounds: dict[str, RoundPolicy] | None = None) -> dict[str, Any]:
    """The plan of a run of cpu and startup as Plan.describe records it: the parameters
    from each benchmark's Params (cpu's time_s set), the round policy in plan.rounds."""
    benches = {"cpu": Cpu(), "startup": Startup()}
    params = {"cpu": benches["cpu"].params(profile).replace(time_s=cpu_time_s),
              "startup": benches["startup"].params(profile)}
    rounds = rounds or {b: bench.round_policy(profile) for b, bench in benches.items()}
    m["plan"]["params"] = {b: p.to_dict() for b, p in params.items()}
    m["plan"]["rounds"] = {b: {**r.to_dict(), "by_env": {
        e: {"min": r.rounds, "max": r.max_rounds} for e in m["plan"]["envs"]}}
        for b, r in rounds.items()}
    return m


def test_quick_run_against_paper_run_is_refused(tmp_path: Path) -> None:
    """cpu and startup cells carry no params of their own: the plan's parameters must match
    (only round policies may differ), else the cells measure different things."""
    recs = declared(realistic_records(ENVS, rounds=5))
    a = write_run(tmp_path / "a", recs, _with_params(meta(ENVS, profile="quick"), "quick", 10))
    b = write_run(tmp_path / "b", recs, _with_params(meta(ENVS, profile="paper"), "paper", 600))
    # the two profiles' round policies differ too (startup: quick 5..20, paper 100)
    assert Startup().round_policy("quick") != Startup().round_policy("paper")
    with pytest.raises(UsageError) as exc:
        compare_runs(a, b)
    msg = str(exc.value)
    assert "cpu time_s: A 10 vs B 600" in msg and "--force" in msg
    assert "rounds" not in msg.replace("--force", "")
    forced = compare_runs(a, b, force=True)
    assert forced.rows and forced.differing_params == ["cpu time_s: A 10 vs B 600"]
    assert "Forced despite differing parameters" in forced.render_text()


def test_round_counts_and_adaptive_settings_may_differ(tmp_path: Path) -> None:
    recs = declared(realistic_records(ENVS, rounds=5))
    more = _with_params(meta(ENVS), "quick", 10,
                        rounds={"cpu": RoundPolicy(50, 200), "startup": RoundPolicy(50, 200)})
    more["plan"]["adaptive"] = {"target_rel_halfwidth": 0.02, "budget_s": None}
    a = write_run(tmp_path / "a", recs, _with_params(meta(ENVS), "quick", 10))
    b = write_run(tmp_path / "b", recs, more)
    cmp = compare_runs(a, b)
    assert cmp.rows and cmp.differing_params == []
    assert {r.bench for r in cmp.rows} >= {"cpu", "startup"}


def test_an_older_runs_round_settings_inside_params_do_not_differ(tmp_path: Path) -> None:
    """An older meta.json kept "rounds" / "max_rounds" inside plan.params: read_meta migrates
    them to plan.rounds, so that a run of other round counts compares (and the newer layout
    against the older one too), while a real parameter difference is still refused."""
    def old(time_s: int, rounds: int, max_rounds: int) -> dict[str, Any]:
        m = meta(ENVS)
        m["plan"]["params"] = {
            "cpu": {"rounds": rounds, "max_rounds": max_rounds,
                    **Cpu().params("quick").replace(time_s=time_s).to_dict()},
            "startup": {"rounds": rounds, "max_rounds": max_rounds}}
        return m

    recs = declared(realistic_records(ENVS, rounds=5))
    a = write_run(tmp_path / "a", recs, old(10, 5, 8))
    b = write_run(tmp_path / "b", recs, old(10, 50, 200))
    new = write_run(tmp_path / "new", recs, _with_params(meta(ENVS), "quick", 10))
    longer = write_run(tmp_path / "longer", recs, old(600, 5, 8))
    assert compare_runs(a, b).rows
    assert compare_runs(a, new).rows
    with pytest.raises(UsageError, match="cpu time_s: A 10 vs B 600") as exc:
        compare_runs(a, longer)
    assert "rounds" not in str(exc.value).replace("--force", "")


def test_only_common_cells_are_compared(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", realistic_records(ENVS, rounds=5), meta(ENVS))
    b = write_run(tmp_path / "b", realistic_records(["host"], rounds=5), meta(["host"]))
    assert {r.env for r in compare_runs(a, b).rows} == {"host"}
