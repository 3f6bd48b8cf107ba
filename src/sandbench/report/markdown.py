"""report.md: the same order as report.html (answers first, facts last), figures linked from
figures/."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sandbench.report import summary, tables
from sandbench.report.figures import Figure
from sandbench.report.html import claim_rows, score_counts
from sandbench.report.model import RunData
from sandbench.report.scorecard import ClaimResult

_MARK = {"worse": " ▲", "better": " ▼", "same": " ≈"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return out + [""]


def _figures(figs: Sequence[Figure]) -> list[str]:
    lines = []
    for f in figs:
        paper = f" (paper: {f.paper})" if f.paper else ""
        lines += [f"![{f.title}](figures/{f.path.name})", "", f"*{f.title}*{paper}. {f.caption}",
                  ""]
    return lines


def render_markdown(run: RunData, figures: Sequence[Figure],
                    scored: Mapping[str, Sequence[ClaimResult]]) -> str:
    meta = run.meta
    word, quality = summary.quality(run)
    heat = summary.heatmap(run)
    lines = [
        "# sandbench report", "",
        f"Run {', '.join(f'`{s.directory}`' for s in run.sources)}, profile "
        f"**{meta.get('profile', '?')}**, created {meta.get('created', '?')}, sandbench "
        f"{meta.get('tool_version', '?')}. Baseline for ratios: **{run.baseline}**"
        + ("" if run.baseline_measured else " (not measured in this run: ratios are n/a)") + ".",
        ""]
    if run.multi_host:
        lines += [f"Hosts: {', '.join(run.hosts)}; they differ in: "
                  f"{', '.join(summary.differing_facts(run)) or 'nothing recorded'}.", ""]
    lines += [f"## Cost relative to {run.baseline}", "",
              "Median ratio [95 % interval]; ▲ worse, ▼ better than the baseline, ≈ no clear "
              "difference; no mark: direction not recorded.", ""]
    head = ["env", "class", *(f"{c.bench} {c.metric}" for c in heat["columns"])]
    lines += _table(head, [[r["env"] + (f" @ {r['host']}" if run.multi_host else "")
                            + (" (emulated)" if r["emulated"] else ""), r["class"],
                            *(f"{h.text}{_MARK.get(h.verdict, '')} {h.interval}".strip()
                              for h in r["cells"])] for r in heat["rows"]])
    for host, cs in scored.items():
        lines += [f"**Scorecard{f' on {host}' if run.multi_host else ''}:** "
                  f"{score_counts(cs)}.", ""]
    lines += [f"**Run quality: {word}.** {quality} Details under *Run quality* below.", ""]
    lines += ["## Reproduction scorecard", "", "Rules in `claims.toml`: an order claim holds "
              "at Mann-Whitney p < 0.01 with a difference above 10 % and fails only on the "
              "opposite, significant; a ratio claim holds when its estimate and whole 95 % "
              "interval lie within [half, double] of the paper's and fails when the interval "
              "lies wholly outside; fewer than 5 rounds a side, or anything between, is "
              "inconclusive; emulated environments decide nothing.", ""]
    for host, cs in scored.items():
        if run.multi_host:
            lines += [f"### {host}: {score_counts(cs)}", ""]
        lines += _table(("id", "claim", "paper figure", "paper", "measured", "verdict"),
                        [(c["id"], c["statement"], c["figure"], c["paper"], c["measured"],
                          f"**{c['verdict']}**" + (f" ({c['reason']})" if c["reason"] else "")
                          + (f"; {c['coverage']}" if c["coverage"] else ""))
                         for c in claim_rows(cs)])
    lines += ["## Run quality", "", *(f"- {q}" for q in summary.quality_details(run)), ""]
    lines += ["## Figures", ""]
    main = [f for f in figures if f.section == "figures"]
    lines += _figures(main) or ["No figures: the run has no samples.", ""]
    for section, heading in (("phases", "Startup phases"), ("density", "Density"),
                             ("burst", "Burst")):
        figs = [f for f in figures if f.section == section]
        if figs:
            lines += [f"## {heading}", ""] + _figures(figs)
    dens = tables.density_rows(run)
    if dens:
        lines += ["### Why each ramp stopped", ""]
        lines += _table(("env", "round", "max sandboxes", "stop reason", "knob", "duration"),
                        [(r["env"], r["round"], r["max"], r["stop_reason"], r["knob"],
                          r["duration"]) for r in dens])
    if dens or any(f.section == "burst" for f in figures):
        lines += ["### Other published figures (never scored)", ""]
        lines += _table(("source", "hardware", "method", "figure"),
                        [(p["source"], p["hardware"], p["method"], p["figure"])
                         for p in tables.PUBLISHED])
    lines += ["## Every cell", "", f"Median with its 95 % bootstrap interval; ratio = median / "
              f"{run.baseline}'s median. Full precision in `summary.csv`.", ""]
    lines += _table(("env", "bench", "metric", "params", "unit", "n", "median", "95 % CI", "CoV",
                     f"ratio to {run.baseline}", "flags", "rounds"),
                    [(r["env"], r["bench"], r["metric"], r["params"], r["unit"], r["n"],
                      r["median"], r["ci"], r["cov"], r["ratio"], r["flags"], r["stop"])
                     for r in tables.summary_rows(run)])
    na = tables.not_applicable_rows(run)
    if na:
        lines += ["## Not applicable", "", "The benchmark has no meaning in these environments "
                  "(a reason, not a number, and not a failure).", ""]
        lines += _table(("env", "bench", "reason"), [(r["env"], r["bench"], r["reason"])
                                                     for r in na])
    lines += ["## Failures", ""]
    fails = tables.failure_rows(run)
    if fails:
        lines += _table(("env", "bench", "round", "params", "error"),
                        [(f["env"], f["bench"], f["round"], f["params"], f["error"])
                         for f in fails])
    else:
        lines += ["None.", ""]
    hosts, facts = summary.host_fact_rows(run)
    lines += ["## Machine" + ("s" if run.multi_host else ""), ""]
    lines += _table(("fact", *hosts), [((f"**{r['fact']}**" if r["differs"] else r["fact"]),
                                        *r["values"]) for r in facts])
    lines += ["## Environments", ""]
    req = tables.requested_resources(run)
    if req:
        lines += [f"Resources requested for every sandbox: {req}.", ""]
    lines += _table(("env", "facts", "resources it got"),
                    [(r["env"], r["facts"], r["resources"] or "-")
                     for r in tables.env_rows(run)])
    unavailable = [(s.host, e, why) for s in run.sources
                   for e, why in (s.meta.get("unavailable") or {}).items()]
    if unavailable:
        lines += ["### Unavailable environments", ""]
        lines += _table(("host", "env", "reason"), unavailable)
    lines += ["## Warnings", ""]
    groups = summary.grouped_warnings(run)
    for g in groups:
        lines.append(f"- **{g['kind']}** ({', '.join(g['envs'])}): {g['message']}. "
                     f"*{g['advice']}.*")
        lines += [f"  - {i['env']}: {i['cells']}" for i in g["items"] if i["cells"]]
    lines += [""] if groups else ["None.", ""]
    return "\n".join(lines)
