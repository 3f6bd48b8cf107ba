"""report.html: one self-contained file (figures inlined as base64 PNG, no network)."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Sequence
from typing import Any

import jinja2

from sandbench.report import tables
from sandbench.report.figures import Figure
from sandbench.report.model import RunData
from sandbench.report.scorecard import FAILS, HOLDS, ClaimResult

_CSS = {HOLDS: "holds", FAILS: "fails"}


def score_counts(claims: Sequence[ClaimResult]) -> str:
    n = Counter(c.verdict for c in claims)
    return ", ".join(f"{n.get(v, 0)} {v}" for v in (HOLDS, FAILS, "not measured")) + \
        f" of {len(claims)} claims"


def _env() -> jinja2.Environment:
    # autoescape: error texts and facts come from tools and may hold "<".
    return jinja2.Environment(loader=jinja2.PackageLoader("sandbench", "report"),
                              autoescape=True, undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True)


def context(run: RunData, claims: Sequence[ClaimResult]) -> dict[str, Any]:
    meta = run.meta
    return {
        "title": run.directory.name,
        "directory": str(run.directory),
        "profile": meta.get("profile", "?"),
        "created": meta.get("created", "?"),
        "tool_version": meta.get("tool_version", "?"),
        "baseline": run.baseline,
        "baseline_measured": run.baseline_measured,
        "host_rows": tables.host_rows(meta),
        "env_rows": tables.env_rows(run),
        "unavailable": sorted(meta.get("unavailable", {}).items(),
                              key=lambda kv: run.env_rank(kv[0])),
        "warnings": run.warnings,
        "claims": [{"id": c.id, "statement": c.statement, "figure": c.figure,
                    "paper": c.paper, "measured": c.measured, "verdict": c.verdict_text,
                    "css": _CSS.get(c.verdict, "notmeasured")} for c in claims],
        "score_counts": score_counts(claims),
        "summary": tables.summary_rows(run),
        "failures": tables.failure_rows(run),
    }


def render_html(run: RunData, figures: Sequence[Figure], claims: Sequence[ClaimResult]) -> str:
    ctx = context(run, claims)
    ctx["figures"] = [{"name": f.name, "title": f.title, "paper": f.paper,
                       "caption": f.caption,
                       "data": base64.b64encode(f.path.read_bytes()).decode("ascii")}
                      for f in figures]
    return _env().get_template("report.html.j2").render(**ctx)
