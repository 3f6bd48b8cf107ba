"""The report: figures, report.html, report.md, summary.csv and the scorecard, written into a
results directory from its journal and metadata only."""

from __future__ import annotations

from pathlib import Path

from sandbench.report.figures import Figure, write_figures
from sandbench.report.html import render_html
from sandbench.report.markdown import render_markdown
from sandbench.report.model import RunData, load_run
from sandbench.report.scorecard import (
    CLAIMS_FILE,
    ClaimResult,
    evaluate_claims,
    load_claims,
    scorecard,
)
from sandbench.report.tables import write_summary_csv

__all__ = ["ClaimResult", "Figure", "RunData", "load_run", "scorecard", "write_report"]


def write_report(results_dir: Path, baseline: str = "host") -> Path:
    """Write report.html, report.md, summary.csv and figures/*.png into results_dir and return
    the path of report.html. Reads meta.json and results.jsonl only."""
    run = load_run(results_dir, baseline=baseline)
    figures = write_figures(run, results_dir / "figures")
    rules, claims = load_claims(CLAIMS_FILE)
    scored = evaluate_claims(run.samples, claims, rules)
    write_summary_csv(run, results_dir / "summary.csv")
    (results_dir / "report.md").write_text(render_markdown(run, figures, scored),
                                           encoding="utf-8")
    html = results_dir / "report.html"
    html.write_text(render_html(run, figures, scored), encoding="utf-8")
    return html
