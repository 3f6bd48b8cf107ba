"""Figures of the startup phases, the density ramp and the burst, drawn only when the run
has their data."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from sandbench import results
from sandbench.raw_records import BurstStarts, RampStep, read_ramp
from sandbench.report.figures import (
    Figure,
    Series,
    draw_distribution,
    legend_emulated,
    log_axis,
    save,
    scale_for,
)
from sandbench.report.model import RunData
from sandbench.results import HostSample, SchemaError

PHASE_PREFIX = "phase_"
PHASE_COLOURS = ("#bdbdbd", "#6baed6", "#fd8d3c", "#74c476", "#9e9ac8", "#fdd0a2")


def phases_figure(run: RunData, outdir: Path) -> Figure | None:
    phases = list(dict.fromkeys(c.metric for c in run.cells
                                if c.bench == "startup" and c.metric.startswith(PHASE_PREFIX)))
    if not phases:
        return None
    labels = [lab for lab in run.env_order
              if any(c.env == lab and c.bench == "startup" and c.metric in phases
                     for c in run.cells)]
    labels.sort(key=lambda lab: (run.hosts.index(run.host_of(lab)), run.emulated(lab),
                                 run.env_rank(lab)))
    med = {(c.env, c.metric): c.median for c in run.cells if c.bench == "startup"}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(labels) + 3), 4.4))
    xs = np.arange(len(labels), dtype=float)
    bottom = np.zeros(len(labels))
    for i, ph in enumerate(phases):
        h = np.array([med.get((lab, ph), 0.0) for lab in labels])
        bars = ax.bar(xs, h, bottom=bottom, color=PHASE_COLOURS[i % len(PHASE_COLOURS)],
                      edgecolor="black", linewidth=0.4, label=ph[len(PHASE_PREFIX):])
        for bar, lab in zip(bars, labels, strict=True):
            if run.emulated(lab):
                bar.set_hatch("//")
        bottom += h
    totals = [med.get((lab, "startup_time")) for lab in labels]
    if any(t is not None for t in totals):
        ax.scatter([x for x, t in zip(xs, totals, strict=True) if t is not None],
                   [t for t in totals if t is not None], marker="D", color="black", s=18,
                   zorder=5, label="startup_time (median)")
    ax.set_xticks(xs, [lab for lab in labels], rotation=35, ha="right", fontsize=7)
    for tick, lab in zip(ax.get_xticklabels(), labels, strict=True):
        tick.set_color(run.colour(lab))
    ax.set_ylabel("median time (s)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    title = "Startup phases"
    ax.set_title(title)
    path = outdir / "startup_phases.png"
    save(fig, path)
    return Figure("startup_phases", title, "", path,
                  "Measured: the median of each startup phase (s; lower is better), stacked; "
                  "the phases add up to startup_time (diamond: its own median). Linear scale. "
                  "Hatched: emulated (TCG).", section="phases")


def _load_json(run: RunData, sample: HostSample) -> tuple[Any, str] | None:
    """The raw output a sample names, parsed, and its path for messages; None where there is
    none to read (not kept, outside the directory, missing or not JSON)."""
    if not sample.raw:
        return None
    path = results.raw_file(run.source_dir(sample), sample.raw)
    if path is None:
        return None
    try:
        return json.loads(path.read_text()), str(path)
    except (OSError, ValueError):
        return None


def _ramps(run: RunData) -> dict[str, list[RampStep]]:
    """Per env label, the ramp of its median max_sandboxes round. A ramp.json of another
    shape is left out of the figures with a warning that names it."""
    by_label: dict[str, list[HostSample]] = {}
    for s in run.samples:
        if s.bench == "density" and s.metric == "max_sandboxes":
            by_label.setdefault(s.env, []).append(s)
    out = {}
    for lab, ss in by_label.items():
        ss.sort(key=lambda s: float(s.value))
        loaded = _load_json(run, ss[(len(ss) - 1) // 2])
        if loaded is None:
            continue
        try:
            out[lab] = read_ramp(*loaded)
        except SchemaError as e:
            warnings.warn(f"{e}; the density figures leave {lab} out", stacklevel=2)
    return out


def _per_sandbox_memory(ramp: list[RampStep]) -> tuple[list[float], list[float]]:
    """(n, MiB per sandbox) from MemAvailable: what n sandboxes took since the first point."""
    n0, m0 = ramp[0].n, ramp[0].mem_available_mib
    xs, ys = [], []
    for p in ramp[1:]:
        if p.n > n0:
            xs.append(float(p.n))
            ys.append((m0 - p.mem_available_mib) / (p.n - n0))
    return xs, ys


def density_figures(run: RunData, outdir: Path) -> list[Figure]:
    ramps = _ramps(run)
    if not ramps:
        return []
    out = []
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    vals = []
    for lab, ramp in ramps.items():
        pts = [(float(p.n), p.start_time_s) for p in ramp]
        vals += [y for _, y in pts]
        ax.plot([x for x, _ in pts], [y for _, y in pts], color=run.colour(lab), label=lab,
                linestyle="--" if run.emulated(lab) else "-", marker=".")
    scale = scale_for(vals)
    if scale == "log":
        log_axis(ax)
    ax.set_xlabel("sandboxes already running (N)")
    ax.set_ylabel("start time of the N-th sandbox (s)" + (", log" if scale == "log" else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    title = "Start time as sandboxes accumulate"
    ax.set_title(title)
    path = outdir / "density_start.png"
    save(fig, path)
    out.append(Figure("density_start", title, "", path,
                      "Measured: the start time (s, lower is better) of each new sandbox while "
                      "the earlier ones keep running, one line per environment (its median "
                      f"ramp by max_sandboxes). {scale.capitalize()} scale. Dashed: emulated.",
                      section="density"))
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    vals = []
    for lab, ramp in ramps.items():
        xs, ys = _per_sandbox_memory(ramp)
        vals += ys
        ax.plot(xs, ys, color=run.colour(lab), label=f"{lab} (MemAvailable)", marker=".",
                linestyle="--" if run.emulated(lab) else "-")
        # density records the mean private dirty of the last k sandboxes: already per sandbox
        pd = [(float(p.n), p.private_dirty_mib) for p in ramp
              if p.private_dirty_mib is not None and p.n > 0]
        if pd:
            ax.plot([x for x, _ in pd], [y for _, y in pd], color=run.colour(lab),
                    linestyle=":", label=f"{lab} (private dirty)")
    scale = scale_for([v for v in vals if v > 0] or [1.0])
    if scale == "log":
        log_axis(ax)
    ax.set_xlabel("sandboxes running (N)")
    ax.set_ylabel("memory per sandbox (MiB)" + (", log" if scale == "log" else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    title = "Memory per sandbox as sandboxes accumulate"
    ax.set_title(title)
    path = outdir / "density_memory.png"
    save(fig, path)
    out.append(Figure("density_memory", title, "", path,
                      "Measured: host memory per sandbox (MiB, lower is better) at N running "
                      "sandboxes: the drop in MemAvailable since the ramp's first point divided "
                      "by the sandboxes added (solid); dotted where the ramp recorded private "
                      f"dirty memory, summed over sandboxes / N. {scale.capitalize()} scale.",
                      section="density"))
    return out


def burst_figure(run: RunData, outdir: Path) -> Figure | None:
    starts: dict[str, list[float]] = {}
    k_of: dict[str, str] = {}
    seen_raw: set[tuple[str, str]] = set()
    for s in run.samples:
        if s.bench != "burst":
            continue
        lab = s.env
        k_of.setdefault(lab, str(s.params.get("k", "?")))
        if not s.raw or (lab, s.raw) in seen_raw:
            continue
        seen_raw.add((lab, s.raw))
        loaded = _load_json(run, s)
        if loaded is None:
            continue
        try:
            starts.setdefault(lab, []).extend(BurstStarts.from_json(*loaded).start_times_s)
        except SchemaError as e:
            warnings.warn(f"{e}; the burst figure leaves that round out", stacklevel=2)
    if not starts:  # no per-sandbox times stored: the rounds' p50 are what there is
        for c in run.cells:
            if c.bench == "burst" and c.metric == "burst_start_time_p50":
                starts[c.env] = list(c.values)
    if not starts:
        return None
    labels = sorted(starts, key=lambda lab: (run.hosts.index(run.host_of(lab)),
                                             run.emulated(lab), run.env_rank(lab)))
    series = [Series(lab, tuple(starts[lab]), run.emulated(lab), run.colour(lab))
              for lab in labels]
    scale = scale_for([v for s in series for v in s.values])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(series) + 3), 4.4))
    draw_distribution(ax, run, series, scale, "start time (s)")
    ks = sorted(set(k_of.values()))
    title = f"Burst: K={', '.join(ks)} sandboxes started at once"
    ax.set_title(title, fontsize=10)
    legend_emulated(fig, series)
    path = outdir / "burst.png"
    save(fig, path)
    return Figure("burst", title, "", path,
                  "Measured: the start time (s, lower is better) of every sandbox of a burst "
                  "started at once, from its launch command to its probe's accept (startup's "
                  "create, start and network phases; the prepare before it is "
                  "burst_prepare_time) (all rounds; n under each name counts sandboxes). Box: "
                  f"quartiles and median. {scale.capitalize()} scale. Hatched: emulated.",
                  section="burst")


def extra_figures(run: RunData, outdir: Path) -> list[Figure]:
    made: list[Figure | None] = [phases_figure(run, outdir), *density_figures(run, outdir),
                                 burst_figure(run, outdir)]
    return [f for f in made if f is not None]
