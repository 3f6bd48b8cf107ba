"""Where a study's wall time went, from the journal's timing records: one line per benchmark
(its spans, largest first) and one for the run, for the terminal and the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sandbench.results import read_timings


def _fmt(spans: dict[str, Any]) -> str:
    items = sorted(((k, float(v)) for k, v in spans.items()), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v:.1f} s" for k, v in items if v >= 0.05)


def timing_lines(out: Path) -> list[str]:
    """Last record per benchmark (a resumed run's latest session), then the run's."""
    last: dict[str, dict[str, Any]] = {}
    for r in read_timings(out):
        last[str(r.get("bench"))] = r
    lines = []
    for bench, r in last.items():
        if bench == "_run":
            continue
        lines.append(f"{bench}: {float(r['wall_s']):.1f} s ({_fmt(r.get('spans') or {})})")
    run = last.get("_run")
    if run is not None:
        lines.append(f"run: {float(run['wall_s']):.1f} s ({_fmt(run.get('spans') or {})})")
    return lines
