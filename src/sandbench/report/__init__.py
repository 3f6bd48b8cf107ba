"""The report: figures, report.html, report.md, summary.csv and the scorecard, written from
results directories' journals and metadata only. Several directories (machines, or runs of
one machine) merge into one report with the host as a dimension."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sandbench.report.all_figures import write_figures
from sandbench.report.figures import Figure
from sandbench.report.html import render_html
from sandbench.report.markdown import render_markdown
from sandbench.report.model import RunData, load_run, load_runs
from sandbench.report.scorecard import (
    CLAIMS_FILE,
    ClaimResult,
    evaluate_claims,
    load_claims,
    scorecard,
)
from sandbench.report.tables import write_summary_csv

__all__ = ["ClaimResult", "Figure", "RunData", "load_run", "load_runs", "scorecard",
           "write_report"]


def write_report(results_dir: Path | Sequence[Path], baseline: str = "host",
                 out: Path | None = None, force: bool = False) -> Path:
    """Write report.html, report.md, summary.csv and figures/*.png and return the path of
    report.html. One directory: into it (or `out`). Several: merged into `out` (required),
    refused with UsageError when their benchmark parameters differ unless `force`."""
    dirs = [Path(results_dir)] if isinstance(results_dir, str | Path) else list(results_dir)
    if len(dirs) > 1 and out is None:
        raise ValueError("merging several results directories needs an output directory")
    run = load_runs(dirs, baseline=baseline, out=out, force=force)
    target = run.directory
    target.mkdir(parents=True, exist_ok=True)
    figures = write_figures(run, target / "figures")
    rules, claims = load_claims(CLAIMS_FILE)
    # each host's own meta, so likely causes (a host that is itself a VM) and TCG reach the report
    host_meta = {src.host: src.meta for src in run.sources}
    scored = {h: evaluate_claims(ss, claims, rules, host_meta.get(h, run.meta))
              for h, ss in run.host_samples.items()}
    write_summary_csv(run, target / "summary.csv")
    (target / "report.md").write_text(render_markdown(run, figures, scored), encoding="utf-8")
    html = target / "report.html"
    html.write_text(render_html(run, figures, scored), encoding="utf-8")
    return html
