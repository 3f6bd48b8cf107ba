"""Cold start against restore: per environment, the startup benchmark's start (when the run
has it) beside the restore benchmarks' restore from a cold and from a warm image, every
round a point, the median a bar; built from the cells only (no raw files)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen

from sandbench import stats  # noqa: E402
from sandbench.report.figures import Figure, log_axis, save, scale_for  # noqa: E402
from sandbench.report.model import RunData  # noqa: E402

#: What is drawn, in order: (benchmark, metric, cache param or "", legend label, colour).
BARS = (
    ("startup", "startup_time", "", "cold start", "#7f7f7f"),
    ("restore", "restore_time", "cold", "restore, cold image", "#1f77b4"),
    ("restore", "restore_time", "warm", "restore, warm image", "#2ca02c"),
    ("restore-nginx", "restore_time", "cold", "restore to nginx's page, cold", "#ff7f0e"),
    ("restore-nginx", "restore_time", "warm", "restore to nginx's page, warm", "#d62728"),
)


def _cells(run: RunData, bench: str, metric: str, cache: str) -> dict[str, stats.CellStats]:
    out: dict[str, stats.CellStats] = {}
    for c in run.cells:
        if c.bench == bench and c.metric == metric and dict(c.params).get("cache", "") == cache:
            out[c.env] = c
    return out


def restore_figure(run: RunData, outdir: Path) -> Figure | None:
    found = [(label, colour, _cells(run, b, m, cache)) for b, m, cache, label, colour in BARS]
    restored = {env for label, _c, cells in found if "restore" in label for env in cells}
    if not restored:
        return None
    envs = sorted(restored, key=lambda e: (run.emulated(e), run.env_rank(e)))
    shown = [(label, colour, cells) for label, colour, cells in found
             if any(e in cells for e in envs)]
    width = 0.8 / len(shown)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(envs) + 3), 4.4))
    values: list[float] = []
    for i, (label, colour, cells) in enumerate(shown):
        for j, env in enumerate(envs):
            c = cells.get(env)
            if c is None:
                continue
            x = j - 0.4 + width * (i + 0.5)
            ax.bar(x, c.median, width * 0.9, color=colour, alpha=0.35,
                   hatch="//" if run.emulated(env) else None,
                   label=label if j == next(k for k, e in enumerate(envs) if e in cells)
                   else None)
            ax.scatter([x] * len(c.values), c.values, s=10, color=colour, zorder=3)
            values += list(c.values)
    ax.set_xticks(range(len(envs)))
    ax.set_xticklabels(envs, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("seconds until the workload answers")
    scale = scale_for(values)
    if scale == "log":
        log_axis(ax)
    ax.legend(fontsize=7)
    title = "Cold start against restore from a checkpoint"
    ax.set_title(title, fontsize=10)
    path = outdir / "restore_vs_start.png"
    save(fig, path)
    emulated = any(run.emulated(e) for e in envs)
    return Figure(
        "restore_vs_start", title, "", path,
        "Measured: per environment, startup's start (prepare until the probe connects) beside "
        "the restore benchmarks' time from the restore call until the workload answers the "
        "host (the probe; nginx's first correct page), from an image dropped from the page "
        "cache (cold) and from the same image cached (warm). Points: rounds; bars: medians. "
        f"{scale.capitalize()} scale."
        + (" Hatched: emulated (TCG), not comparable with hardware." if emulated else ""))
