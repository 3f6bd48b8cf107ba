"""report.html: one self-contained file (figures inlined as base64 PNG, no network).

The first screen answers: the cost of each environment relative to the baseline, the
scorecard's count and the run's verdict on its own quality. Facts and warnings come last."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2

from sandbench.report import scorecard as sc
from sandbench.report import summary, tables
from sandbench.report.figures import Figure
from sandbench.report.model import RunData

# Verdicts in the order people read them; any other verdict the scorecard gives follows.
VERDICT_ORDER = (sc.HOLDS, sc.FAILS, getattr(sc, "INCONCLUSIVE", "inconclusive"),
                 sc.NOT_MEASURED)
_CSS = {sc.HOLDS: "holds", sc.FAILS: "fails",
        getattr(sc, "INCONCLUSIVE", "inconclusive"): "inconclusive"}


def score_counts(claims: Sequence[sc.ClaimResult]) -> str:
    """"4 holds, 13 does not hold, ... of 24 claims", counting verdicts by their value."""
    n = Counter(c.verdict for c in claims)
    order = [v for v in VERDICT_ORDER if v in n or v in (sc.HOLDS, sc.FAILS, sc.NOT_MEASURED)]
    order += sorted(v for v in n if v not in order)
    return ", ".join(f"{n.get(v, 0)} {v}" for v in order) + f" of {len(claims)} claims"


def verdict_text(c: sc.ClaimResult) -> str:
    return str(getattr(c, "verdict_text", c.verdict))


def _reason(c: sc.ClaimResult) -> str:
    """The scorecard's one-line reason, unless the verdict text already says it."""
    reason = str(getattr(c, "reason", "") or "")
    return "" if reason and reason in verdict_text(c) else reason


def claim_rows(claims: Sequence[sc.ClaimResult]) -> list[dict[str, str]]:
    return [{"id": c.id, "statement": c.statement, "figure": c.figure, "paper": c.paper,
             "measured": c.measured, "verdict": verdict_text(c),
             "reason": _reason(c), "coverage": str(getattr(c, "coverage", "") or ""),
             "css": _CSS.get(c.verdict, "notmeasured")} for c in claims]


def _env() -> jinja2.Environment:
    # autoescape: error texts and facts come from tools and may hold "<".
    return jinja2.Environment(loader=jinja2.PackageLoader("sandbench", "report"),
                              autoescape=True, undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True)


def context(run: RunData, scored: Mapping[str, Sequence[sc.ClaimResult]]) -> dict[str, Any]:
    meta = run.meta
    word, quality = summary.quality(run)
    hosts, host_facts = summary.host_fact_rows(run)
    unavailable = [(s.host, env, reason) for s in run.sources
                   for env, reason in sorted((s.meta.get("unavailable") or {}).items(),
                                             key=lambda kv: run.env_rank(kv[0]))]
    return {
        "title": run.directory.name,
        "directories": [str(s.directory) for s in run.sources],
        "multi_host": run.multi_host,
        "hosts": hosts,
        "profile": meta.get("profile", "?"),
        "created": meta.get("created", "?"),
        "tool_version": meta.get("tool_version", "?"),
        "baseline": run.baseline,
        "baseline_measured": run.baseline_measured,
        "heat": summary.heatmap(run),
        "quality_word": word,
        "quality": quality,
        "quality_details": summary.quality_details(run),
        "differing": summary.differing_facts(run) if run.multi_host else [],
        "host_facts": host_facts,
        "env_rows": tables.env_rows(run),
        "requested": tables.requested_resources(run),
        "unavailable": unavailable,
        "warnings": summary.grouped_warnings(run),
        "scorecards": [{"host": h, "counts": score_counts(cs), "claims": claim_rows(cs)}
                       for h, cs in scored.items()],
        "summary": tables.summary_rows(run),
        "failures": tables.failure_rows(run),
        "not_applicable": tables.not_applicable_rows(run),
        "density_rows": tables.density_rows(run),
        "published": tables.PUBLISHED,
        "has_density": any(c.bench == "density" for c in run.cells),
        "colours": {lab: run.colour(lab) for lab in run.env_order},
    }


def render_html(run: RunData, figures: Sequence[Figure],
                scored: Mapping[str, Sequence[sc.ClaimResult]]) -> str:
    ctx = context(run, scored)
    ctx["figures"] = [{"name": f.name, "title": f.title, "paper": f.paper,
                       "caption": f.caption, "section": f.section,
                       "data": base64.b64encode(f.path.read_bytes()).decode("ascii")}
                      for f in figures]
    return _env().get_template("report.html.j2").render(**ctx)
