"""Tables shared by the HTML and Markdown reports, and summary.csv."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from sandbench import stats
from sandbench.report.model import RunData, fmt

CSV_FIELDS = ("env", "host", "bench", "metric", "params", "unit", "n", "median", "mean",
              "stdev", "cov", "min", "max", "q1", "q3", "ci_low", "ci_high",
              "ratio_to_baseline", "ratio_low", "ratio_high", "flags")


def _csv_num(x: float | None) -> str:
    return "" if x is None or not math.isfinite(x) else repr(float(x))


def write_summary_csv(run: RunData, path: Path) -> None:
    """Full precision, one row per cell; empty where a value is undefined (e.g. no baseline)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_FIELDS)
        for c in run.cells:
            w.writerow([run.env_of(c.env), run.host_of(c.env), c.bench, c.metric,
                        stats.params_text(c.params), c.unit, c.n,
                        _csv_num(c.median), _csv_num(c.mean), _csv_num(c.stdev),
                        _csv_num(c.cov), _csv_num(c.min), _csv_num(c.max), _csv_num(c.q1),
                        _csv_num(c.q3), _csv_num(c.ci_low), _csv_num(c.ci_high),
                        _csv_num(c.ratio), _csv_num(c.ratio_low), _csv_num(c.ratio_high),
                        " ".join(c.flags)])


def stop_reasons(run: RunData) -> dict[tuple[str, str], str]:
    """(env label, bench) -> "rounds, stop reason[, ±half-width]" from the journal's cell
    records (adaptive rounds); empty for journals without them."""
    out = {}
    for r in run.cell_records:
        hw = r.rel_halfwidth
        out[(r.env, r.bench)] = (f"{r.rounds} rounds, {r.stop_reason}"
                                 + (f", ±{hw:.1%}" if hw is not None else ""))
    return out


def summary_rows(run: RunData) -> list[dict[str, str]]:
    """Rounded for people: median with its interval, CoV and the ratio to the baseline."""
    rows = []
    stops = stop_reasons(run)
    for c in run.cells:
        ratio = "n/a" if c.ratio is None else (
            f"{fmt(c.ratio)} [{fmt(c.ratio_low)}, {fmt(c.ratio_high)}]")
        rows.append({
            "env": c.env, "bench": c.bench, "metric": c.metric,
            "params": stats.params_text(c.params), "unit": c.unit,
            # Several values a round (memory's sandboxes): n counts rounds, the unit.
            "n": str(c.n) if c.per_round <= 1 else f"{c.n} rounds, ≤{c.per_round} each",
            "median": fmt(c.median), "ci": f"[{fmt(c.ci_low)}, {fmt(c.ci_high)}]",
            "cov": "n/a" if not math.isfinite(c.cov) else f"{c.cov:.1%}",
            "ratio": ratio, "flags": " ".join(c.flags),
            "stop": stops.get((c.env, c.bench), "")})
    for r in not_applicable_rows(run):
        rows.append({"env": r["env"], "bench": r["bench"], "metric": "-", "params": "",
                     "unit": "", "n": "0", "median": "not applicable", "ci": "", "cov": "",
                     "ratio": "", "flags": "", "stop": stops.get((r["env"], r["bench"]), "")})
    return rows


def not_applicable_rows(run: RunData) -> list[dict[str, str]]:
    """Cells a benchmark has no meaning in, with the reason, in bench and env order."""
    rows = [{"env": r.env, "bench": r.bench, "reason": r.reason} for r in run.not_applicable]
    return sorted(rows, key=lambda r: (
        run.bench_order.index(r["bench"]) if r["bench"] in run.bench_order else 0,
        run.env_rank(r["env"])))


def host_rows(meta: dict[str, Any]) -> list[tuple[str, str]]:
    host = meta.get("host", {})
    return [(str(k), text(v)) for k, v in host.items()]


def _kv(d: Any) -> str:
    if not isinstance(d, dict):
        return text(d)
    return ", ".join(f"{k}={text(v)}" for k, v in d.items())


def requested_resources(run: RunData) -> str:
    """The run-wide limits asked for, per host where they differ; "" when none recorded."""
    seen = []
    for s in run.sources:
        req = (s.meta.get("resources") or {}).get("requested")
        if isinstance(req, dict):
            cpus, mem = req.get("cpus"), req.get("memory_mib")
            seen.append(f"{'unlimited' if cpus is None else f'{cpus:g}'} CPUs, "
                        f"{'unlimited' if mem is None else f'{mem} MiB'} memory"
                        + (f" ({s.host})" if run.multi_host else ""))
    return "; ".join(dict.fromkeys(seen))


def env_rows(run: RunData) -> list[dict[str, str]]:
    """Each environment's facts and the resources it got, per host in a merged report."""
    out = []
    for label in run.env_order:
        env = run.env_of(label)
        src = next((s for s in run.sources if s.host == run.host_of(label)), None)
        meta = src.meta if src else run.meta
        envs = meta.get("environments", {}) or {}
        if env not in envs:
            continue
        res = ((meta.get("resources") or {}).get("by_env") or {}).get(env)
        out.append({"env": label, "colour": run.colour(label), "facts": _kv(envs[env] or {}),
                    "resources": "" if res is None else _kv(res)})
    return out


def text(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list | tuple):
        return ", ".join(text(x) for x in v)
    return str(v)


def failure_rows(run: RunData) -> list[dict[str, str]]:
    return [{"env": f.env, "bench": f.bench, "round": str(f.round),
             "params": stats.params_text(stats.params_key(f.params)),
             "error": f.error.strip().splitlines()[-1][:300] if f.error.strip() else ""}
            for f in run.failures]


def density_rows(run: RunData) -> list[dict[str, str]]:
    """Why each density ramp stopped: one row per max_sandboxes sample."""
    rows = []
    for s in run.samples:
        if s.bench != "density" or s.metric != "max_sandboxes":
            continue
        extra = s.extra
        rows.append({"env": s.env, "round": str(s.round),
                     "max": fmt(float(s.value)), "stop_reason": text(extra.get("stop_reason")),
                     "knob": text(extra.get("knob")),
                     "duration": fmt(extra.get("duration_s")) + " s"
                     if isinstance(extra.get("duration_s"), int | float) else "-"})
    return rows


# Published numbers to read beside a density or burst run: other hardware, other methods,
# so they are never scored, only shown with where they come from.
PUBLISHED: tuple[dict[str, str], ...] = (
    {"source": "kubernetes-sigs/agent-sandbox", "hardware": "8 vCPU, 32 GB node",
     "method": "most pods stable on one node",
     "figure": "gVisor 80, kata-qemu 20, kata-clh 40 pods"},
    {"source": "idlab-discover/benchmark-containerd-runtimes", "hardware": "as published",
     "method": "memory per container from MemAvailable over 50 containers",
     "figure": "runc 5.5 MB, gVisor systrap 22.6 MB, Kata 115-157 MB"},
    {"source": "idlab-discover/benchmark-containerd-runtimes", "hardware": "as published",
     "method": "start to network callback",
     "figure": "runc 196 ms, gVisor systrap 572 ms"},
    {"source": "Firecracker, NSDI '20", "hardware": "bare-metal host, as published",
     "method": "50 microVMs started at once; microVMs per host",
     "figure": "p99 boot 146 ms; 1,000 microVMs per host"},
    {"source": "Firecracker specification", "hardware": "-",
     "method": "design targets", "figure": "at most 5 MiB VMM overhead, 125 ms to init"},
)
