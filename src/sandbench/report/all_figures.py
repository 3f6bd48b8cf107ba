"""Every figure of a report: one per benchmark from figures.py, and the startup phases, the
density ramp and the burst from figures_extra.py (which builds on figures.py, so the two meet
here rather than importing each other), cold start against restore from figures_restore.py."""

from __future__ import annotations

from pathlib import Path

from sandbench.report import envinfo, figures, figures_extra, figures_restore
from sandbench.report.figures import Figure
from sandbench.report.model import RunData


def write_figures(run: RunData, outdir: Path) -> list[Figure]:
    """Every figure the run has data for, benchmarks in the run's order."""
    outdir.mkdir(parents=True, exist_ok=True)
    for old in outdir.glob("*.png"):  # figures/ is the report's own: drop a past report's
        old.unlink()
    made: list[Figure] = []
    for bench in run.bench_order:
        if not envinfo.presentation_of(bench).own_figures:  # figures_extra draws those
            made += figures.bench_figures(run, outdir, bench)
    made += figures_extra.extra_figures(run, outdir)
    restored = figures_restore.restore_figure(run, outdir)
    made += [restored] if restored else []
    return made
