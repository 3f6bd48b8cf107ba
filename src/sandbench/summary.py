"""The summary `sandbench run` prints at the end (and `sandbench report DIR --terminal`): one
row per environment, one column per benchmark's headline metric (Benchmark.headline), the
median of its rounds and, only where stats.difference (the scorecard's and `compare`'s rule)
says the difference is real, the ratio to the baseline. The metrics, parameters and units are
in the header and the footer, never in the cells; the columns are split over several tables
when one would not fit the width (100 columns when the output is not a terminal)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from sandbench import results, stats
from sandbench.results import Sample

FACTOR = 1.1  # as `compare`'s default: smaller changes are not called differences
#: The width when the output is not a terminal (CI logs, files).
PIPED_WIDTH = 100

_STYLE = {stats.BETTER: "green", stats.WORSE: "red", stats.CHANGED: "yellow"}
_MARK = {stats.BETTER: "+", stats.WORSE: "-", stats.CHANGED: "*"}


@dataclass(frozen=True)
class Column:
    """A benchmark's headline cell in every environment."""

    bench: str
    title: str
    metric: str
    params: stats.ParamsKey
    unit: str
    scale: float  # displayed value = value * scale (s shown as ms where all are below 1 s)
    shown_unit: str
    by_env: dict[str, list[Sample]]

    def legend(self) -> str:
        p = stats.params_text(self.params)
        direction = stats.direction_of([s for ss in self.by_env.values() for s in ss])
        better = {"lower": ", lower is better", "higher": ", higher is better"}.get(direction,
                                                                                    "")
        return f"{self.title}: {self.metric}{' ' + p if p else ''} ({self.shown_unit}{better})"


def fmt(x: float) -> str:
    """Three significant digits in at most 6 characters (k and M for large numbers)."""
    ax = abs(x)
    if ax >= 1e6:
        return f"{x / 1e6:.3g}M"
    if ax >= 1e4:
        return f"{x / 1e3:.3g}k"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 0.01 or x == 0:
        return f"{x:.3g}"
    if ax >= 0.001:
        return f"{x:.4f}"
    return f"{x:.1e}"


def fmt_ratio(r: float) -> str:
    return f"{r:.0f}x" if r >= 10 else f"{r:.2g}x"


def _declared() -> dict[str, tuple[str | None, dict[str, Any], str]]:
    from sandbench.benchmarks.registry import all_benchmarks

    return {b.name: (b.headline_metric(), dict(b.headline_params), b.short or b.name)
            for b in all_benchmarks()}


def columns(samples: Sequence[Sample]) -> list[Column]:
    """The headline column of every benchmark with samples, in registry order (then the
    order first journaled): its declared metric and cell, else its first metric and cell."""
    declared = _declared()
    groups = stats.group_samples(samples)
    benches = list(dict.fromkeys(k[1] for k in groups))
    rank = {b: i for i, b in enumerate(declared)}
    benches.sort(key=lambda b: rank.get(b, len(rank)))
    out = []
    for bench in benches:
        metric, want, title = declared.get(bench, (None, {}, bench))
        keys = [k for k in groups if k[1] == bench]
        metrics = list(dict.fromkeys(k[2] for k in keys))
        metric = metric if metric in metrics else metrics[0]
        pks = list(dict.fromkeys(k[3] for k in keys if k[2] == metric))
        pk = stats.params_key(want) if stats.params_key(want) in pks else pks[0]
        by_env = {k[0]: ss for k, ss in groups.items() if k[1:] == (bench, metric, pk)}
        unit = next(iter(by_env.values()))[0].unit
        medians = [float(np.median(stats.per_round(ss))) for ss in by_env.values()]
        scale, shown = 1.0, unit
        if unit == "s" and medians and max(abs(m) for m in medians) < 1.0:
            scale, shown = 1e3, "ms"
        out.append(Column(bench, title, metric, pk, unit, scale, shown or "count", by_env))
    return out


def _cell(col: Column, env: str, baseline: str, na: set[tuple[str, str]],
          failed: set[tuple[str, str]]) -> Text:
    ss = col.by_env.get(env)
    if not ss:
        if (env, col.bench) in na:
            return Text("n/a", style="dim")
        return Text("failed", style="red") if (env, col.bench) in failed else Text("-")
    values = stats.per_round(ss)
    text = Text(fmt(float(np.median(values)) * col.scale))
    base = col.by_env.get(baseline)
    if env == baseline or not base:
        return text
    d = stats.difference(stats.per_round(base), values,
                         direction=stats.direction_of(ss + base), factor=FACTOR)
    if d.different and d.ratio is not None:
        text.append(f" {fmt_ratio(d.ratio)}{_MARK[d.verdict]}", style=_STYLE[d.verdict])
    elif d.verdict == stats.THIN:
        text.append(" ~", style="dim")
    return text


def _width(texts: Sequence[str]) -> int:
    return max(len(line) for t in texts for line in t.split("\n"))


def summary_table(results_dir: Path, baseline: str = "host",
                  width: int = PIPED_WIDTH) -> RenderableType:
    """The run's summary as one table, or several stacked when the columns would not fit
    `width`: rows are the environments (class by class, as in the report), cells the
    medians of the rounds with "1.5x-" (worse), "0.5x+" (better) or "2x*" (changed, the
    metric declares no direction) against the baseline where Mann-Whitney p < ALPHA and the
    ratio is beyond FACTOR; "~" where the rounds are too few for any test."""
    from sandbench.report import envinfo

    meta = results.read_meta(results_dir)
    samples = results.read_samples(results_dir)
    na = {(r.env, r.bench) for r in results.read_not_applicable(results_dir)}
    failed = {(r.env, r.bench) for r in results.read_failures(results_dir)}
    plan_envs = [str(e) for e in (meta.get("plan") or {}).get("envs", [])]
    seen = {s.env for s in samples} | {e for e, _ in na | failed}
    envs = envinfo.by_class(envinfo.order(set(plan_envs) | seen, plan_envs),
                            meta.get("environments") or {})
    cols = columns(samples)
    rows = {c.bench: [_cell(c, e, baseline, na, failed) for e in envs] for c in cols}
    first_w = _width(["environment", *envs]) + 2
    widths = {c.bench: max(_width([f"{c.title}\n{c.shown_unit}"]),
                           _width([t.plain for t in rows[c.bench]])) + 3 for c in cols}
    chunks: list[list[Column]] = [[]]
    used = first_w
    for c in cols:
        if chunks[-1] and used + widths[c.bench] > width:
            chunks.append([])
            used = first_w
        chunks[-1].append(c)
        used += widths[c.bench]
    parts: list[RenderableType] = []
    for i, chunk in enumerate(chunks):
        title = f"medians ({meta.get('profile', '?')} profile)" if i == 0 else None
        t = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
        t.add_column("environment", no_wrap=True)
        for c in chunk:
            t.add_column(f"{c.title}\n{c.shown_unit}", justify="right", no_wrap=True)
        for j, e in enumerate(envs):
            t.add_row(e, *[rows[c.bench][j] for c in chunk])
        parts.append(t)
    legend = [c.legend() for c in cols]
    parts.append(Text(
        "; ".join(legend) + f". Cells: the median of the rounds; beside it the ratio to "
        f"{baseline} where Mann-Whitney p < {stats.ALPHA:g} and beyond {FACTOR:g}x "
        "(- worse, + better, * changed: no direction declared); ~ too few rounds to test "
        f"({stats.THIN_N} a side); n/a not applicable; every cell: report.md.",
        style="dim"))
    return Group(*parts)
