"""One PNG per paper figure, drawn only from the stored results (never from live state)."""

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
from matplotlib.patches import Patch  # noqa: E402

from sandbench import stats  # noqa: E402
from sandbench.report.model import RunData, env_colour  # noqa: E402

DPI = 100
LOG_SPREAD = 30.0  # above this max/min ratio a linear axis hides the small envs
DISK_PATTERNS = ("seqread", "seqwrite", "randread", "randwrite")
EMULATED_HATCH = "//"


@dataclass(frozen=True)
class Figure:
    name: str  # file stem; the PNG is figures/<name>.png
    title: str
    paper: str  # which figure of the paper this reproduces
    path: Path
    caption: str


def _bs_bytes(bs: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)i?b?", bs.strip().lower())
    if not m:
        return math.inf
    return float(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2)]


def _ylabel(metric: str, unit: str) -> str:
    return f"{metric.replace('_', ' ')} ({unit or 'count'})"


def _legend_emulated(ax: Any, cells: Sequence[stats.CellStats]) -> None:
    if any("emulated" in c.flags for c in cells):
        ax.legend(handles=[Patch(facecolor="white", edgecolor="black", hatch=EMULATED_HATCH,
                                 label="emulated (not comparable with hardware)")],
                  loc="upper left", fontsize=8)  # "best" costs seconds per figure


def _maybe_log(ax: Any, lows: Sequence[float], highs: Sequence[float],
               log: bool | None) -> bool:
    """log None: log scale when the values span more than LOG_SPREAD; True/False force it.
    A log axis needs positive values, so it is skipped where there are none."""
    pos = [v for v in lows if v > 0]
    if not pos or log is False:
        return False
    if log or max(highs) / min(pos) > LOG_SPREAD:
        ax.set_yscale("log")
        return True
    return False


def _bars(ax: Any, cells: Sequence[stats.CellStats], log: bool | None = None) -> bool:
    """Median bars with 95 % CI whiskers, one per env in run order."""
    xs = list(range(len(cells)))
    meds = [c.median for c in cells]
    err_lo = [max(c.median - c.ci_low, 0.0) for c in cells]
    err_hi = [max(c.ci_high - c.median, 0.0) for c in cells]
    bars = ax.bar(xs, meds, color=[env_colour(c.env) for c in cells], edgecolor="black",
                  linewidth=0.5, yerr=[err_lo, err_hi], capsize=3)
    for bar, c in zip(bars, cells, strict=True):
        if "emulated" in c.flags:
            bar.set_hatch(EMULATED_HATCH)
    ax.set_xticks(xs, [c.env for c in cells], rotation=35, ha="right", fontsize=8)
    used_log = _maybe_log(ax, [c.ci_low for c in cells], [c.ci_high for c in cells], log)
    ax.set_ylabel(_ylabel(cells[0].metric, cells[0].unit) + (", log scale" if used_log else ""))
    ax.grid(axis="y", alpha=0.3)
    _legend_emulated(ax, cells)
    return used_log


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    plt.close(fig)


def _params_groups(run: RunData, bench: str, metric: str) -> list[stats.ParamsKey]:
    return sorted({c.params for c in run.cells if c.bench == bench and c.metric == metric})


def _bar_figure(run: RunData, outdir: Path, name: str, title: str, paper: str, bench: str,
                metrics: Sequence[str], log: bool | None = None) -> Figure | None:
    """One panel per metric (and per params where the metric has several)."""
    panels: list[tuple[str, stats.ParamsKey]] = [
        (m, p) for m in metrics for p in _params_groups(run, bench, m)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(max(5.5, 5.0 * len(panels)), 4.2),
                             squeeze=False)
    logs = []
    for ax, (metric, pk) in zip(axes[0], panels, strict=True):
        cells = run.cells_for(bench, metric, pk)
        logs.append(_bars(ax, cells, log))
        ax.set_title(metric + (f" ({stats.params_text(pk)})" if pk else ""), fontsize=10)
    fig.suptitle(title)
    path = outdir / f"{name}.png"
    _save(fig, path)
    caption = "Bars: median; whiskers: 95 % bootstrap interval of the median."
    if any(logs):
        caption += " Log scale" + (" where the envs span more than 30x." if log is None else ".")
    return Figure(name, title, paper, path, caption)


def startup_figure(run: RunData, outdir: Path) -> Figure | None:
    cells = run.cells_for("startup", "startup_time", ())
    if not cells:
        return None
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(cells) + 2), 4.5))
    box = ax.boxplot([list(c.values) for c in cells], patch_artist=True, showmeans=False,
                     medianprops={"color": "black"})
    for patch, c in zip(box["boxes"], cells, strict=True):
        patch.set_facecolor(env_colour(c.env))
        if "emulated" in c.flags:
            patch.set_hatch(EMULATED_HATCH)
    ax.set_xticks(range(1, len(cells) + 1), [c.env for c in cells], rotation=35, ha="right",
                  fontsize=8)
    used_log = _maybe_log(ax, [c.min for c in cells], [c.max for c in cells], None)
    ax.set_ylabel(_ylabel("startup_time", cells[0].unit) + (", log scale" if used_log else ""))
    ax.grid(axis="y", alpha=0.3)
    _legend_emulated(ax, cells)
    title = "Startup time distribution"
    ax.set_title(title)
    path = outdir / "startup.png"
    _save(fig, path)
    return Figure("startup", title, "startup time (box plot)", path,
                  "Box: quartiles; line: median; whiskers: 1.5 IQR; points: outliers (kept).")


def _percentiles(sample: dict[str, Any]) -> dict[float, float] | None:
    pct = (sample.get("extra") or {}).get("percentiles")
    if not isinstance(pct, dict):
        return None
    try:
        return {float(k): float(v) for k, v in pct.items()}
    except (TypeError, ValueError):
        return None


def median_round_sample(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The sample whose value is the cell's median (lower median for an even count), so that
    a drawn distribution is one real round rather than a blend of rounds."""
    ordered = sorted(samples, key=lambda s: float(s["value"]))
    return ordered[(len(ordered) - 1) // 2]


def _nearest(pct: dict[float, float], want: float) -> float:
    return pct[min(pct, key=lambda k: abs(k - want))]


def _disk_box(run: RunData, c: stats.CellStats) -> dict[str, Any]:
    pct = _percentiles(median_round_sample(run.samples_for(c.env, c.bench, c.metric, c.params)))
    if pct:
        return {"med": _nearest(pct, 50), "q1": _nearest(pct, 25), "q3": _nearest(pct, 75),
                "whislo": _nearest(pct, 5), "whishi": _nearest(pct, 95), "fliers": [],
                "label": c.env}
    # No per-I/O percentiles stored: fall back to the spread of round means.
    return {"med": c.median, "q1": c.q1, "q3": c.q3, "whislo": c.min, "whishi": c.max,
            "fliers": [], "label": c.env}


def disk_figure(run: RunData, outdir: Path, pattern: str) -> Figure | None:
    cells = [c for c in run.cells_for("disk", "latency")
             if dict(c.params).get("pattern") == pattern]
    if not cells:
        return None
    sizes = sorted({dict(c.params).get("bs", "") for c in cells}, key=_bs_bytes)
    fig, axes = plt.subplots(1, len(sizes), figsize=(max(6.0, 4.2 * len(sizes)), 4.5),
                             squeeze=False)
    for ax, bs in zip(axes[0], sizes, strict=True):
        here = [c for c in cells if dict(c.params).get("bs", "") == bs]
        boxes = [_disk_box(run, c) for c in here]
        art = ax.bxp(boxes, patch_artist=True, showfliers=False,
                     medianprops={"color": "black"})
        for patch, c in zip(art["boxes"], here, strict=True):
            patch.set_facecolor(env_colour(c.env))
            if "emulated" in c.flags:
                patch.set_hatch(EMULATED_HATCH)
        ax.set_xticks(range(1, len(here) + 1), [c.env for c in here], rotation=40,
                      ha="right", fontsize=7)
        used_log = _maybe_log(ax, [b["whislo"] for b in boxes], [b["whishi"] for b in boxes],
                              None)
        ax.set_ylabel(_ylabel("completion latency", here[0].unit)
                      + (", log scale" if used_log else ""))
        ax.set_title(f"bs={bs}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        if bs == sizes[0]:
            _legend_emulated(ax, cells)
    title = f"Disk I/O latency, {pattern}"
    fig.suptitle(title)
    path = outdir / f"disk_{pattern}.png"
    _save(fig, path)
    return Figure(f"disk_{pattern}", title, f"fio {pattern} latency (box plots)", path,
                  "Per-I/O completion latency of each cell's median round: whiskers p5/p95, "
                  "box p25/p75, line p50.")


def write_figures(run: RunData, outdir: Path) -> list[Figure]:
    """Every figure the run has data for, in the paper's order."""
    outdir.mkdir(parents=True, exist_ok=True)
    for old in outdir.glob("*.png"):  # figures/ is the report's own: drop figures of a past report
        old.unlink()
    made: list[Figure | None] = [
        startup_figure(run, outdir),
        _bar_figure(run, outdir, "memory", "Memory footprint per sandbox", "memory footprint",
                    "memory", ["private_dirty"], log=False),
        _bar_figure(run, outdir, "memory_log", "Memory footprint per sandbox (log scale)",
                    "memory footprint", "memory", ["private_dirty"], log=True),
        _bar_figure(run, outdir, "syscall", "getpid() latency", "system call latency",
                    "syscall", ["getpid_latency"]),
        _bar_figure(run, outdir, "network", "TCP throughput, host to sandbox (iperf3)",
                    "network throughput", "network", ["throughput"]),
    ]
    made += [disk_figure(run, outdir, p) for p in DISK_PATTERNS]
    cpu_metric = "events_per_second" if _params_groups(run, "cpu", "events_per_second") \
        else "events"
    made += [
        _bar_figure(run, outdir, "cpu", "CPU (sysbench primes)", "CPU events", "cpu",
                    [cpu_metric]),
        _bar_figure(run, outdir, "mysql", "MySQL (sysbench OLTP)", "MySQL throughput and "
                    "latency", "mysql", ["tps", "latency_avg"]),
        _bar_figure(run, outdir, "nginx", "Nginx static page (wrk)", "Nginx requests/s",
                    "nginx", ["requests_per_second"]),
    ]
    return [f for f in made if f is not None]
