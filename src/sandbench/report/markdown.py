"""report.md: the same content as report.html, figures linked from figures/."""

from __future__ import annotations

from collections.abc import Sequence

from sandbench.report import tables
from sandbench.report.figures import Figure
from sandbench.report.html import score_counts
from sandbench.report.model import RunData
from sandbench.report.scorecard import ClaimResult


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return out + [""]


def render_markdown(run: RunData, figures: Sequence[Figure],
                    claims: Sequence[ClaimResult]) -> str:
    meta = run.meta
    lines = [
        "# sandbench report", "",
        f"Run `{run.directory}`, profile **{meta.get('profile', '?')}**, created "
        f"{meta.get('created', '?')}, sandbench {meta.get('tool_version', '?')}. Baseline for "
        f"ratios: **{run.baseline}**"
        + ("" if run.baseline_measured else " (not measured in this run: ratios are n/a)") + ".",
        "", "## Machine", ""]
    lines += _table(("fact", "value"), tables.host_rows(meta))
    lines += ["## Environments", ""]
    lines += _table(("env", "facts"), [(r["env"], r["facts"]) for r in tables.env_rows(run)])
    unavailable = meta.get("unavailable", {})
    if unavailable:
        lines += ["### Unavailable environments", ""]
        lines += _table(("env", "reason"), sorted(unavailable.items(),
                                                  key=lambda kv: run.env_rank(kv[0])))
    lines += ["## Warnings", ""]
    if run.warnings:
        for w in run.warnings:
            where = f" ({', '.join(w.cells)})" if w.cells else ""
            lines.append(f"- **{w.kind}** {w.env}: {w.message}{where}. *{w.advice}.*")
        lines.append("")
    else:
        lines += ["None.", ""]
    lines += ["## Reproduction scorecard", "", score_counts(claims) + ". Rules in "
              "`claims.toml`: order claims need Mann-Whitney p < 0.01 and > 10 %; ratio claims "
              "hold when the bootstrap interval overlaps [half, double] of the paper's.", ""]
    lines += _table(("id", "claim", "paper figure", "paper", "measured", "verdict"),
                    [(c.id, c.statement, c.figure, c.paper, c.measured, f"**{c.verdict_text}**")
                     for c in claims])
    lines += ["## Figures", ""]
    for f in figures:
        lines += [f"![{f.title}](figures/{f.path.name})", "",
                  f"*{f.title}* (paper: {f.paper}). {f.caption}", ""]
    if not figures:
        lines += ["No figures: the run has no samples.", ""]
    lines += ["## Summary", "", f"Median with its 95 % bootstrap interval; ratio = median / "
              f"{run.baseline}'s median. Full precision in `summary.csv`.", ""]
    lines += _table(("env", "bench", "metric", "params", "unit", "n", "median", "95 % CI", "CoV",
                     f"ratio to {run.baseline}", "flags"),
                    [(r["env"], r["bench"], r["metric"], r["params"], r["unit"], r["n"],
                      r["median"], r["ci"], r["cov"], r["ratio"], r["flags"])
                     for r in tables.summary_rows(run)])
    lines += ["## Failures", ""]
    fails = tables.failure_rows(run)
    if fails:
        lines += _table(("env", "bench", "round", "params", "error"),
                        [(f["env"], f["bench"], f["round"], f["params"], f["error"])
                         for f in fails])
    else:
        lines += ["None.", ""]
    return "\n".join(lines)
