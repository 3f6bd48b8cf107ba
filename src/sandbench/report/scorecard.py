"""Score a run against the paper's claims (claims.toml holds the claims and the rules)."""

from __future__ import annotations

import itertools
import math
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from sandbench import results, stats

CLAIMS_FILE = Path(__file__).with_name("claims.toml")

HOLDS = "holds"
FAILS = "does not hold"
NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class CheckResult:
    description: str
    verdict: str  # HOLDS, FAILS or NOT_MEASURED
    measured: str  # our numbers, for a person to read beside the paper's
    missing: tuple[str, ...] = ()  # envs the check needed and the run lacks


@dataclass(frozen=True)
class ClaimResult:
    id: str
    statement: str
    figure: str
    kind: str
    paper: str
    verdict: str
    checks: tuple[CheckResult, ...] = field(default=())
    missing: tuple[str, ...] = ()

    @property
    def verdict_text(self) -> str:
        if self.verdict == NOT_MEASURED and self.missing:
            return f"{NOT_MEASURED} (no {', '.join(self.missing)})"
        return self.verdict

    @property
    def measured(self) -> str:
        return "; ".join(c.measured for c in self.checks if c.measured)


@dataclass(frozen=True)
class Rules:
    alpha: float = 0.01
    min_factor: float = 1.1
    window: float = 2.0
    comparable: tuple[float, float] = (0.8, 1.25)
    max_rho: float = -0.7
    min_envs: int = 3


def _pair(v: Any) -> tuple[float, float]:
    lo, hi = v
    return (float(lo), float(hi))


def load_claims(path: Path = CLAIMS_FILE) -> tuple[Rules, list[dict[str, Any]]]:
    data = tomllib.loads(path.read_text())
    r = data.get("rules", {})
    rules = Rules(
        alpha=float(r.get("alpha", 0.01)), min_factor=float(r.get("min_factor", 1.1)),
        window=float(r.get("window", 2.0)),
        comparable=_pair(r.get("comparable", (0.8, 1.25))),
        max_rho=float(r.get("max_rho", -0.7)), min_envs=int(r.get("min_envs", 3)))
    return rules, list(data.get("claim", []))


# --- access to the measured values ---------------------------------------------------------


class Cells:
    """Sample values by (env, bench, metric, params), looked up with a partial params dict."""

    def __init__(self, samples: Iterable[dict[str, Any]]) -> None:
        self.groups = stats.group_samples(samples)

    def samples(self, env: str, bench: str, metric: str,
                params: dict[str, Any]) -> list[dict[str, Any]] | None:
        want = set(stats.params_key(params))
        for (e, b, m, pk), ss in sorted(self.groups.items()):
            if (e, b, m) == (env, bench, metric) and want <= set(pk):
                return ss
        return None

    def values(self, env: str, bench: str, metric: str, params: dict[str, Any],
               statistic: str = "value") -> list[float] | None:
        ss = self.samples(env, bench, metric, params)
        if ss is None:
            return None
        if statistic == "iqr":
            out = [_iqr(s) for s in ss]
            kept = [v for v in out if v is not None]
            return kept or None
        return [float(s["value"]) for s in ss]

    def has(self, env: str, bench: str, metric: str, params: dict[str, Any]) -> bool:
        return self.samples(env, bench, metric, params) is not None


def _iqr(sample: dict[str, Any]) -> float | None:
    pct = (sample.get("extra") or {}).get("percentiles")
    if not isinstance(pct, dict):
        return None
    p = {float(k): float(v) for k, v in pct.items()}
    if 25.0 not in p or 75.0 not in p:
        return None
    return p[75.0] - p[25.0]


def _expand(params: dict[str, Any]) -> list[dict[str, Any]]:
    """{"bs": ["16k", "1m"], "pattern": "x"} -> one dict per listed value."""
    keys = list(params)
    choices = [v if isinstance(v, list) else [v] for v in params.values()]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*choices)]


def _f(x: float) -> str:
    if not math.isfinite(x):
        return "n/a"
    return f"{x:.3g}"


def _label(params: dict[str, Any]) -> str:
    return (" [" + " ".join(f"{k}={v}" for k, v in params.items()) + "]") if params else ""


# --- check kinds ---------------------------------------------------------------------------


def _missing(cells: Cells, envs: Iterable[str], bench: str, metric: str,
             params: dict[str, Any]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(e for e in envs if not cells.has(e, bench, metric, params)))


def _window(expected: Any, window: float) -> tuple[float, float]:
    lo, hi = (expected if isinstance(expected, list) else (expected, expected))
    lo, hi = float(lo), float(hi)
    if lo < 0:  # a negative expected difference: "half" is closer to zero
        return (lo * window, hi / window)
    return (lo / window, hi * window)


def _order(cells: Cells, chk: dict[str, Any], rules: Rules,
           params: dict[str, Any]) -> CheckResult:
    bench, metric = chk["bench"], chk["metric"]
    statistic = "iqr" if chk.get("statistic") == "iqr" else "value"
    among = list(chk.get("among", []))
    less, greater = list(chk.get("less", [])), list(chk.get("greater", []))
    named = less or greater
    missing = _missing(cells, named, bench, metric, params)
    unmeasured_others: list[str] = []
    if among:
        others = [e for e in among if e not in named]
        unmeasured_others = [e for e in others if not cells.has(e, bench, metric, params)]
        measured_others = [e for e in others if e not in unmeasured_others]
        if less:
            greater = measured_others
            less = [e for e in less if e not in missing]
        else:
            less = measured_others
            greater = [e for e in greater if e not in missing]
        # Judged on the named envs measured here, as long as one of them was.
        unmeasured_others = [*missing, *unmeasured_others]
        missing = missing if len(missing) == len(named) else ()
        if not measured_others:
            missing += tuple(e for e in unmeasured_others if e not in missing)
    else:
        # A group the paper names ("gVisor, both platforms") is judged on its measured
        # members; only a side with no measured member at all makes the check unmeasured.
        gone = _missing(cells, less + greater, bench, metric, params)
        less = [e for e in less if e not in gone]
        greater = [e for e in greater if e not in gone]
        unmeasured_others = list(gone)
        missing = gone if not less or not greater else ()
    lo_f = float(chk.get("min_factor", rules.min_factor))
    hi_f = chk.get("max_factor")
    what = "spread (IQR)" if statistic == "iqr" else metric
    desc = (f"{what}{_label(params)}: {', '.join(less) or '?'} below {', '.join(greater) or '?'}"
            f" by >{lo_f:g}x" + (f" and <={float(hi_f):g}x" if hi_f is not None else "")
            + f", p<{rules.alpha:g}")
    if missing:
        return CheckResult(desc, NOT_MEASURED, "", missing)
    parts: list[str] = []
    ok = True
    for a, b in itertools.product(less, greater):
        if a == b:
            continue
        va = cells.values(a, bench, metric, params, statistic)
        vb = cells.values(b, bench, metric, params, statistic)
        if va is None or vb is None:
            return CheckResult(desc, NOT_MEASURED, "no percentiles stored",
                               tuple(e for e, v in ((a, va), (b, vb)) if v is None))
        ma, mb = float(np.median(va)), float(np.median(vb))
        factor = stats.safe_ratio(mb, ma)
        p = stats.mann_whitney(va, vb)
        good = (factor is not None and factor > lo_f and mb > ma and p < rules.alpha
                and (hi_f is None or factor <= float(hi_f)))
        ok = ok and good
        parts.append(f"{b} / {a} {_f(factor) if factor is not None else 'n/a'}x "
                     f"p={p:.2g} {'ok' if good else 'FAIL'}")
    if unmeasured_others:
        parts.append(f"(not measured: {', '.join(unmeasured_others)})")
    return CheckResult(desc, HOLDS if ok else FAILS, "; ".join(parts))


def _pairs(chk: dict[str, Any]) -> list[tuple[str, str]]:
    envs = list(chk.get("envs", []))
    refs = list(chk.get("refs", []))
    if refs:
        return [(e, r) for e in envs for r in refs if e != r]
    return list(itertools.combinations(envs, 2))


def _interval_check(cells: Cells, chk: dict[str, Any], rules: Rules,
                    params: dict[str, Any]) -> CheckResult:
    """ratio, difference and comparable: a bootstrap interval per (env, ref) pair."""
    kind, bench, metric = chk["kind"], chk["bench"], chk["metric"]
    pairs = _pairs(chk)
    envs = [e for pair in pairs for e in pair]
    if kind == "comparable":
        tol = chk.get("tolerance", rules.comparable)
        target = (float(tol[0]), float(tol[1]))
        desc = (f"{metric}{_label(params)}: ratio interval within "
                f"[{target[0]:g}, {target[1]:g}]")
    else:
        target = _window(chk["expected"], rules.window)
        sym = "-" if kind == "difference" else "/"
        desc = (f"{metric}{_label(params)}: env{sym}ref interval overlaps "
                f"[{_f(target[0])}, {_f(target[1])}] (paper {chk['expected']})")
    gone = _missing(cells, envs, bench, metric, params)
    # Judge the pairs measured here; unmeasured members are named, not required.
    pairs = [(e, r) for e, r in pairs if e not in gone and r not in gone]
    if not pairs:
        return CheckResult(desc, NOT_MEASURED, "", gone)
    ok = True
    parts = []
    for e, r in pairs:
        ve = cells.values(e, bench, metric, params) or []
        vr = cells.values(r, bench, metric, params) or []
        me, mr = float(np.median(ve)), float(np.median(vr))
        if kind == "difference":
            point: float | None = me - mr
            lo, hi = stats.difference_ci(ve, vr)
        else:
            point = stats.safe_ratio(me, mr)
            lo, hi = stats.ratio_ci(ve, vr) if point is not None else (math.nan, math.nan)
        if point is None or not math.isfinite(lo):
            good = False
        elif kind == "comparable":
            good = target[0] <= lo and hi <= target[1]
        else:
            good = lo <= target[1] and hi >= target[0]
        ok = ok and good
        sym = " - " if kind == "difference" else " / "
        parts.append(f"{e}{sym}{r} {_f(point) if point is not None else 'n/a'} "
                     f"[{_f(lo)}, {_f(hi)}] {'ok' if good else 'FAIL'}")
    if gone:
        parts.append(f"(not measured: {', '.join(gone)})")
    return CheckResult(desc, HOLDS if ok else FAILS, "; ".join(parts))


def _ratio_change(cells: Cells, chk: dict[str, Any], rules: Rules,
                  params: dict[str, Any]) -> CheckResult:
    bench, metric = chk["bench"], chk["metric"]
    p_from = {**params, **chk["from"]}
    p_to = {**params, **chk["to"]}
    target = _window(chk["expected"], rules.window)
    desc = (f"{metric}{_label(params)}: (env/ref at {_label(chk['to']).strip()}) / "
            f"(env/ref at {_label(chk['from']).strip()}) overlaps "
            f"[{_f(target[0])}, {_f(target[1])}] (paper {chk['expected']})")
    pairs = _pairs(chk)
    envs = [e for pair in pairs for e in pair]
    missing = _missing(cells, envs, bench, metric, p_from) + _missing(
        cells, envs, bench, metric, p_to)
    if missing:
        return CheckResult(desc, NOT_MEASURED, "", tuple(dict.fromkeys(missing)))
    ok = True
    parts = []
    for e, r in pairs:
        groups = [cells.values(e, bench, metric, p_to) or [],
                  cells.values(r, bench, metric, p_to) or [],
                  cells.values(e, bench, metric, p_from) or [],
                  cells.values(r, bench, metric, p_from) or []]
        med = [float(np.median(g)) for g in groups]
        point = (med[0] / med[1]) / (med[2] / med[3]) if 0 not in (med[1], med[2]) else math.nan
        lo, hi = stats.bootstrap(groups, lambda m: (m[0] / m[1]) / (m[2] / m[3]))
        good = math.isfinite(lo) and lo <= target[1] and hi >= target[0]
        ok = ok and good
        parts.append(f"{e} / {r} change {_f(point)} [{_f(lo)}, {_f(hi)}] "
                     f"{'ok' if good else 'FAIL'}")
    return CheckResult(desc, HOLDS if ok else FAILS, "; ".join(parts))


def _inverse(cells: Cells, chk: dict[str, Any], rules: Rules,
             params: dict[str, Any]) -> CheckResult:
    bench, m1, m2 = chk["bench"], chk["metric"], chk["other_metric"]
    max_rho = float(chk.get("max_rho", rules.max_rho))
    desc = f"{m1} vs {m2}{_label(params)}: Spearman rho <= {max_rho:g} across envs"
    envs = list(chk.get("envs", []))
    have = [e for e in envs if cells.has(e, bench, m1, params) and cells.has(e, bench, m2, params)]
    if len(have) < rules.min_envs:
        return CheckResult(desc, NOT_MEASURED, f"only {len(have)} envs measured",
                           tuple(e for e in envs if e not in have))
    x = [float(np.median(cells.values(e, bench, m1, params) or [])) for e in have]
    y = [float(np.median(cells.values(e, bench, m2, params) or [])) for e in have]
    rho = float(sps.spearmanr(x, y).statistic)
    good = math.isfinite(rho) and rho <= max_rho
    return CheckResult(desc, HOLDS if good else FAILS,
                       f"rho={_f(rho)} over {len(have)} envs {'ok' if good else 'FAIL'}")


_KINDS = {"order": _order, "ratio": _interval_check, "difference": _interval_check,
          "comparable": _interval_check, "ratio_change": _ratio_change, "inverse": _inverse}


def evaluate_check(cells: Cells, chk: dict[str, Any], rules: Rules) -> list[CheckResult]:
    fn = _KINDS.get(chk.get("kind", ""))
    if fn is None:
        raise ValueError(f"claims: unknown check kind {chk.get('kind')!r}; "
                         f"valid: {', '.join(sorted(_KINDS))}")
    return [fn(cells, chk, rules, p) for p in _expand(dict(chk.get("params", {})))]


def evaluate_claims(samples: Iterable[dict[str, Any]], claims: Sequence[dict[str, Any]],
                    rules: Rules) -> list[ClaimResult]:
    cells = Cells(samples)
    out: list[ClaimResult] = []
    for claim in claims:
        checks = [r for chk in claim.get("check", []) for r in evaluate_check(cells, chk, rules)]
        verdicts = {c.verdict for c in checks}
        missing = tuple(dict.fromkeys(e for c in checks for e in c.missing))
        if FAILS in verdicts:
            verdict = FAILS
        elif NOT_MEASURED in verdicts or not checks:
            verdict = NOT_MEASURED
        else:
            verdict = HOLDS
        out.append(ClaimResult(
            id=str(claim["id"]), statement=str(claim["statement"]),
            figure=str(claim.get("figure", "")), kind=str(claim.get("kind", "")),
            paper=str(claim.get("paper", "")), verdict=verdict, checks=tuple(checks),
            missing=missing))
    return out


def scorecard(results_dir: Path, claims_path: Path = CLAIMS_FILE) -> list[ClaimResult]:
    """Every claim of the paper, scored against the run in results_dir."""
    results.read_meta(results_dir)  # refuse a directory of an unknown schema up front
    rules, claims = load_claims(claims_path)
    return evaluate_claims(results.read_samples(results_dir), claims, rules)
