"""A/B comparison of two results directories, cell by cell.

A change counts only when stats.difference says so (Mann-Whitney U, p < 0.01, and beyond a
stated factor either way: asv's rule); a cell with too few rounds to reach p < 0.01 reads
"not enough samples", never "same". Whether a change is a regression is read from the
direction each sample declares, never guessed from the metric's name. Runs that differ in a
checked fact (comparability.py: kernel, CPU, cores, virtualization, runtime versions, gVisor
platform, QEMU accelerator) or in a benchmark parameter other than the round settings are
refused unless forced, since their difference is not the change being asked about.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbench import comparability, results, stats
from sandbench.errors import UsageError
from sandbench.results import Sample

ALPHA = stats.ALPHA

_VERDICT_TEXT = {stats.BETTER: "improvement", stats.WORSE: "REGRESSION",
                 stats.SAME: "no difference", stats.THIN: "not enough samples",
                 stats.CHANGED: "changed (direction unknown)"}


@dataclass(frozen=True)
class CompareRow:
    env: str
    bench: str
    metric: str
    params: stats.ParamsKey  # the sample's params (the plan's are equal unless forced)
    unit: str
    diff: stats.Difference

    @property
    def n_a(self) -> int:
        return self.diff.n_a

    @property
    def n_b(self) -> int:
        return self.diff.n_b

    @property
    def median_a(self) -> float:
        return self.diff.median_a

    @property
    def median_b(self) -> float:
        return self.diff.median_b

    @property
    def ratio(self) -> float | None:
        return self.diff.ratio

    @property
    def ratio_low(self) -> float | None:
        return self.diff.ratio_low

    @property
    def ratio_high(self) -> float | None:
        return self.diff.ratio_high

    @property
    def p_value(self) -> float:
        return self.diff.p

    @property
    def direction(self) -> str:
        return self.diff.direction

    @property
    def different(self) -> bool:
        return self.diff.different

    @property
    def regression(self) -> bool:
        return self.diff.verdict == stats.WORSE

    @property
    def thin(self) -> bool:
        return self.diff.verdict == stats.THIN

    @property
    def verdict(self) -> str:
        return _VERDICT_TEXT[self.diff.verdict]


@dataclass
class Comparison:
    a: Path
    b: Path
    factor: float
    rows: list[CompareRow]
    differing_facts: list[str] = field(default_factory=list)  # set when forced past them
    differing_params: list[str] = field(default_factory=list)  # likewise

    @property
    def differences(self) -> list[CompareRow]:
        return [r for r in self.rows if r.different]

    @property
    def regressions(self) -> list[CompareRow]:
        return [r for r in self.rows if r.regression]

    @property
    def thin(self) -> list[CompareRow]:
        return [r for r in self.rows if r.thin]

    def render_text(self) -> str:
        head = ("env", "bench", "metric", "params", "unit", "better", "n A/B", "median A",
                "median B", "B/A", "95% CI", "p", "verdict")
        table = [head]
        for r in self.rows:
            ci = ("n/a" if r.ratio_low is None or r.ratio_high is None
                  else f"[{r.ratio_low:.3g}, {r.ratio_high:.3g}]")
            table.append((r.env, r.bench, r.metric, stats.params_text(r.params) or "-", r.unit,
                          r.direction or "unknown", f"{r.n_a}/{r.n_b}",
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
                     f"{len(self.differences)} differ, {len(self.regressions)} regressions, "
                     f"{len(self.thin)} with too few rounds to tell.")
        if self.thin:
            need = max(r.diff.rounds_needed for r in self.thin)
            lines.append(f"Not enough samples: below {stats.THIN_N} rounds a side no difference "
                         f"can reach p < {ALPHA:g}; rerun with --rounds {need} or more.")
        unknown = [r for r in self.rows if not r.direction]
        if unknown:
            lines.append(f"{len(unknown)} cells declare no direction (a journal from before "
                         "metrics declared one): their changes are not called better or worse.")
        if self.differing_facts:
            lines.append("Forced despite differing facts: " + "; ".join(self.differing_facts))
        if self.differing_params:
            lines.append("Forced despite differing parameters: "
                         + "; ".join(self.differing_params))
        return "\n".join(lines)


def differing_facts(meta_a: dict[str, Any], meta_b: dict[str, Any]) -> list[str]:
    """Checked facts whose values differ (comparability.py's list, shared with --resume)."""
    return comparability.differing_facts(meta_a, meta_b)


def _full_key(sample: Sample, plan: dict[str, dict[str, Any]]) -> stats.CellKey:
    """A cell keyed by all the parameters that decide what it measures: the benchmark's plan
    parameters (without the round settings) under the sample's own."""
    params = {**plan.get(sample.bench, {}), **sample.params}
    return (sample.env, sample.bench, sample.metric, stats.params_key(params))


def _cells(directory: Path, plan: dict[str, dict[str, Any]]
           ) -> dict[stats.CellKey, list[Sample]]:
    out: dict[stats.CellKey, list[Sample]] = {}
    for s in results.read_samples(directory):
        out.setdefault(_full_key(s, plan), []).append(s)
    return out


def compare_runs(a: Path, b: Path, factor: float = 1.1, force: bool = False) -> Comparison:
    """Compare every cell both runs measured (B against A)."""
    if factor < 1.0:
        raise UsageError(f"--factor {factor:g}: must be at least 1 (e.g. 1.1 for 10 %)")
    meta_a, meta_b = results.read_meta(a), results.read_meta(b)
    facts = comparability.differing_facts(meta_a, meta_b)
    params = comparability.differing_params(meta_a, meta_b)
    if (facts or params) and not force:
        what = []
        if facts:
            what.append("checked facts differ: " + "; ".join(facts))
        if params:
            what.append("benchmark parameters differ: " + "; ".join(params))
        raise UsageError("runs are not comparable: " + "; ".join(what)
                         + "; use --force to compare anyway")
    # Forced past differing parameters, cells can only be matched on the samples' params.
    plan_a = {} if params else comparability.plan_params(meta_a)
    plan_b = {} if params else comparability.plan_params(meta_b)
    ga, gb = _cells(a, plan_a), _cells(b, plan_b)
    rank = {e: i for i, e in enumerate(meta_a.get("plan", {}).get("envs", []))}
    keys = sorted((k for k in ga if k in gb),
                  key=lambda k: (rank.get(k[0], len(rank)), k[0], k[1], k[2], k[3]))
    rows = []
    for key in keys:
        sa, sb = ga[key], gb[key]
        da, db = stats.direction_of(sa), stats.direction_of(sb)
        diff = stats.difference(stats.per_round(sa), stats.per_round(sb),
                                direction=da if da == db else "", factor=factor, alpha=ALPHA)
        env, bench, metric, _ = key
        rows.append(CompareRow(env=env, bench=bench, metric=metric,
                               params=stats.params_key(sa[0].params),
                               unit=sa[0].unit, diff=diff))
    return Comparison(a=a, b=b, factor=factor, rows=rows,
                      differing_facts=facts if force else [],
                      differing_params=params if force else [])
