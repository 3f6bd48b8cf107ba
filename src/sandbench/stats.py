"""Per-cell statistics: robust summaries, bootstrap intervals, ratios to a baseline, tests.

A cell is (env, bench, metric, params). Medians are the headline number everywhere because
sandbox timings are skewed by the occasional slow start; the mean and CoV are kept for the
noise warning. Intervals are percentile bootstraps with a fixed seed, so the same journal
always gives the same report.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

SEED = 20210415  # fixed so that reports and scorecards are reproducible run to run
N_RESAMPLES = 5000
CONFIDENCE = 0.95
NOISY_COV = 0.05  # pyperf's threshold for "this run is unstable"
THIN_N = 5  # below this a two-sided Mann-Whitney cannot reach p < 0.01
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


def cell_key(sample: dict[str, Any]) -> CellKey:
    return (str(sample["env"]), str(sample["bench"]), str(sample["metric"]),
            params_key(sample.get("params")))


def group_samples(samples: Iterable[dict[str, Any]]) -> dict[CellKey, list[dict[str, Any]]]:
    """Samples by cell, each cell's samples in journal order."""
    cells: dict[CellKey, list[dict[str, Any]]] = {}
    for s in samples:
        cells.setdefault(cell_key(s), []).append(s)
    return cells


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


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U p-value; 1.0 where the test is undefined (an empty group or
    every value identical), since then nothing shows a difference."""
    if len(a) == 0 or len(b) == 0:
        return 1.0
    if len(set(a) | set(b)) == 1:
        return 1.0
    return float(sps.mannwhitneyu(a, b, alternative="two-sided").pvalue)


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


def summarize(samples: Iterable[dict[str, Any]], baseline: str = "host") -> list[CellStats]:
    """One CellStats per cell, with its ratio to the same (bench, metric, params) cell of the
    baseline env. A baseline that was not measured gives ratio None everywhere."""
    groups = group_samples(samples)
    out: list[CellStats] = []
    for key, ss in groups.items():
        env, bench, metric, pk = key
        values = [float(s["value"]) for s in ss]
        d = describe(values)
        flags = sorted({str(f) for s in ss for f in (s.get("flags") or [])})
        base = groups.get((baseline, bench, metric, pk))
        ratio = rlo = rhi = None
        if base is not None:
            bvals = [float(s["value"]) for s in base]
            ratio = safe_ratio(d["median"], float(np.median(bvals)))
            if ratio is not None:
                lo, hi = ratio_ci(values, bvals)
                rlo, rhi = (lo, hi) if math.isfinite(lo) else (None, None)
        out.append(CellStats(
            env=env, bench=bench, metric=metric, params=pk, unit=str(ss[0].get("unit", "")),
            values=tuple(values), n=int(d["n"]), median=d["median"], mean=d["mean"],
            stdev=d["stdev"], cov=d["cov"], min=d["min"], max=d["max"], q1=d["q1"],
            q3=d["q3"], ci_low=d["ci_low"], ci_high=d["ci_high"], flags=tuple(flags),
            ratio=ratio, ratio_low=rlo, ratio_high=rhi))
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
            f"medians and intervals are rough and no test can reach p < 0.01; use at least "
            f"{THIN_N} rounds (the paper profile)", listed(env, labels)))
    for (flag, env), labels in flagged.items():
        msg, advice = FLAG_ADVICE.get(flag, (f"samples carry flag {flag!r}",
                                             "read the run log for why"))
        out.append(StatWarning(flag, env, msg, advice, listed(env, labels)))
    return out
