"""Figures drawn only from the stored samples (never from live state).

Every benchmark the run measured gets a figure, whether or not the report knows it: the
distribution of its headline metric (all rounds as points, a box where there are enough),
environments in the run's order, grouped by host, emulated ones hatched and set apart after a
dashed line. One figure uses one scale kind (log or linear) for all its panels.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from sandbench import stats  # noqa: E402
from sandbench.report import envinfo  # noqa: E402
from sandbench.report.model import RunData  # noqa: E402

DPI = 100
LOG_SPREAD = 30.0  # above this max/min ratio a linear axis hides the small environments
MIN_BOX = 5  # fewer samples than this: points and a median bar, no box
EMULATED_HATCH = "//"
SPLIT_KEY = "pattern"  # a benchmark with many panels gets one figure per value of this param
MAX_PANELS = 4
@dataclass(frozen=True)
class Figure:
    name: str  # file stem; the PNG is figures/<name>.png
    title: str
    paper: str  # which figure of the paper this reproduces ("" for none)
    path: Path
    caption: str
    section: str = "figures"  # or "phases", "density", "burst": where the report puts it


@dataclass(frozen=True)
class Series:
    label: str  # env, or "env @ host"
    values: tuple[float, ...]
    emulated: bool
    colour: str


def _bs_bytes(bs: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)i?b?", bs.strip().lower())
    if not m:
        return math.inf
    return float(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2)]


def _params_sort(pk: stats.ParamsKey) -> tuple[Any, ...]:
    return tuple((k, _bs_bytes(v), v) for k, v in pk)


def nice_metric(metric: str) -> str:
    return metric.replace("_", " ")


def direction_text(direction: str | None) -> str:
    return {"lower": "lower is better", "higher": "higher is better"}.get(direction or "",
                                                                          "direction unknown")


def series_for(run: RunData, cells: Sequence[stats.CellStats]) -> list[Series]:
    """One series per cell, ordered host by host, emulated environments last in each host."""
    hosts = run.hosts
    ordered = sorted(cells, key=lambda c: (
        hosts.index(run.host_of(c.env)) if run.host_of(c.env) in hosts else 0,
        "emulated" in c.flags, run.env_rank(c.env)))
    # Every journaled value (each sandbox of a memory round), not only the rounds' medians.
    return [Series(c.env, c.sample_values or c.values, "emulated" in c.flags,
                   run.colour(c.env)) for c in ordered]


def positions(run: RunData, series: Sequence[Series]) -> tuple[list[float], list[tuple[
        float, float, str, bool]]]:
    """x of each series, with a gap between groups; groups as (x0, x1, name, emulated)."""
    xs: list[float] = []
    groups: list[tuple[float, float, str, bool]] = []
    x = 0.0
    prev: tuple[str, bool] | None = None
    for s in series:
        key = (run.host_of(s.label), s.emulated)
        if prev is not None and key != prev:
            x += 0.8
        if prev is None or key != prev:
            groups.append((x, x, key[0] if run.multi_host else "", key[1]))
        g = groups[-1]
        groups[-1] = (g[0], x, g[2], g[3])
        xs.append(x)
        x += 1.0
        prev = key
    return xs, groups


def scale_for(values: Sequence[float]) -> str:
    pos = [v for v in values if v > 0]
    if not pos or len(pos) < len(values) or max(pos) / min(pos) <= LOG_SPREAD:
        return "linear"
    return "log"


def log_axis(ax: Any, axis: str = "y") -> None:
    """A log axis labelled in plain numbers (not 6x10^2); minor labels only within a decade."""
    a = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    a.set_major_formatter(plain)
    lo, hi = (ax.get_ylim() if axis == "y" else ax.get_xlim())
    a.set_minor_formatter(plain if lo > 0 and hi / lo < 10 else NullFormatter())


def tick_label(run: RunData, s: Series) -> str:
    n = len(s.values)
    return f"{run.env_of(s.label)}\nn={n}" + ("" if n >= MIN_BOX else " (no box)")


def draw_distribution(ax: Any, run: RunData, series: Sequence[Series], scale: str,
                      ylabel: str) -> None:
    """Each round as a point; a box (quartiles, median) where n >= MIN_BOX, else a median
    bar; emulated series hatched, after a dashed line."""
    xs, groups = positions(run, series)
    rng = np.random.default_rng(7)  # fixed: the same journal draws the same figure
    for x, s in zip(xs, series, strict=True):
        vals = list(s.values)
        if len(vals) >= MIN_BOX:
            art = ax.boxplot([vals], positions=[x], widths=0.6, patch_artist=True,
                             showfliers=False, manage_ticks=False,
                             medianprops={"color": "black", "linewidth": 1.5})
            for patch in art["boxes"]:
                patch.set_facecolor(s.colour)
                patch.set_alpha(0.6)
                if s.emulated:
                    patch.set_hatch(EMULATED_HATCH)
        elif vals:
            ax.hlines(float(np.median(vals)), x - 0.3, x + 0.3, colors="black", linewidth=2,
                      zorder=4)
        jitter = rng.uniform(-0.16, 0.16, size=len(vals)) if len(vals) > 1 else [0.0]
        ax.scatter([x + j for j in jitter], vals, s=14, color=s.colour, edgecolors="black",
                   linewidths=0.4, zorder=5, marker="s" if s.emulated else "o")
    if series and max(len(s.values) for s in series) < MIN_BOX:
        ax.text(0.99, 0.02, f"n < {MIN_BOX} everywhere: too few samples for a box; "
                "points are the rounds, bars the medians", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=7, color="dimgray")
    ax.set_xticks(xs, [tick_label(run, s) for s in series], rotation=35, ha="right",
                  fontsize=7)
    ax.set_xlim(min(xs, default=0) - 0.7, max(xs, default=0) + 0.7)
    ax.margins(y=0.12)  # room for the group names at the top
    if scale == "log":
        log_axis(ax)
    ax.set_ylabel(ylabel + (", log scale" if scale == "log" else ""), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    for x0, x1, name, emulated in groups:
        if emulated:
            ax.axvline(x0 - 0.9, color="grey", linestyle="--", linewidth=1)
        text = " · ".join(t for t in (name, "emulated (TCG)" if emulated else "") if t)
        if text:
            ax.text((x0 + x1) / 2, 0.99, text, transform=ax.get_xaxis_transform(),
                    ha="center", va="top", fontsize=7, color="dimgray")


def legend_emulated(fig: Any, series: Sequence[Series]) -> None:
    if any(s.emulated for s in series):
        fig.legend(handles=[Patch(facecolor="white", edgecolor="black", hatch=EMULATED_HATCH,
                                  label="emulated (TCG): not comparable with hardware")],
                   loc="lower right", fontsize=7, frameon=False)


def save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    plt.close(fig)


def caption_for(run: RunData, bench: str, metrics: Sequence[str], unit: str, scale: str,
                series: Sequence[Series]) -> str:
    desc = envinfo.bench_description(bench)
    what = ", ".join(nice_metric(m) for m in metrics)
    dirs = {direction_text(run.direction(bench, m)) for m in metrics}
    ns = [len(s.values) for s in series]
    parts = [f"Measured: {what} ({unit or 'count'}; {', '.join(sorted(dirs))})"
             + (f", by {desc}" if desc else "") + ".",
             "Each point is one round; n under each name."]
    if ns and max(ns) < MIN_BOX:
        parts.append(f"Too few samples for a box (at most {max(ns)} per environment, a box "
                     f"needs {MIN_BOX}): the points are all there is, the bar is the median.")
    else:
        parts.append(f"Box: quartiles and median where n ≥ {MIN_BOX}; otherwise a bar marks "
                     "the median.")
    parts.append(f"{'Log' if scale == 'log' else 'Linear'} scale on every panel.")
    if any(s.emulated for s in series):
        parts.append("Hatched, right of the dashed line: emulated (TCG), not comparable with "
                     "hardware.")
    if run.multi_host:
        parts.append("Grouped by host.")
    return " ".join(parts)


def bench_figures(run: RunData, outdir: Path, bench: str) -> list[Figure]:
    shown = envinfo.presentation_of(bench)  # declared by the benchmark
    title, paper, wanted = shown.title, shown.paper_figure, shown.figure_metrics
    have = {c.metric for c in run.cells if c.bench == bench}
    metrics = [m for m in wanted if m in have]
    if not metrics:
        head = run.headline(bench)
        metrics = [head] if head else []
    panels = [(m, pk) for m in metrics for pk in sorted(
        {c.params for c in run.cells if c.bench == bench and c.metric == m}, key=_params_sort)]
    if not panels:
        return []
    splits: list[tuple[str, list[tuple[str, stats.ParamsKey]]]] = [("", panels)]
    if len(panels) > MAX_PANELS and all(dict(pk).get(SPLIT_KEY) for _, pk in panels):
        values = list(dict.fromkeys(dict(pk)[SPLIT_KEY] for _, pk in panels))
        splits = [(v, [(m, pk) for m, pk in panels if dict(pk)[SPLIT_KEY] == v])
                  for v in values]
    out = []
    for split, group in splits:
        all_series = [series_for(run, run.cells_for(bench, m, pk)) for m, pk in group]
        scale = scale_for([v for ss in all_series for s in ss for v in s.values])
        # Two columns at most, so that a figure stays readable at the page's width.
        ncols = min(len(group), 2)
        nrows = math.ceil(len(group) / ncols)
        width = max(6.0, ncols * (0.5 * max(len(ss) for ss in all_series) + 1.8))
        fig, axes = plt.subplots(nrows, ncols, figsize=(min(width, 13.0), 4.2 * nrows),
                                 squeeze=False)
        for ax in axes.flat[len(group):]:
            ax.set_visible(False)
        for ax, (metric, pk), ss in zip(axes.flat, group, all_series, strict=False):
            unit = next((c.unit for c in run.cells_for(bench, metric, pk)), "")
            draw_distribution(ax, run, ss, scale, f"{nice_metric(metric)} ({unit or 'count'})")
            rest = tuple((k, v) for k, v in pk if k != SPLIT_KEY or not split)
            ax.set_title(nice_metric(metric) + (f" ({stats.params_text(rest)})" if rest
                                                 else ""), fontsize=9)
        flat = [s for ss in all_series for s in ss]
        legend_emulated(fig, flat)
        full_title = title + (f", {split}" if split else "")
        fig.suptitle(full_title, fontsize=11)
        name = bench + (f"_{re.sub(r'[^A-Za-z0-9_-]', '_', split)}" if split else "")
        path = outdir / f"{name}.png"
        save(fig, path)
        unit = next((c.unit for c in run.cells_for(bench, group[0][0])), "")
        out.append(Figure(name, full_title, paper, path,
                          caption_for(run, bench, list(dict.fromkeys(m for m, _ in group)),
                                      unit, scale, flat)))
    return out
