"""Tables shared by the HTML and Markdown reports, and summary.csv."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from sandbench import stats
from sandbench.report.model import RunData, fmt

CSV_FIELDS = ("env", "bench", "metric", "params", "unit", "n", "median", "mean", "stdev", "cov",
              "min", "max", "q1", "q3", "ci_low", "ci_high", "ratio_to_baseline", "ratio_low",
              "ratio_high", "flags")


def _csv_num(x: float | None) -> str:
    return "" if x is None or not math.isfinite(x) else repr(float(x))


def write_summary_csv(run: RunData, path: Path) -> None:
    """Full precision, one row per cell; empty where a value is undefined (e.g. no baseline)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_FIELDS)
        for c in run.cells:
            w.writerow([c.env, c.bench, c.metric, stats.params_text(c.params), c.unit, c.n,
                        _csv_num(c.median), _csv_num(c.mean), _csv_num(c.stdev),
                        _csv_num(c.cov), _csv_num(c.min), _csv_num(c.max), _csv_num(c.q1),
                        _csv_num(c.q3), _csv_num(c.ci_low), _csv_num(c.ci_high),
                        _csv_num(c.ratio), _csv_num(c.ratio_low), _csv_num(c.ratio_high),
                        " ".join(c.flags)])


def summary_rows(run: RunData) -> list[dict[str, str]]:
    """Rounded for people: median with its interval, CoV and the ratio to the baseline."""
    rows = []
    for c in run.cells:
        ratio = "n/a" if c.ratio is None else (
            f"{fmt(c.ratio)} [{fmt(c.ratio_low)}, {fmt(c.ratio_high)}]")
        rows.append({
            "env": c.env, "bench": c.bench, "metric": c.metric,
            "params": stats.params_text(c.params), "unit": c.unit, "n": str(c.n),
            "median": fmt(c.median), "ci": f"[{fmt(c.ci_low)}, {fmt(c.ci_high)}]",
            "cov": "n/a" if not math.isfinite(c.cov) else f"{c.cov:.1%}",
            "ratio": ratio, "flags": " ".join(c.flags)})
    return rows


def host_rows(meta: dict[str, Any]) -> list[tuple[str, str]]:
    host = meta.get("host", {})
    return [(str(k), _text(v)) for k, v in host.items()]


def env_rows(run: RunData) -> list[dict[str, str]]:
    envs = run.meta.get("environments", {})
    out = []
    for env in run.env_order:
        if env not in envs:
            continue
        facts = envs[env] or {}
        out.append({"env": env,
                    "facts": ", ".join(f"{k}={_text(v)}" for k, v in facts.items())})
    return out


def _text(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list | tuple):
        return ", ".join(_text(x) for x in v)
    return str(v)


def failure_rows(run: RunData) -> list[dict[str, str]]:
    return [{"env": str(f.get("env")), "bench": str(f.get("bench")),
             "round": str(f.get("round")),
             "params": stats.params_text(stats.params_key(f.get("params"))),
             "error": str(f.get("error", "")).strip().splitlines()[-1][:300]
             if str(f.get("error", "")).strip() else ""}
            for f in run.failures]
