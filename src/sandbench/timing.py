"""Where a study's wall time went, from the journal's timing records: one line per benchmark
(its spans, largest first) and one for the run, for the terminal and the report."""

from __future__ import annotations

from pathlib import Path

from sandbench.results import Timing, read_timings


def _fmt(spans: dict[str, float]) -> str:
    items = sorted(((k, float(v)) for k, v in spans.items()), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v:.1f} s" for k, v in items if v >= 0.05)


def timing_lines(out: Path) -> list[str]:
    """Last record per benchmark (a resumed run's latest session), then the run's."""
    last: dict[str, Timing] = {}
    for r in read_timings(out):
        last[r.bench] = r
    lines = []
    for bench, r in last.items():
        if bench == "_run":
            continue
        lines.append(f"{bench}: {r.wall_s:.1f} s ({_fmt(r.spans)})")
    run = last.get("_run")
    if run is not None:
        lines.append(f"run: {run.wall_s:.1f} s ({_fmt(run.spans)})")
    return lines
