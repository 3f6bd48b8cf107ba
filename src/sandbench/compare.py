"""A/B comparison of two results directories, cell by cell.

A change counts only when it is both significant (Mann-Whitney U, p < 0.01) and larger than a
stated factor either way (asv's rule): with a handful of rounds, p alone flags noise and the
ratio alone flags luck. Runs from different kernels, CPUs or runtime versions are refused
unless forced, since their difference is not the change being asked about (pyperf's rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sandbench import results, stats
from sandbench.errors import UsageError

ALPHA = 0.01
HOST_FACTS = ("kernel", "cpu_model")
ENV_FACTS = ("version", "runtime_version")

_HIGHER_BETTER = {"throughput", "tps", "qps", "requests_per_second", "bandwidth", "iops"}


def higher_is_better(metric: str) -> bool:
    """Throughput-like metrics; everything else (latency, time, memory, CPU use, error and
    retransmit counts) is better lower."""
    return metric in _HIGHER_BETTER or metric.startswith("events")


@dataclass(frozen=True)
class CompareRow:
    env: str
    bench: str
    metric: str
    params: stats.ParamsKey
    unit: str
    n_a: int
    n_b: int
    median_a: float
    median_b: float
    ratio: float | None  # median_b / median_a; None where median_a is 0
    ratio_low: float | None
    ratio_high: float | None
    p_value: float
    different: bool  # significant and beyond the factor
    regression: bool  # a real difference in the worse direction

    @property
    def verdict(self) -> str:
        if not self.different:
            return "same"
        return "REGRESSION" if self.regression else "improvement"


@dataclass
class Comparison:
    a: Path
    b: Path
    factor: float
    rows: list[CompareRow]
    differing_facts: list[str] = field(default_factory=list)  # set when forced past them

    @property
    def differences(self) -> list[CompareRow]:
        return [r for r in self.rows if r.different]

    @property
    def regressions(self) -> list[CompareRow]:
        return [r for r in self.rows if r.regression]

    def render_text(self) -> str:
        head = ("env", "bench", "metric", "params", "unit", "median A", "median B", "B/A",
                "95% CI", "p", "verdict")
        table = [head]
        for r in self.rows:
            ci = ("n/a" if r.ratio_low is None or r.ratio_high is None
                  else f"[{r.ratio_low:.3g}, {r.ratio_high:.3g}]")
            table.append((r.env, r.bench, r.metric, stats.params_text(r.params) or "-", r.unit,
                          f"{r.median_a:.4g}", f"{r.median_b:.4g}",
                          "n/a" if r.ratio is None else f"{r.ratio:.3f}", ci,
                          f"{r.p_value:.2g}", r.verdict))
        widths = [max(len(row[i]) for row in table) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                 for row in table]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append("")
        lines.append(f"A = {self.a}, B = {self.b}; a difference is p < {ALPHA:g} and B/A beyond "
                     f"{self.factor:g}x either way. {len(self.rows)} cells compared, "
                     f"{len(self.differences)} differ, {len(self.regressions)} regressions.")
        if self.differing_facts:
            lines.append("Forced despite differing facts: " + "; ".join(self.differing_facts))
        return "\n".join(lines)


def differing_facts(meta_a: dict[str, Any], meta_b: dict[str, Any]) -> list[str]:
    """Checked facts whose values differ, as 'name (A vs B)'."""
    out = []
    ha, hb = meta_a.get("host", {}), meta_b.get("host", {})
    for k in HOST_FACTS:
        if ha.get(k) != hb.get(k):
            out.append(f"host {k} ({ha.get(k)!r} vs {hb.get(k)!r})")
    ea, eb = meta_a.get("environments", {}), meta_b.get("environments", {})
    for env in [e for e in ea if e in eb]:
        for k in ENV_FACTS:
            va, vb = (ea[env] or {}).get(k), (eb[env] or {}).get(k)
            if va != vb:
                out.append(f"{env} {k} ({va!r} vs {vb!r})")
    return out


def compare_runs(a: Path, b: Path, factor: float = 1.1, force: bool = False) -> Comparison:
    """Compare every cell both runs measured (B against A)."""
    if factor < 1.0:
        raise UsageError(f"--factor {factor:g}: must be at least 1 (e.g. 1.1 for 10 %)")
    meta_a, meta_b = results.read_meta(a), results.read_meta(b)
    diffs = differing_facts(meta_a, meta_b)
    if diffs and not force:
        raise UsageError("runs differ in checked facts: " + "; ".join(diffs)
                         + "; use --force to compare anyway")
    ga = stats.group_samples(results.read_samples(a))
    gb = stats.group_samples(results.read_samples(b))
    plan = list(meta_a.get("plan", {}).get("envs", []))
    rank = {e: i for i, e in enumerate(plan)}
    keys = sorted((k for k in ga if k in gb),
                  key=lambda k: (rank.get(k[0], len(rank)), k[0], k[1], k[2], k[3]))
    rows = []
    for key in keys:
        va = [float(s["value"]) for s in ga[key]]
        vb = [float(s["value"]) for s in gb[key]]
        ma, mb = float(np.median(va)), float(np.median(vb))
        ratio = stats.safe_ratio(mb, ma)
        lo = hi = None
        if ratio is not None:
            clo, chi = stats.ratio_ci(vb, va)
            lo, hi = (clo, chi) if math.isfinite(clo) else (None, None)
        p = stats.mann_whitney(va, vb)
        # A zero median in A (e.g. no errors): any significant change counts.
        beyond = mb != ma if ratio is None else (ratio > factor or ratio < 1.0 / factor)
        different = p < ALPHA and beyond
        worse = mb < ma if higher_is_better(key[2]) else mb > ma
        env, bench, metric, pk = key
        rows.append(CompareRow(
            env=env, bench=bench, metric=metric, params=pk, unit=str(ga[key][0].get("unit", "")),
            n_a=len(va), n_b=len(vb), median_a=ma, median_b=mb, ratio=ratio, ratio_low=lo,
            ratio_high=hi, p_value=p, different=different, regression=different and worse))
    return Comparison(a=a, b=b, factor=factor, rows=rows,
                      differing_facts=diffs if force else [])
