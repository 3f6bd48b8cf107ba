"""Per-cell statistics: robust summaries, bootstrap intervals, ratios to a baseline, tests.

A cell is (env, bench, metric, params). Medians are the headline number everywhere because
sandbox timings are skewed by the occasional slow start; the mean and CoV are kept for the
noise warning. Intervals are percentile bootstraps with a fixed seed, so the same journal
always gives the same report.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

from sandbench.results import DIRECTIONS, HostSample, Sample
from sandbench.results import KINDS as KIND_DIRECTIONS

SEED = 20210415  # fixed so that reports and scorecards are reproducible run to run
N_RESAMPLES = 5000
CONFIDENCE = 0.95
NOISY_COV = 0.05  # pyperf's threshold for "this run is unstable"
ALPHA = 0.01  # significance level of every test: scorecard, compare and the CLI table
MAX_LISTED = 6  # cells named per warning before "and N more"
# Counts of rare events (mostly 0): their CoV says nothing about the run's stability.
EVENT_COUNTS = frozenset({"retransmits", "errors", "reconnects", "socket_errors", "non_2xx"})

Array = npt.NDArray[np.float64]
ParamsKey = tuple[tuple[str, str], ...]
CellKey = tuple[str, str, str, ParamsKey]


def params_key(params: dict[str, Any] | None) -> ParamsKey:
    """A hashable, order-independent form of a sample's params (values as JSON text so that
    16 and "16" do not silently merge into one cell)."""
    if not params:
        return ()
    return tuple(sorted((str(k), v if isinstance(v, str) else json.dumps(v))
                        for k, v in params.items()))


def params_text(key: ParamsKey) -> str:
    return " ".join(f"{k}={v}" for k, v in key)


def cell_key(sample: Sample) -> CellKey:
    return (sample.env, sample.bench, sample.metric, params_key(sample.params))


_S = TypeVar("_S", bound=Sample)


def group_samples(samples: Iterable[_S]) -> dict[CellKey, list[_S]]:
    """Samples by cell, each cell's samples in journal order."""
    cells: dict[CellKey, list[_S]] = {}
    for s in samples:
        cells.setdefault(cell_key(s), []).append(s)
    return cells


def _round_of(s: Sample) -> tuple[int, str, int]:
    """The round a sample belongs to; merged hosts' (and directories') rounds stay apart."""
    return (s.source, s.host, s.round) if isinstance(s, HostSample) else (0, "", s.round)


def per_round(samples: Sequence[Sample]) -> list[float]:
    """The cell's values with the round as the unit of replication: one value per round,
    the median of the round's values, in journal order. A benchmark that journals several
    values a round (memory: one per sandbox started in it) shares that round's host state,
    so its sandboxes are not independent: tests, intervals and convergence use the rounds;
    the per-sandbox values stay in the journal and the figures. Merged hosts' rounds stay
    apart."""
    by_round: dict[tuple[int, str, int], list[float]] = {}
    for s in samples:
        by_round.setdefault(_round_of(s), []).append(float(s.value))
    return [v[0] if len(v) == 1 else float(np.median(v)) for v in by_round.values()]


def values_per_round(samples: Sequence[Sample]) -> int:
    """The most values any one round of the cell holds (1: one sample a round)."""
    counts: dict[tuple[int, str, int], int] = {}
    for s in samples:
        k = _round_of(s)
        counts[k] = counts.get(k, 0) + 1
    return max(counts.values(), default=1)


# --- bootstrap -----------------------------------------------------------------------------


def _resampled_medians(values: Array, rng: np.random.Generator, n_resamples: int) -> Array:
    idx = rng.integers(0, len(values), size=(n_resamples, len(values)))
    meds: Array = np.median(values[idx], axis=1)
    return meds


def bootstrap(
    groups: Sequence[Sequence[float]],
    combine: Callable[[list[Array]], Array],
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> tuple[float, float]:
    """Percentile interval of `combine(medians of each group)`, each group resampled
    independently (the groups are separate runs, not paired). `combine` gets one array of
    resampled medians per group and returns one array of statistics. NaN/inf resamples
    (e.g. a zero denominator) are dropped; if all are, the interval is (nan, nan)."""
    rng = np.random.default_rng(seed)
    meds = [_resampled_medians(np.asarray(g, dtype=np.float64), rng, n_resamples)
            for g in groups]
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = combine(meds)
    stat = stat[np.isfinite(stat)]
    if stat.size == 0:
        return (math.nan, math.nan)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(stat, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def median_ci(values: Sequence[float], **kw: Any) -> tuple[float, float]:
    """95 % bootstrap interval of the median."""
    return bootstrap([values], lambda m: m[0], **kw)


def ratio_ci(num: Sequence[float], den: Sequence[float], **kw: Any) -> tuple[float, float]:
    """Bootstrap interval of median(num) / median(den)."""
    return bootstrap([num, den], lambda m: m[0] / m[1], **kw)


def difference_ci(a: Sequence[float], b: Sequence[float], **kw: Any) -> tuple[float, float]:
    """Bootstrap interval of median(a) - median(b)."""
    return bootstrap([a, b], lambda m: m[0] - m[1], **kw)


def safe_ratio(num: float, den: float) -> float | None:
    if den == 0 or not math.isfinite(num) or not math.isfinite(den):
        return None
    return num / den


def min_p(n_a: int, n_b: int) -> float:
    """The smallest two-sided Mann-Whitney p reachable with n_a and n_b values: complete
    separation without ties, 2 / C(n_a + n_b, n_a) (1 at 1 vs 1, 0.33 at 2 vs 2, 0.1 at 3 vs 3,
    0.029 at 4 vs 4, 0.0079 at 5 vs 5). No data can do better, however far apart."""
    if n_a <= 0 or n_b <= 0:
        return 1.0
    return min(1.0, 2.0 / math.comb(n_a + n_b, n_a))


def rounds_to_decide(alpha: float = ALPHA, have: tuple[int, int] = (0, 0)) -> int:
    """Smallest number of rounds k such that topping both sides up to k (sides that already
    have more keep them) makes p < alpha reachable: 5 at alpha 0.01 from scratch."""
    k = 1
    while min_p(max(have[0], k), max(have[1], k)) >= alpha:
        k += 1
    return k


#: Below this many values per side no test here can reach p < ALPHA, and the percentile
#: bootstrap interval of a median (it never leaves the sample's [min, max], which covers the
#: true median with probability 1 - 2^(1-n): 75 % at 3, 94 % at 5) is too short to trust.
THIN_N = rounds_to_decide(ALPHA)


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U p-value; 1.0 where the test is undefined (an empty group or
    every value identical), since then nothing shows a difference."""
    if len(a) == 0 or len(b) == 0:
        return 1.0
    if len(set(a) | set(b)) == 1:
        return 1.0
    if math.comb(len(a) + len(b), len(a)) <= _EXACT_LIMIT:
        return _exact_rank_sum_p(a, b)
    return float(sps.mannwhitneyu(a, b, alternative="two-sided").pvalue)


#: Up to this many ways of splitting the pooled values the null is enumerated exactly (scipy's
#: exact method ignores ties and its fallback is asymptotic, wrong at small n: [1,1,2,3,4] vs
#: [10..14] gave 0.012 instead of the exact 0.0079).
_EXACT_LIMIT = 50_000


def _exact_rank_sum_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided permutation p of the rank sum (mid-ranks for ties), every split enumerated:
    the share of splits whose rank sum is at least as far from its mean as the observed one."""
    pooled = list(a) + list(b)
    ranks = sps.rankdata(pooled) * 2  # doubled mid-ranks are integers: exact comparisons
    r = [int(round(x)) for x in ranks]
    na, n = len(a), len(pooled)
    mean2 = na * (n + 1)  # the expected doubled rank sum, an integer
    obs = abs(sum(r[:na]) - mean2)
    hits = total = 0
    for combo in itertools.combinations(r, na):
        total += 1
        if abs(sum(combo) - mean2) >= obs:
            hits += 1
    return hits / total


# --- the one significance function -----------------------------------------------------------

BETTER = "better"
WORSE = "worse"
SAME = "no difference"
THIN = "not enough samples"
CHANGED = "different, direction unknown"  # significant, but the metric declares no direction


def direction_of(samples: Iterable[Sample]) -> str:
    """"higher" or "lower" (which is better), as the samples declare it (their "direction", or
    the usual direction of their "kind"); "" when they do not (journals from before metrics
    declared a meaning) or disagree. Never guessed from the metric's name."""
    found = set()
    for s in samples:
        d = s.direction or KIND_DIRECTIONS.get(s.kind, "")
        found.add(d if d in DIRECTIONS else "")
    return found.pop() if len(found) == 1 else ""


def kind_of(samples: Iterable[Sample]) -> str:
    kinds = {s.kind for s in samples}
    return kinds.pop() if len(kinds) == 1 else ""


@dataclass(frozen=True)
class Difference:
    """B against A: is there a real difference, and is it better or worse?"""

    n_a: int
    n_b: int
    median_a: float
    median_b: float
    ratio: float | None  # median_b / median_a; None where median_a is 0
    ratio_low: float | None  # bootstrap interval; None below 2 values a side (it is a point)
    ratio_high: float | None
    p: float  # two-sided Mann-Whitney U
    min_p: float  # the smallest p these n can reach
    alpha: float
    factor: float
    direction: str  # "higher", "lower" or "" (unknown)
    verdict: str  # BETTER, WORSE, SAME, THIN or CHANGED

    @property
    def different(self) -> bool:
        return self.verdict in (BETTER, WORSE, CHANGED)

    @property
    def decidable(self) -> bool:
        return self.verdict != THIN

    @property
    def rounds_needed(self) -> int:
        """Rounds per side that would make p < alpha reachable."""
        return rounds_to_decide(self.alpha, (self.n_a, self.n_b))

    def reason(self) -> str:
        """One line saying why the verdict is what it is."""
        n = f"n={self.n_a}/{self.n_b}"
        if self.verdict == THIN:
            return (f"{n}: the smallest two-sided Mann-Whitney p at these n is {self.min_p:.2g}, "
                    f"not below {self.alpha:g}; {self.rounds_needed} rounds a side decide")
        r = "n/a" if self.ratio is None else f"{self.ratio:.3g}x"
        ci = ("" if self.ratio_low is None or self.ratio_high is None
              else f" [{self.ratio_low:.3g}, {self.ratio_high:.3g}]")
        base = f"B/A {r}{ci}, p={self.p:.2g}, {n}"
        if self.verdict == SAME:
            why = (f"p >= {self.alpha:g}" if self.p >= self.alpha
                   else f"within {self.factor:g}x")
            return f"{base}: no real difference ({why})"
        if self.verdict == CHANGED:
            return f"{base}: differs, but the metric declares no direction (older journal)"
        return f"{base}: {self.verdict}"


def difference(a: Sequence[float], b: Sequence[float], *, direction: str = "",
               factor: float = 1.1, alpha: float = ALPHA) -> Difference:
    """The one significance rule (scorecard, `compare`, the CLI table): B differs from A when
    a two-sided Mann-Whitney U gives p < alpha AND median B / median A lies beyond `factor`
    either way (asv's rule: p alone flags noise at many rounds, the ratio alone flags luck at
    few). Where these n cannot reach p < alpha at all the verdict is THIN, never SAME.
    `direction` ("higher"/"lower" is better, "" unknown) turns a difference into BETTER or
    WORSE; it is read from the samples (direction_of), never from metric names."""
    na, nb = len(a), len(b)
    ma = float(np.median(a)) if na else math.nan
    mb = float(np.median(b)) if nb else math.nan
    mp = min_p(na, nb)
    ratio = safe_ratio(mb, ma) if na and nb else None
    lo = hi = None
    if ratio is not None and na >= 2 and nb >= 2:
        clo, chi = ratio_ci(b, a)
        lo, hi = (clo, chi) if math.isfinite(clo) else (None, None)
    p = mann_whitney(a, b)
    if mp >= alpha:
        verdict = THIN
    else:
        # A zero median in A (e.g. no errors): any significant change counts.
        beyond = mb != ma if ratio is None else (ratio > factor or ratio < 1.0 / factor)
        if not (p < alpha and beyond):
            verdict = SAME
        elif direction == "higher":
            verdict = BETTER if mb > ma else WORSE
        elif direction == "lower":
            verdict = BETTER if mb < ma else WORSE
        else:
            verdict = CHANGED
    return Difference(n_a=na, n_b=nb, median_a=ma, median_b=mb, ratio=ratio, ratio_low=lo,
                      ratio_high=hi, p=p, min_p=mp, alpha=alpha, factor=factor,
                      direction=direction if direction in DIRECTIONS else "", verdict=verdict)


# --- cells ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellStats:
    env: str
    bench: str
    metric: str
    params: ParamsKey
    unit: str
    values: tuple[float, ...]
    n: int
    median: float
    mean: float
    stdev: float  # sample stdev (n-1); nan for n < 2
    cov: float  # stdev / |mean|; nan where undefined
    min: float
    max: float
    q1: float  # numpy's default (linear) percentile method
    q3: float
    ci_low: float
    ci_high: float
    flags: tuple[str, ...] = ()
    ratio: float | None = None  # median / baseline median; None = no baseline ("n/a")
    ratio_low: float | None = None
    ratio_high: float | None = None
    kind: str = ""  # as the samples declare it ("" in older journals)
    direction: str = ""  # "higher" / "lower" is better; "" = unknown, never guessed
    #: Values a round journaled (memory: its sandboxes); values and n are then the rounds'
    #: medians, the unit of replication (per_round()).
    per_round: int = 1
    #: Every journaled value (per sandbox where a round holds several): for the figures.
    sample_values: tuple[float, ...] = ()

    @property
    def key(self) -> CellKey:
        return (self.env, self.bench, self.metric, self.params)


def describe(values: Sequence[float]) -> dict[str, float]:
    """n, median, mean, stdev, cov, min, max, q1, q3, ci_low, ci_high of one cell."""
    arr = np.asarray(values, dtype=np.float64)
    n = int(arr.size)
    if n == 0:
        raise ValueError("describe() needs at least one value")
    mean = float(arr.mean())
    stdev = statistics.stdev(arr.tolist()) if n >= 2 else math.nan
    cov = stdev / abs(mean) if n >= 2 and mean != 0 else math.nan
    q1, med, q3 = (float(x) for x in np.percentile(arr, [25, 50, 75]))
    lo, hi = median_ci(arr.tolist()) if n >= 2 else (med, med)
    return {"n": n, "median": med, "mean": mean, "stdev": stdev, "cov": cov,
            "min": float(arr.min()), "max": float(arr.max()), "q1": q1, "q3": q3,
            "ci_low": lo, "ci_high": hi}


def summarize(samples: Iterable[Sample], baseline: str = "host") -> list[CellStats]:
    """One CellStats per cell, with its ratio to the same (bench, metric, params) cell of the
    baseline env. A baseline that was not measured gives ratio None everywhere."""
    groups = group_samples(samples)
    out: list[CellStats] = []
    for key, ss in groups.items():
        env, bench, metric, pk = key
        values = per_round(ss)
        d = describe(values)
        flags = sorted({f for s in ss for f in s.flags})
        base = groups.get((baseline, bench, metric, pk))
        ratio = rlo = rhi = None
        if base is not None:
            bvals = per_round(base)
            ratio = safe_ratio(d["median"], float(np.median(bvals)))
            if ratio is not None:
                lo, hi = ratio_ci(values, bvals)
                rlo, rhi = (lo, hi) if math.isfinite(lo) else (None, None)
        out.append(CellStats(
            env=env, bench=bench, metric=metric, params=pk, unit=ss[0].unit,
            values=tuple(values), n=int(d["n"]), median=d["median"], mean=d["mean"],
            stdev=d["stdev"], cov=d["cov"], min=d["min"], max=d["max"], q1=d["q1"],
            q3=d["q3"], ci_low=d["ci_low"], ci_high=d["ci_high"], flags=tuple(flags),
            ratio=ratio, ratio_low=rlo, ratio_high=rhi, kind=kind_of(ss),
            direction=direction_of(ss), per_round=values_per_round(ss),
            sample_values=tuple(float(s.value) for s in ss)))
    return out


# --- warnings ------------------------------------------------------------------------------

FLAG_ADVICE: dict[str, tuple[str, str]] = {
    "emulated": ("ran under software emulation (no KVM)",
                 "its numbers are not comparable with hardware-virtualized ones; run on a host "
                 "with /dev/kvm to compare VMs"),
    "nested-virt": ("ran under nested virtualization",
                    "hypervisor overheads are inflated; measure on bare metal for numbers "
                    "comparable with the paper"),
    "noisy": ("was marked noisy by the runner",
              "close other workloads, pin CPUs and disable frequency scaling, then rerun"),
}


@dataclass(frozen=True)
class StatWarning:
    kind: str  # "noisy", "thin", or a sample flag such as "emulated"
    env: str
    message: str
    advice: str
    cells: tuple[str, ...] = field(default=())  # "bench/metric params" this applies to

    def text(self) -> str:
        where = f" ({', '.join(self.cells)})" if self.cells else ""
        return f"{self.env}: {self.message}{where}; {self.advice}"


def cell_label(c: CellStats) -> str:
    p = params_text(c.params)
    return f"{c.bench}/{c.metric}" + (f" {p}" if p else "")


def warnings_for(cells: Iterable[CellStats]) -> list[StatWarning]:
    """Warnings with advice, one per (kind, env) naming the cells concerned, so that a run with
    hundreds of disk cells does not drown the report."""
    noisy: dict[str, list[str]] = {}
    thin: dict[str, list[str]] = {}
    flagged: dict[tuple[str, str], list[str]] = {}
    per_env: dict[str, int] = {}
    for c in cells:
        label = cell_label(c)
        per_env[c.env] = per_env.get(c.env, 0) + 1
        if c.metric not in EVENT_COUNTS and math.isfinite(c.cov) and c.cov > NOISY_COV:
            noisy.setdefault(c.env, []).append(f"{label} CoV {c.cov:.1%}")
        if c.n < THIN_N:
            thin.setdefault(c.env, []).append(f"{label} n={c.n}")
        for f in c.flags:
            flagged.setdefault((f, c.env), []).append(label)
    def listed(env: str, labels: list[str]) -> tuple[str, ...]:
        if len(labels) == per_env[env]:
            return ("all its cells",)
        if len(labels) > MAX_LISTED:
            return (*labels[:MAX_LISTED], f"and {len(labels) - MAX_LISTED} more")
        return tuple(labels)

    out: list[StatWarning] = []
    for env, labels in noisy.items():
        out.append(StatWarning(
            "noisy", env, f"coefficient of variation above {NOISY_COV:.0%}",
            "close other workloads, pin CPUs, disable frequency scaling or add rounds",
            listed(env, labels)))
    for env, labels in thin.items():
        out.append(StatWarning(
            "thin", env, f"fewer than {THIN_N} samples",
            f"no test can reach p < {ALPHA:g} below {THIN_N} rounds a side (the smallest "
            f"two-sided Mann-Whitney p is {_min_p_list()}), so these cells cannot decide a "
            f"claim or show a change; use at least {THIN_N} rounds", listed(env, labels)))
    for (flag, env), labels in flagged.items():
        msg, advice = FLAG_ADVICE.get(flag, (f"samples carry flag {flag!r}",
                                             "read the run log for why"))
        out.append(StatWarning(flag, env, msg, advice, listed(env, labels)))
    return out


def _min_p_list() -> str:
    return ", ".join(f"{min_p(n, n):.2g} at n={n}" for n in range(1, THIN_N))
