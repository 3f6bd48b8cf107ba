"""What the first screen says: the cost of each environment relative to the baseline per
benchmark (a heatmap table), and the run's verdict on its own quality."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sandbench import stats
from sandbench.report.model import RunData, fmt

WORSE_RGB = (214, 39, 40)  # red: costs more than the baseline
BETTER_RGB = (31, 119, 180)  # blue (not green: red/green is the commonest colour blindness)
FULL_AT = 100.0  # a factor this large (either way) gets the full colour
NEUTRAL = "#ffffff"
UNKNOWN = "#eeeeee"  # journals older than directions: the ratio, uncoloured


@dataclass(frozen=True)
class Column:
    bench: str
    metric: str
    unit: str
    direction: str | None
    n_params: int  # cells per env; above 1 the summary is a geometric mean


@dataclass(frozen=True)
class HeatCell:
    text: str  # "2.31×" or the baseline's median
    interval: str  # "[2.1, 2.5]" or "range 1.2–3.1 over 16"
    colour: str
    title: str  # tooltip: the numbers behind it
    verdict: str  # "worse", "better", "same", "unknown", "baseline", "none"
    emulated: bool = False
    fg: str = "#222"  # text colour, white on the strongest shades


def columns(run: RunData) -> list[Column]:
    out = []
    for bench in run.bench_order:
        metric = run.headline(bench)
        if metric is None:
            continue
        cells = [c for c in run.cells if c.bench == bench and c.metric == metric]
        n_params = len({c.params for c in cells})
        out.append(Column(bench, metric, cells[0].unit if cells else "",
                          run.direction(bench, metric), n_params))
    return out


def shade(cost: float) -> str:
    """cost > 1 is worse than the baseline. White at 1, full colour at FULL_AT either way, on
    a log scale so 2x and 1/2x look equally strong."""
    if not math.isfinite(cost) or cost <= 0:
        return UNKNOWN
    t = min(abs(math.log(cost)) / math.log(FULL_AT), 1.0)
    t = 0.15 + 0.85 * t  # even a small clear difference is visibly tinted
    rgb = WORSE_RGB if cost > 1 else BETTER_RGB
    r, g, b = (round(255 + (c - 255) * t) for c in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def _cost(ratio: float, direction: str | None) -> float | None:
    if direction is None or ratio <= 0:
        return None
    return ratio if direction == "lower" else 1.0 / ratio


def heat_cell(run: RunData, label: str, col: Column) -> HeatCell:
    cells = [c for c in run.cells if c.env == label and c.bench == col.bench
             and c.metric == col.metric]
    emulated = any("emulated" in c.flags for c in cells)
    if not cells:
        why = run.not_applicable_reason(label, col.bench)
        if why is not None:
            return HeatCell("not applicable", "", NEUTRAL, why, "none")
        return HeatCell("–", "", NEUTRAL, "not measured", "none")
    host = run.host_of(label)
    if run.env_of(label) == run.baseline:
        med = cells[0].median if len(cells) == 1 else math.nan
        text = f"{fmt(med)} {col.unit}" if len(cells) == 1 else f"{len(cells)} cells"
        return HeatCell(text, "baseline", NEUTRAL, f"baseline on {host}", "baseline", emulated)
    ratios = [c for c in cells if c.ratio is not None and c.ratio > 0]
    if not ratios:
        shown = fmt(cells[0].median) + f" {col.unit}" if len(cells) == 1 else "measured"
        return HeatCell(shown, "no baseline", NEUTRAL,
                        f"{run.baseline} not measured on {host}", "none", emulated)
    if len(ratios) == 1:
        c = ratios[0]
        ratio = float(c.ratio or 0)
        lo, hi = c.ratio_low, c.ratio_high
        interval = f"[{fmt(lo, 2)}, {fmt(hi, 2)}]" if lo is not None and hi is not None else ""
        clear = lo is not None and hi is not None and not (lo <= 1.0 <= hi)
        title = (f"median {fmt(c.median)} {c.unit}, n={c.n}; ratio to {run.baseline} "
                 f"{fmt(ratio)} {interval} (95 % bootstrap)")
    else:
        logs = [math.log(float(c.ratio or 1)) for c in ratios]
        ratio = math.exp(sum(logs) / len(logs))
        rs = sorted(float(c.ratio or 0) for c in ratios)
        interval = f"range {fmt(rs[0], 2)}–{fmt(rs[-1], 2)} over {len(rs)}"
        # Clear when every cell's interval lies on the same side of 1.
        sides = {("hi" if (c.ratio_low or 0) > 1 else "lo" if (c.ratio_high or 2) < 1 else "")
                 for c in ratios}
        clear = len(sides) == 1 and "" not in sides
        title = (f"geometric mean of the ratios of {len(rs)} cells "
                 f"({', '.join(sorted({stats.params_text(c.params) for c in ratios})[:4])}...)")
    cost = _cost(ratio, col.direction)
    text = f"{fmt(ratio, 3)}×"
    if cost is None:
        return HeatCell(text, interval, UNKNOWN, title + "; direction not journaled",
                        "unknown", emulated)
    if not clear:
        return HeatCell(text, interval, NEUTRAL, title + "; no clear difference", "same",
                        emulated)
    strong = abs(math.log(cost)) > 0.55 * math.log(FULL_AT)
    return HeatCell(text, interval, shade(cost), title, "worse" if cost > 1 else "better",
                    emulated, "#fff" if strong else "#222")


def heatmap(run: RunData) -> dict[str, Any]:
    cols = columns(run)
    rows: list[dict[str, Any]] = []
    for label in run.env_order:
        if not any(c.env == label for c in run.cells) and not any(
                r.env == label for r in run.not_applicable):
            continue
        env = run.env_of(label)
        cls = run.class_of.get(env, "other")
        first = not rows or rows[-1]["class"] != cls or rows[-1]["host"] != run.host_of(label)
        seccomp = run.seccomp_of.get(env, "")
        rows.append({"label": label, "env": env, "host": run.host_of(label),
                     "colour": run.colour(label), "emulated": run.emulated(label),
                     "class": cls, "class_first": first,
                     "baseline": f"{cls}; seccomp: {seccomp}" if seccomp else cls,
                     "cells": [heat_cell(run, label, col) for col in cols]})
    return {"columns": cols, "rows": rows}


# --- quality ---------------------------------------------------------------------------------


#: Above this CoV a start's variance is traced to the phase that carries it.
STARTUP_COV = 0.10
PHASE_METRICS = ("phase_prepare", "phase_create", "phase_start", "phase_network")


def startup_variance_causes(run: RunData) -> list[str]:
    """For every environment whose startup_time varies by more than STARTUP_COV, the phase
    that carries most of that variance and the values it takes (a bimodal create, quantized
    by the kernel's scheduling, shows as two clusters): the cause, named from the data."""
    out = []
    for c in run.cells:
        if c.bench != "startup" or c.metric != "startup_time" or not math.isfinite(c.cov):
            continue
        if c.cov <= STARTUP_COV:
            continue
        by_phase: dict[str, list[float]] = {}
        for smp in run.samples:
            if smp.env == c.env and smp.bench == "startup" and smp.metric in PHASE_METRICS:
                by_phase.setdefault(smp.metric, []).append(float(smp.value))
        spread = {m: statistics.pvariance(v) for m, v in by_phase.items() if len(v) > 1}
        if not spread:
            continue
        top = max(spread, key=lambda m: spread[m])
        share = spread[top] / max(sum(spread.values()), 1e-18)
        vals = sorted(by_phase[top])
        lo, hi = vals[0] * 1000, vals[-1] * 1000
        out.append(f"{c.env} startup CoV {c.cov:.0%}: {share:.0%} of its variance is in "
                   f"{top.removeprefix('phase_')} ({lo:.3g} to {hi:.3g} ms)")
    return out


def noisy_round_causes(run: RunData) -> list[str]:
    """For the system-call latency of every environment (the paper's most load-sensitive
    number) whose CoV is above STARTUP_COV, emulated ones aside: whether its rounds flagged
    noisy carry the spread (the quiet ones alone vary less) or it varies on its own."""
    from sandbench.report.envinfo import converge_metrics

    heads = converge_metrics()
    out = []
    for c in run.cells:
        if c.bench != "syscall" or c.metric not in heads.get(c.bench, ()):
            continue
        if "emulated" in c.flags:
            continue
        if not math.isfinite(c.cov) or c.cov <= STARTUP_COV:
            continue
        quiet = [float(smp.value) for smp in run.samples
                 if smp.env == c.env and smp.bench == c.bench
                 and smp.metric == c.metric and "noisy" not in smp.flags]
        n_noisy = c.n - len(quiet)
        if n_noisy and len(quiet) >= 2 and statistics.mean(quiet) > 0:
            qcov = statistics.stdev(quiet) / statistics.mean(quiet)
            if qcov <= STARTUP_COV:
                out.append(f"{c.env} {c.cov:.0%} (its {n_noisy} noisy rounds; quiet ones "
                           f"{qcov:.0%})")
                continue
        if n_noisy >= c.n - 1:
            why = "nearly every round noisy: rerun on a quiet host to tell"
        elif n_noisy:
            why = f"{n_noisy} noisy rounds, but quiet ones vary as much: its own"
        else:
            why = "no noisy round: its own"
        out.append(f"{c.env} {c.cov:.0%} ({why})")
    return out


def noise_resolution(run: RunData) -> str:
    """How the noise flag was measured, from meta (runs before it was recorded: ticks)."""
    rule = (run.meta.get("plan") or {}).get("noise") or {}
    return str(rule.get("resolution") or "10 ms clock ticks")


def quality(run: RunData) -> tuple[str, str]:
    """(verdict word, one short paragraph of counts) on the run's own quality; the details
    (which environments, which phases, why cells stopped) are `quality_details`, in a section
    of their own below the scorecard, so the first screen holds whatever the noise."""
    parts: list[str] = []
    n_cells = len(run.cells)
    if not n_cells:
        return ("empty", "The run has no samples.")
    rounds = {(s.env, s.bench, s.round) for s in run.samples}
    noisy = {(s.env, s.bench, s.round) for s in run.samples if "noisy" in s.flags}
    thin = [c for c in run.cells if c.n < stats.THIN_N]
    high_cov = [c for c in run.cells if c.metric not in stats.EVENT_COUNTS
                and math.isfinite(c.cov) and c.cov > stats.NOISY_COV]
    emulated = sorted({run.env_of(c.env) for c in run.cells if "emulated" in c.flags})
    parts.append(f"{len(noisy)} of {len(rounds)} rounds noisy (measured at "
                 f"{noise_resolution(run)})")
    if high_cov:
        parts.append(f"{len(high_cov)} of {n_cells} cells vary by more than "
                     f"{stats.NOISY_COV:.0%} (CoV)")
    if thin:
        parts.append(f"{len(thin)} of {n_cells} cells have fewer than {stats.THIN_N} rounds")
    if emulated:
        parts.append(f"{len(emulated)} emulated (TCG)")
    stops = Counter(r.stop_reason for r in run.cell_records)
    if run.failures:
        parts.append(f"{len(run.failures)} cell rounds failed")
    if run.not_applicable:
        parts.append(f"{len(run.not_applicable)} cells not applicable")
    # The share of the run that is doubtful decides the word; emulation is named, not scored,
    # since it concerns whole environments that are flagged everywhere.
    doubtful = (len(noisy) / max(len(rounds), 1) + len(thin) / n_cells
                + len(high_cov) / n_cells + (0.1 if stops.get("budget") else 0.0))
    if doubtful == 0 and not run.failures:
        word = "good"
    elif doubtful < 0.5:
        word = "usable with care"
    else:
        word = "rough"
    if emulated and word != "rough":
        word += " (emulated environments aside)"
    text = "; ".join(parts) + "."
    return word, text[0].upper() + text[1:]


def quality_details(run: RunData) -> list[str]:
    """The run-quality details, one item each: noise with its rule and top offenders, where
    starts and latencies vary, thin cells, emulation, nesting, stop reasons, failures."""
    out: list[str] = []
    if not run.cells:
        return out
    n_cells = len(run.cells)
    rounds = {(s.env, s.bench, s.round) for s in run.samples}
    noisy: dict[tuple[str, str, int], dict[str, Any]] = {}
    for s in run.samples:
        if "noisy" in s.flags:
            noisy.setdefault((s.env, s.bench, s.round), s.extra)
    rule = (run.meta.get("plan") or {}).get("noise") or {}
    frac = float(rule.get("core_fraction", 0.02))
    line = (f"{len(noisy)} of {len(rounds)} rounds noisy: other processes used more than "
            f"{frac:.0%} of one core during the round, measured at {noise_resolution(run)}")
    offenders: Counter[str] = Counter()
    for extra in noisy.values():
        for top in (extra.get("other_cpu_top") or [])[:1]:
            offenders[str(top).rsplit(" ", 1)[0]] += 1
    if offenders:
        line += "; the top other process in those rounds: " + ", ".join(
            f"{name} ({n})" for name, n in offenders.most_common(3))
    per_env = Counter(k[0] for k in noisy)
    if per_env:
        line += "; per environment: " + ", ".join(f"{e} {n}" for e, n in per_env.most_common())
    out.append(line)
    high_cov = [c for c in run.cells if c.metric not in stats.EVENT_COUNTS
                and math.isfinite(c.cov) and c.cov > stats.NOISY_COV]
    if high_cov:
        out.append(f"{len(high_cov)} of {n_cells} cells vary by more than "
                   f"{stats.NOISY_COV:.0%} (CoV): "
                   + ", ".join(f"{c.env} {c.bench} {c.metric} {c.cov:.0%}" for c in high_cov))
    causes = startup_variance_causes(run)
    if causes:
        out.append("where starts vary: " + "; ".join(causes))
    spread = noisy_round_causes(run)
    if spread:
        out.append("getpid latency above 10 % CoV: " + ", ".join(spread))
    thin = [c for c in run.cells if c.n < stats.THIN_N]
    if thin:
        out.append(f"{len(thin)} of {n_cells} cells have fewer than {stats.THIN_N} samples, "
                   "too few for a test at p < 0.01")
    emulated = sorted({run.env_of(c.env) for c in run.cells if "emulated" in c.flags})
    if emulated:
        out.append(f"emulated (TCG, not comparable with hardware, hatched in the figures): "
                   f"{', '.join(emulated)}")
    nested = [s.host for s in run.sources if s.meta.get("host", {}).get("virtualized")]
    if nested:
        who = (f"the hosts {', '.join(nested)} themselves run" if run.multi_host
               else "the host itself runs")
        out.append(who + " in a VM, so VM numbers are nested")
    stops = Counter(r.stop_reason for r in run.cell_records)
    if stops:
        out.append("rounds stopped: " + ", ".join(f"{n} {k}" for k, n in stops.most_common()))
    if run.failures:
        out.append(f"{len(run.failures)} cell rounds failed (listed under Failures)")
    if run.not_applicable:
        out.append(f"{len(run.not_applicable)} cells not applicable, not failures: " + "; ".join(
            f"{r.env} {r.bench} ({r.reason})" for r in run.not_applicable))
    return [t[0].upper() + t[1:] for t in out]


# --- warnings, grouped ---------------------------------------------------------------------


def grouped_warnings(run: RunData) -> list[dict[str, Any]]:
    """One entry per kind: how many environments and cells, the advice, and the details."""
    kinds: dict[str, list[stats.StatWarning]] = {}
    for w in run.warnings:
        kinds.setdefault(w.kind, []).append(w)
    out = []
    for kind, ws in kinds.items():
        envs = list(dict.fromkeys(w.env for w in ws))
        out.append({"kind": kind, "message": ws[0].message, "advice": ws[0].advice,
                    "envs": envs,
                    "items": [{"env": w.env, "cells": ", ".join(w.cells)} for w in ws]})
    return out


# --- facts ---------------------------------------------------------------------------------


def host_fact_rows(run: RunData) -> tuple[list[str], list[dict[str, Any]]]:
    """Hosts as columns; the facts that differ between hosts first (marked)."""
    from sandbench.report.tables import text

    hosts = run.hosts
    facts = [s.meta.get("host", {}) for s in run.sources]
    keys = list(dict.fromkeys(k for f in facts for k in f))
    rows = [{"fact": k, "values": [text(f.get(k)) for f in facts],
             "differs": len({text(f.get(k)) for f in facts}) > 1} for k in keys]
    rows.sort(key=lambda r: not r["differs"])
    return hosts, rows


def differing_facts(run: RunData) -> list[str]:
    _, rows = host_fact_rows(run)
    return [r["fact"] for r in rows if r["differs"] and r["fact"] not in ("boot_id",)]
