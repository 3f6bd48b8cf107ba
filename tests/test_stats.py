"""Statistics checked against values computed independently (by hand, `statistics`, scipy)."""

from __future__ import annotations

import math
import statistics
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats as sps

from sandbench import stats
from sandbench.results import HostSample, Sample


def _samples(env: str, values: list[float], metric: str = "startup_time",
             params: dict[str, str] | None = None, flags: list[str] | None = None
             ) -> list[Sample]:
    return [Sample(env=env, bench="b", metric=metric, value=v, unit="s", round=i,
                   params=params or {}, timestamp="", flags=flags or [])
            for i, v in enumerate(values)]


def test_describe_matches_hand_computed_values() -> None:
    d = stats.describe([float(x) for x in range(1, 11)])
    # By hand: median of 1..10 = 5.5; linear-interpolated quartiles 3.25 and 7.75.
    assert d["n"] == 10
    assert d["median"] == 5.5
    assert d["q1"] == pytest.approx(3.25)
    assert d["q3"] == pytest.approx(7.75)
    assert d["mean"] == 5.5
    assert d["min"] == 1.0 and d["max"] == 10.0
    assert d["stdev"] == pytest.approx(math.sqrt(55 / 6))  # sum((x-5.5)^2) = 82.5, / 9
    assert d["cov"] == pytest.approx(math.sqrt(55 / 6) / 5.5)


def test_describe_agrees_with_statistics_module() -> None:
    rng = np.random.default_rng(7)
    values = rng.lognormal(0.0, 0.5, size=37).tolist()
    d = stats.describe(values)
    q1, med, q3 = statistics.quantiles(values, n=4, method="inclusive")
    assert d["median"] == pytest.approx(statistics.median(values))
    assert d["median"] == pytest.approx(med)
    assert d["q1"] == pytest.approx(q1)
    assert d["q3"] == pytest.approx(q3)
    assert d["mean"] == pytest.approx(statistics.fmean(values))
    assert d["stdev"] == pytest.approx(statistics.stdev(values))
    assert d["ci_low"] <= d["median"] <= d["ci_high"]


def test_single_value_cell() -> None:
    d = stats.describe([4.0])
    assert d["median"] == 4.0 and d["ci_low"] == 4.0 and d["ci_high"] == 4.0
    assert math.isnan(d["stdev"]) and math.isnan(d["cov"])


def test_median_ci_is_reproducible() -> None:
    values = [1.0, 3.0, 2.0, 5.0, 4.0, 9.0, 2.5]
    assert stats.median_ci(values) == stats.median_ci(values)


def test_median_ci_covers_true_median_about_95_percent() -> None:
    # Lognormal(mu, s) has median exp(mu); across independent draws the 95 % interval should
    # contain it most of the time (percentile bootstrap under-covers a little at small n).
    true_median = math.exp(1.0)
    rng = np.random.default_rng(123)
    hits = 0
    trials = 120
    for _ in range(trials):
        values = rng.lognormal(1.0, 0.4, size=40).tolist()
        lo, hi = stats.median_ci(values, n_resamples=2000)
        hits += lo <= true_median <= hi
    assert 0.85 <= hits / trials <= 1.0


def test_ratio_ci_of_constant_groups_is_exact() -> None:
    assert stats.ratio_ci([10.0] * 6, [5.0] * 6) == (2.0, 2.0)
    assert stats.difference_ci([10.0] * 6, [4.0] * 6) == (6.0, 6.0)


def test_ratio_ci_brackets_point_ratio() -> None:
    rng = np.random.default_rng(3)
    num = (rng.normal(36.0, 1.0, 9)).tolist()
    den = (rng.normal(1.0, 0.03, 9)).tolist()
    lo, hi = stats.ratio_ci(num, den)
    point = statistics.median(num) / statistics.median(den)
    assert lo <= point <= hi
    assert lo > 30 and hi < 42


def test_ratio_with_zero_denominator_is_undefined() -> None:
    assert stats.safe_ratio(3.0, 0.0) is None
    lo, hi = stats.ratio_ci([1.0, 2.0], [0.0, 0.0])
    assert math.isnan(lo) and math.isnan(hi)


def test_mann_whitney_matches_scipy_and_handles_degenerate_input() -> None:
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    b = [6.0, 7.0, 8.0, 9.0, 10.0]
    expected = sps.mannwhitneyu(a, b, alternative="two-sided").pvalue
    assert stats.mann_whitney(a, b) == pytest.approx(expected)
    # Exact two-sided p for complete separation of 5 vs 5: 2 / C(10, 5) = 2 / 252.
    assert stats.mann_whitney(a, b) == pytest.approx(2 / 252)
    assert stats.mann_whitney([1.0, 1.0], [1.0, 1.0]) == 1.0
    assert stats.mann_whitney([], [1.0]) == 1.0


def test_summarize_ratio_to_baseline() -> None:
    samples = _samples("host", [1.0, 1.1, 0.9, 1.0, 1.05]) + \
        _samples("docker", [2.0, 2.2, 1.8, 2.0, 2.1])
    cells = {c.env: c for c in stats.summarize(samples, baseline="host")}
    assert cells["docker"].median == 2.0
    assert cells["docker"].ratio == pytest.approx(2.0)
    assert cells["docker"].ratio_low is not None and cells["docker"].ratio_high is not None
    assert cells["docker"].ratio_low <= 2.0 <= cells["docker"].ratio_high
    assert cells["host"].ratio == pytest.approx(1.0)


def test_summarize_without_baseline_gives_no_ratio() -> None:
    cells = stats.summarize(_samples("docker", [1.0, 2.0, 3.0]), baseline="host")
    assert cells[0].ratio is None and cells[0].ratio_low is None


def test_cells_are_split_by_params() -> None:
    samples = _samples("host", [1.0, 2.0], "latency", {"pattern": "seqread", "bs": "16k"}) + \
        _samples("host", [10.0, 20.0], "latency", {"bs": "1m", "pattern": "seqread"})
    cells = stats.summarize(samples)
    assert sorted(c.median for c in cells) == [1.5, 15.0]
    assert stats.params_text(cells[0].params) in {"bs=16k pattern=seqread",
                                                  "bs=1m pattern=seqread"}


def test_warnings_noisy_thin_and_flags() -> None:
    noisy = _samples("runc", [1.0, 1.3, 0.8, 1.2, 0.7, 1.1])  # CoV about 20 %
    thin = _samples("crun", [1.0, 1.0, 1.0])
    emulated = _samples("qemu-vm", [5.0] * 6, flags=["emulated"])
    quiet = _samples("host", [1.0, 1.001, 0.999, 1.0, 1.0])
    warns = stats.warnings_for(stats.summarize(noisy + thin + emulated + quiet))
    kinds = {(w.kind, w.env) for w in warns}
    assert ("noisy", "runc") in kinds
    assert ("thin", "crun") in kinds
    assert ("emulated", "qemu-vm") in kinds
    assert not any(w.env == "host" for w in warns)
    emu = next(w for w in warns if w.kind == "emulated")
    assert "not comparable" in emu.text()
    assert all(w.advice for w in warns)


def test_event_counts_are_not_called_noisy_and_long_lists_are_cut() -> None:
    retrans = _samples("docker", [0.0, 3.0, 0.0, 1.0, 0.0, 0.0], metric="retransmits")
    assert not stats.warnings_for(stats.summarize(retrans))
    many = [s for i in range(10)
            for s in _samples("runc", [1.0, 1.5, 0.6, 1.2, 0.8], metric=f"m{i}")]
    quiet = _samples("runc", [1.0] * 5, metric="steady")
    (w,) = stats.warnings_for(stats.summarize(many + quiet))
    assert w.kind == "noisy" and len(w.cells) == stats.MAX_LISTED + 1
    assert w.cells[-1] == "and 4 more"


# --- the one significance function -----------------------------------------------------------

def test_min_p_is_the_exact_complete_separation_p() -> None:
    for n in range(1, 7):
        a = [float(i) for i in range(n)]
        b = [float(100 + i) for i in range(n)]
        expected = 1.0 if n == 1 else float(sps.mannwhitneyu(a, b, method="exact").pvalue)
        assert stats.min_p(n, n) == pytest.approx(expected), n
    assert stats.min_p(2, 2) == pytest.approx(1 / 3)
    assert stats.min_p(3, 3) == pytest.approx(0.1)
    assert stats.min_p(0, 5) == 1.0


def test_rounds_to_decide() -> None:
    assert stats.rounds_to_decide(0.01) == 5 == stats.THIN_N
    assert stats.rounds_to_decide(0.05) == 4
    assert stats.rounds_to_decide(0.01, have=(1, 300)) == 1  # 2/301 < 0.01 already
    assert stats.rounds_to_decide(0.01, have=(2, 2)) == 5
    assert stats.rounds_to_decide(0.01, have=(1, 8)) == 4  # 2/C(12, 4) = 0.004


def test_difference_verdicts() -> None:
    lo = [1.0, 1.1, 0.9, 1.05, 0.95]
    hi = [2.0, 2.1, 1.9, 2.05, 1.95]
    assert stats.difference(lo, hi, direction="higher").verdict == stats.BETTER
    assert stats.difference(lo, hi, direction="lower").verdict == stats.WORSE
    assert stats.difference(hi, lo, direction="lower").verdict == stats.BETTER
    assert stats.difference(lo, hi).verdict == stats.CHANGED  # direction unknown
    same = stats.difference(lo, [x * 1.05 for x in lo], direction="lower")
    assert same.verdict == stats.SAME and "no real difference" in same.reason()
    d = stats.difference(lo, hi, direction="lower")
    assert d.ratio == pytest.approx(2.0) and d.p == pytest.approx(2 / 252)
    assert d.ratio_low is not None and d.ratio_high is not None
    assert d.ratio_low <= 2.0 <= d.ratio_high


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_difference_below_five_rounds_is_thin_never_same(n: int) -> None:
    d = stats.difference([1.0] * n, [1000.0] * n, direction="lower")
    assert d.verdict == stats.THIN and not d.different and not d.decidable
    assert d.min_p == pytest.approx(stats.min_p(n, n))
    assert d.rounds_needed == 5
    assert f"n={n}/{n}" in d.reason() and "5 rounds a side" in d.reason()
    if n == 1:
        assert d.ratio_low is None  # a point is no interval


def test_direction_is_read_from_samples_never_from_names() -> None:
    def s(**kw: str) -> Sample:
        return Sample(env="e", bench="b", metric="throughput", value=1.0, unit="1/s", round=0,
                      params={}, timestamp="", **kw)
    assert stats.direction_of([s(kind="rate", direction="higher")]) == "higher"
    assert stats.direction_of([s(kind="latency")]) == "lower"  # the kind's usual direction
    assert stats.direction_of([s(kind="time", direction="higher")]) == "higher"  # override
    assert stats.direction_of([s()]) == ""  # an older journal: unknown, not guessed
    assert stats.direction_of([s(direction="higher"), s(direction="lower")]) == ""


def test_cellstats_carry_kind_and_direction() -> None:
    ss = [replace(x, kind="rate", direction="higher") for x in _samples("host", [1.0, 2.0])]
    (c,) = stats.summarize(ss)
    assert (c.kind, c.direction) == ("rate", "higher")
    (c,) = stats.summarize(_samples("host", [1.0, 2.0]))
    assert (c.kind, c.direction) == ("", "")


def test_thin_warning_says_tests_cannot_reach_significance() -> None:
    (w,) = stats.warnings_for(stats.summarize(_samples("crun", [1.0, 1.0])))
    assert w.kind == "thin"
    assert "cannot" in w.advice and "rarely" not in w.advice
    assert "0.33 at n=2" in w.advice and "1 at n=1" in w.advice


def test_ties_at_five_a_side_decide_a_tenfold_regression() -> None:
    """scipy falls back to the asymptotic p (0.012) with a tie at n < 8; the exact
    enumeration reaches min_p(5, 5) = 0.0079, so the difference is decided."""
    from sandbench.stats import difference, mann_whitney, min_p
    a, b = [1.0, 1.0, 2.0, 3.0, 4.0], [10.0, 11.0, 12.0, 13.0, 14.0]
    assert mann_whitney(a, b) == pytest.approx(min_p(5, 5))
    assert difference(a, b).different


def test_round_is_the_unit_of_replication() -> None:
    """Three sandboxes a round share the round's host state: the cell's values, n, tests and
    intervals are the rounds' medians; the per-sandbox values stay for the figures."""
    from sandbench import stats

    def smp(env: str, rnd: int, v: float) -> Sample:
        return Sample(env=env, bench="memory", metric="private_dirty", value=v, unit="MiB",
                      round=rnd, params={}, timestamp="")

    a = [smp("host", r, 1.0 + 0.1 * k + 0.01 * r) for r in range(5) for k in range(3)]
    b = [smp("runc", r, 2.0 + 0.1 * k + 0.01 * r) for r in range(5) for k in range(3)]
    assert stats.per_round(a) == pytest.approx([1.1 + 0.01 * r for r in range(5)])
    assert stats.values_per_round(a) == 3
    cells = {c.env: c for c in stats.summarize(a + b, baseline="host")}
    assert cells["runc"].n == 5 and cells["runc"].per_round == 3
    assert len(cells["runc"].sample_values) == 15
    # Two merged hosts' round 0 are two rounds, not one.
    merged = [HostSample.of(smp("runc", 0, float(v)), host=f"h{v}", source=v) for v in range(4)]
    assert stats.per_round(merged) == [0.0, 1.0, 2.0, 3.0]
