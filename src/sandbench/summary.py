"""The table `sandbench run` prints at the end: medians per environment and metric, and the
ratio to the baseline only where stats.difference (the scorecard's and `compare`'s rule) says
the difference is real."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table
from rich.text import Text

from sandbench import results, stats

FACTOR = 1.1  # as `compare`'s default: smaller changes are not called differences

_STYLE = {stats.BETTER: "green", stats.WORSE: "red", stats.CHANGED: "yellow"}


def _cell_text(values: list[float], base: list[float] | None, direction: str) -> Text:
    text = Text(f"{float(np.median(values)):.4g}")
    if base is None:
        return text
    d = stats.difference(base, values, direction=direction, factor=FACTOR)
    if d.different and d.ratio is not None:
        word = {stats.BETTER: "better", stats.WORSE: "worse"}.get(d.verdict, "changed")
        text.append(f" {d.ratio:.3g}x {word}", style=_STYLE[d.verdict])
    elif d.verdict == stats.THIN:
        text.append(" ~", style="dim")
    return text


def summary_table(results_dir: Path, baseline: str = "host") -> Table:
    """One row per (bench, metric, params, unit), one column per planned environment: the
    median, and "B/A x better|worse" against the baseline's cell where the difference is
    significant (p < ALPHA) and beyond FACTOR; "~" where the cells are too thin to tell;
    "not applicable" where the benchmark has no meaning in the environment."""
    meta = results.read_meta(results_dir)
    samples = results.read_samples(results_dir)
    groups = stats.group_samples(samples)
    not_applicable = {(str(r.get("env")), str(r.get("bench")))
                      for r in results.read_not_applicable(results_dir)}
    plan_envs = list(meta.get("plan", {}).get("envs", []))
    envs = plan_envs + sorted({k[0] for k in groups} - set(plan_envs))
    rows: dict[tuple[str, str, stats.ParamsKey], dict[str, list[dict[str, Any]]]] = {}
    for (env, bench, metric, pk), ss in groups.items():
        rows.setdefault((bench, metric, pk), {})[env] = ss
    table = Table(title=f"medians ({meta.get('profile', '?')} profile)",
                  caption=(f"ratio to {baseline} shown where Mann-Whitney p < {stats.ALPHA:g} "
                           f"and beyond {FACTOR:g}x (changed = the metric declares no direction); "
                           f"~ = fewer rounds than a test needs ({stats.THIN_N} a side)"))
    table.add_column("benchmark / metric")
    for e in envs:
        table.add_column(e, justify="right")
    for (bench, metric, pk), by_env in rows.items():
        unit = next(str(ss[0].get("unit", "")) for ss in by_env.values())
        p = stats.params_text(pk)
        row: list[str | Text] = [f"{bench} {metric}{' ' + p if p else ''} ({unit})"]
        base = by_env.get(baseline)
        base_vals = [float(s["value"]) for s in base] if base else None
        for e in envs:
            cell = by_env.get(e)
            if not cell:
                row.append(Text("not applicable", style="dim")
                           if (e, bench) in not_applicable else "-")
                continue
            vals = [float(s["value"]) for s in cell]
            row.append(_cell_text(vals, None if e == baseline else base_vals,
                                  stats.direction_of(cell + (base or []))))
        table.add_row(*row)
    return table
