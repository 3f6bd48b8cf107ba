"""Score a run against the paper's claims (claims.toml holds the claims and the rules).

Four verdicts, each with a one-line reason: *holds*; *does not hold* only when the data show
the opposite with significance, or an interval lying outside the claim's window; *inconclusive*
when the data cannot decide (too few rounds for any test to reach p < alpha, or an interval
that straddles the window), saying how many rounds would; *not measured* when a member is
missing or was only emulated. Emulated samples never decide a claim: every VM of the paper ran
on hardware virtualization. Significance is stats.difference, the same rule as `compare` and
the CLI table.
"""

from __future__ import annotations

import itertools
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sandbench import results, stats
from sandbench.report import envinfo
from sandbench.results import Sample

CLAIMS_FILE = Path(__file__).with_name("claims.toml")

HOLDS = "holds"
FAILS = "does not hold"
INCONCLUSIVE = "inconclusive"
NOT_MEASURED = "not measured"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED)

#: A claim's verdict is the first of these that one of its checks has.
_PRECEDENCE = (FAILS, NOT_MEASURED, INCONCLUSIVE, HOLDS)


@dataclass(frozen=True)
class CheckResult:
    description: str
    verdict: str  # one of VERDICTS
    measured: str  # our numbers, for a person to read beside the paper's
    missing: tuple[str, ...] = ()  # envs the check named and the run lacks
    reason: str = ""  # one line: why this verdict
    emulated: tuple[str, ...] = ()  # envs measured only under emulation: shown, never judged
    judged: tuple[str, ...] = ()  # envs whose numbers decided the verdict
    #: Significance tests run whose one outcome could make the check fail (its pairs):
    #: the claim's family size for the correction of "does not hold".
    tests: int = 0


@dataclass(frozen=True)
class ClaimResult:
    id: str
    statement: str
    figure: str
    kind: str
    paper: str
    verdict: str
    checks: tuple[CheckResult, ...] = field(default=())
    missing: tuple[str, ...] = ()  # members named by the claim that the run lacks
    reason: str = ""  # one line: why this verdict (and, for "does not hold", a likely cause)
    emulated: tuple[str, ...] = ()  # members measured only under emulation, not judged
    cause: str = ""  # the likely cause of a "does not hold" the run's facts show; "" if none
    family: int = 1  # significance tests the claim ran: "does not hold" needs p < alpha/family

    @property
    def coverage(self) -> str:
        """How many of the claim's checks this run could test, and the correction used."""
        tested = sum(c.verdict != NOT_MEASURED for c in self.checks)
        text = f"{tested} of {len(self.checks)} checks tested"
        if self.family > 1:
            text += f"; Bonferroni over {self.family} tests for 'does not hold'"
        return text

    @property
    def verdict_text(self) -> str:
        """The verdict with the members it could not judge: "holds, docker-gvisor-kvm not
        measured", "not measured (no kata-fc; qemu-vm emulated only)"."""
        emu = f"{', '.join(self.emulated)} emulated only" if self.emulated else ""
        if self.verdict == NOT_MEASURED:
            parts = ([f"no {', '.join(self.missing)}"] if self.missing else []) + (
                [emu] if emu else [])
            return f"{NOT_MEASURED} ({'; '.join(parts)})" if parts else NOT_MEASURED
        text = self.verdict
        if self.missing:
            text += f", {', '.join(self.missing)} not measured"
        if emu:
            text += f"; {emu}"
        return text

    @property
    def measured(self) -> str:
        return "; ".join(c.measured for c in self.checks if c.measured)


@dataclass(frozen=True)
class Rules:
    alpha: float = stats.ALPHA
    min_factor: float = 1.1
    window: float = 2.0
    comparable: tuple[float, float] = (0.8, 1.25)
    max_rho: float = -0.7
    min_envs: int = 3
    #: The claim's family size: a "does not hold" from a test (the opposite order, a
    #: correlation the other way) needs p < alpha / family (Bonferroni), so a claim of many
    #: pairs does not fail by the chance of one. "holds" needs every test at alpha: an
    #: intersection-union test, which is at level alpha as it is.
    family: int = 1

    @property
    def fail_alpha(self) -> float:
        return self.alpha / max(self.family, 1)


def _pair(v: Any) -> tuple[float, float]:
    lo, hi = v
    return (float(lo), float(hi))


def load_claims(path: Path = CLAIMS_FILE) -> tuple[Rules, list[dict[str, Any]]]:
    data = tomllib.loads(path.read_text())
    r = data.get("rules", {})
    rules = Rules(
        alpha=float(r.get("alpha", stats.ALPHA)), min_factor=float(r.get("min_factor", 1.1)),
        window=float(r.get("window", 2.0)),
        comparable=_pair(r.get("comparable", (0.8, 1.25))),
        max_rho=float(r.get("max_rho", -0.7)), min_envs=int(r.get("min_envs", 3)))
    return rules, list(data.get("claim", []))


# --- access to the measured values ---------------------------------------------------------

OK, MISSING, EMULATED, PAGE_CACHE = "ok", "missing", "emulated", "page_cache"


class Cells:
    """Sample values by (env, bench, metric, params), looked up with a partial params dict.
    A cell is emulated when any of its samples carries the "emulated" flag or its env ran
    under TCG according to meta.json (older journals): it is shown, never judged."""

    def __init__(self, samples: Iterable[Sample],
                 meta: Mapping[str, Any] | None = None) -> None:
        self.groups = stats.group_samples(samples)
        envs = (meta or {}).get("environments") or {}
        self.tcg = {e for e, f in envs.items() if str((f or {}).get("accel", "")) == "tcg"}

    def samples(self, env: str, bench: str, metric: str,
                params: dict[str, Any]) -> list[Sample] | None:
        want = set(stats.params_key(params))
        for (e, b, m, pk), ss in sorted(self.groups.items()):
            if (e, b, m) == (env, bench, metric) and want <= set(pk):
                return ss
        return None

    def status(self, env: str, bench: str, metric: str, params: dict[str, Any]) -> str:
        ss = self.samples(env, bench, metric, params)
        if ss is None:
            return MISSING
        if env in self.tcg or any("emulated" in s.flags for s in ss):
            return EMULATED
        # Disk numbers served from the environment's own cache did not reach the device:
        # disk claims are judged without them (the report shows them, flagged).
        if any("page_cache" in s.flags for s in ss):
            return PAGE_CACHE
        return OK

    def values(self, env: str, bench: str, metric: str, params: dict[str, Any],
               statistic: str = "value") -> list[float] | None:
        """Values of a measured, not emulated cell; None otherwise."""
        if self.status(env, bench, metric, params) != OK:
            return None
        return self.raw_values(env, bench, metric, params, statistic)

    def raw_values(self, env: str, bench: str, metric: str, params: dict[str, Any],
                   statistic: str = "value") -> list[float] | None:
        ss = self.samples(env, bench, metric, params)
        if ss is None:
            return None
        if statistic == "iqr":
            out = [_iqr(s) for s in ss]
            kept = [v for v in out if v is not None]
            return kept or None
        return stats.per_round(ss)  # the round is the unit (several sandboxes a round)

    def has(self, env: str, bench: str, metric: str, params: dict[str, Any]) -> bool:
        """Measured and judgeable (not emulated)."""
        return self.status(env, bench, metric, params) == OK


def _iqr(sample: Sample) -> float | None:
    pct = sample.extra.get("percentiles")
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


def _f(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.3g}"


def _label(params: dict[str, Any]) -> str:
    return (" [" + " ".join(f"{k}={v}" for k, v in params.items()) + "]") if params else ""


# --- who can be judged -------------------------------------------------------------------------


@dataclass
class _Members:
    """The envs a check names, split into judgeable, missing and emulated-only."""

    cells: Cells
    bench: str
    metric: str
    params: dict[str, Any]
    missing: list[str] = field(default_factory=list)
    emulated: list[str] = field(default_factory=list)

    def keep(self, envs: Iterable[str]) -> list[str]:
        out = []
        for e in envs:
            st = self.cells.status(e, self.bench, self.metric, self.params)
            if st == OK:
                out.append(e)
            elif st == EMULATED:
                if e not in self.emulated:
                    self.emulated.append(e)
            elif st == PAGE_CACHE:
                if f"{e} (page cache)" not in self.missing:
                    self.missing.append(f"{e} (page cache)")
            elif e not in self.missing:
                self.missing.append(e)
        return list(dict.fromkeys(out))

    def shown(self) -> str:
        """The emulated numbers, labelled, and who is missing, for the measured column."""
        parts = []
        for e in self.emulated:
            v = self.cells.raw_values(e, self.bench, self.metric, self.params) or []
            parts.append(f"{e} emulated, not judged: median {_f(float(np.median(v)))}"
                         if v else f"{e} emulated, not judged")
        if self.missing:
            parts.append(f"(not measured: {', '.join(self.missing)})")
        return "; ".join(parts)

    def result(self, desc: str, verdict: str, measured: list[str], reason: str,
               judged: Iterable[str] = ()) -> CheckResult:
        shown = self.shown()
        if verdict == NOT_MEASURED and not reason:
            bits = ([f"no {', '.join(self.missing)}"] if self.missing else []) + (
                [f"{', '.join(self.emulated)} only emulated (TCG): not comparable with "
                 "hardware virtualization"] if self.emulated else [])
            reason = "; ".join(bits) or "nothing to compare"
        return CheckResult(desc, verdict, "; ".join([*measured, *([shown] if shown else [])]),
                           tuple(self.missing), reason, tuple(self.emulated),
                           tuple(dict.fromkeys(judged)))


def _combine(verdicts: Iterable[str]) -> str:
    found = set(verdicts)
    for v in _PRECEDENCE:
        if v in found:
            return v
    return NOT_MEASURED


def _first(pairs: Sequence[tuple[str, str]], verdict: str) -> str:
    """The reason of the pair that decided `verdict`; all of them when everything holds."""
    if verdict == HOLDS:
        return "; ".join(r for _, r in pairs)
    return next((r for v, r in pairs if v == verdict), "")


# --- order -------------------------------------------------------------------------------------


def _widened(va: Sequence[float], vb: Sequence[float], family: int) -> tuple[float, float]:
    """median(vb) / median(va)'s interval at confidence 1 - 0.05 / family (Bonferroni)."""
    lo, hi = stats.ratio_ci(vb, va, confidence=1 - (1 - stats.CONFIDENCE) / family)
    return (lo if math.isfinite(lo) else -math.inf, hi if math.isfinite(hi) else math.inf)


def _order_pair(a: str, b: str, va: list[float], vb: list[float], lo_f: float,
                hi_f: float | None, alpha: float, family: int = 1) -> tuple[str, str, str]:
    """Is b above a by more than lo_f (and at most hi_f)? (verdict, measured, reason)
    Among `family` tests of one claim, "does not hold" takes p < alpha / family for the
    opposite order, or the Bonferroni-widened interval (confidence 1 - 0.05 / family) wholly
    at or below lo_f."""
    d = stats.difference(va, vb, direction="higher", factor=lo_f, alpha=alpha)
    ratio = d.ratio if d.ratio is not None else (math.inf if d.median_b > d.median_a else None)
    ci = ("" if d.ratio_low is None or d.ratio_high is None
          else f" [{_f(d.ratio_low)}, {_f(d.ratio_high)}]")
    shown = f"{b} / {a} {_f(ratio)}x{ci} p={d.p:.2g} n={d.n_b}/{d.n_a}"
    if d.verdict == stats.THIN:
        return INCONCLUSIVE, shown, f"{b} / {a}: {d.reason()}"
    fail_at = alpha / max(family, 1)
    if d.p < fail_at and d.median_b < d.median_a:
        corrected = "" if fail_at == alpha else f" < {fail_at:.2g} (Bonferroni)"
        return FAILS, shown, (f"{b} / {a} {_f(ratio)}x: the opposite order, "
                              f"p={d.p:.2g}{corrected}")
    if d.verdict == stats.BETTER and ratio is not None:
        if hi_f is None or ratio <= hi_f:
            return HOLDS, shown, f"{b} / {a} {_f(ratio)}x, p={d.p:.2g}"
        if d.ratio_low is not None and d.ratio_low > hi_f and (
                family <= 1 or _widened(va, vb, family)[0] > hi_f):
            return FAILS, shown, (f"{b} / {a} {_f(ratio)}x{ci}: far more than the claimed "
                                  f"at most {hi_f:g}x"
                                  + (f" (Bonferroni over {family} tests)" if family > 1
                                     else ""))
        return INCONCLUSIVE, shown, (f"{b} / {a} {_f(ratio)}x{ci} straddles the claimed "
                                     f"at most {hi_f:g}x; more rounds narrow it")
    if d.ratio_high is not None and d.ratio_high <= lo_f:
        if family <= 1:
            return FAILS, shown, (f"{b} / {a} {_f(ratio)}x{ci}: not above {lo_f:g}x "
                                  f"(interval below it)")
        conf, (wlo, whi) = 1 - (1 - stats.CONFIDENCE) / family, _widened(va, vb, family)
        if math.isfinite(whi) and whi <= lo_f:
            return FAILS, shown, (f"{b} / {a} {_f(ratio)}x, its {conf:.2%} interval "
                                  f"[{_f(wlo)}, {_f(whi)}] (Bonferroni over {family} tests) "
                                  f"not above {lo_f:g}x")
        return INCONCLUSIVE, shown, (
            f"{b} / {a} {_f(ratio)}x{ci}: below {lo_f:g}x, but its {conf:.2%} interval "
            f"(Bonferroni over {family} tests) reaches {_f(whi)}; more rounds decide")
    if d.p >= alpha:
        why = (f"p={d.p:.2g} >= {alpha:g} at n={d.n_b}/{d.n_a}; more rounds or a quieter "
               "host decide")
    else:
        why = f"interval{ci or ' n/a'} straddles {lo_f:g}x; more rounds narrow it"
    return INCONCLUSIVE, shown, f"{b} / {a} {_f(ratio)}x: {why}"


def _order(cells: Cells, chk: dict[str, Any], rules: Rules,
           params: dict[str, Any]) -> CheckResult:
    bench, metric = chk["bench"], chk["metric"]
    statistic = "iqr" if chk.get("statistic") == "iqr" else "value"
    among = list(chk.get("among", []))
    less, greater = list(chk.get("less", [])), list(chk.get("greater", []))
    mem = _Members(cells, bench, metric, params)
    if among:
        # "the smallest / the largest": the other side is every judgeable env of `among`.
        named = less or greater
        others = mem.keep(e for e in among if e not in named)
        named = mem.keep(named)
        less, greater = (named, others) if less else (others, named)
    else:
        # A group the paper names ("gVisor, both platforms") is judged on its judgeable
        # members; the others are named beside the verdict.
        less, greater = mem.keep(less), mem.keep(greater)
    lo_f = float(chk.get("min_factor", rules.min_factor))
    hi_f = chk.get("max_factor")
    hi = None if hi_f is None else float(hi_f)
    what = "spread (IQR)" if statistic == "iqr" else metric
    desc = (f"{what}{_label(params)}: {', '.join(less) or '?'} below "
            f"{', '.join(greater) or '?'} by >{lo_f:g}x"
            + (f" and <={hi:g}x" if hi is not None else "") + f", p<{rules.alpha:g}")
    if not less or not greater:
        return mem.result(desc, NOT_MEASURED, [], "")
    parts: list[str] = []
    outcomes: list[tuple[str, str]] = []
    for a, b in itertools.product(less, greater):
        if a == b:
            continue
        va = cells.values(a, bench, metric, params, statistic)
        vb = cells.values(b, bench, metric, params, statistic)
        if va is None or vb is None:
            gone = [e for e, v in ((a, va), (b, vb)) if v is None]
            mem.missing += [e for e in gone if e not in mem.missing]
            return mem.result(desc, NOT_MEASURED, ["no percentiles stored"],
                              f"no per-I/O percentiles stored for {', '.join(gone)}")
        v, shown, why = _order_pair(a, b, va, vb, lo_f, hi, rules.alpha, rules.family)
        parts.append(shown + f" {'ok' if v == HOLDS else v.upper()}")
        outcomes.append((v, why))
    verdict = _combine(v for v, _ in outcomes)
    return replace(mem.result(desc, verdict, parts, _first(outcomes, verdict),
                              [*less, *greater]), tests=len(outcomes))


# --- intervals: ratio, difference, comparable, ratio_change -----------------------------------


def _pairs(chk: dict[str, Any]) -> list[tuple[str, str]]:
    envs = list(chk.get("envs", []))
    refs = list(chk.get("refs", []))
    if refs:
        return [(e, r) for e in envs for r in refs if e != r]
    return list(itertools.combinations(envs, 2))


def _window(expected: Any, window: float) -> tuple[float, float]:
    lo, hi = (expected if isinstance(expected, list) else (expected, expected))
    lo, hi = float(lo), float(hi)
    if lo < 0:  # a negative expected difference: "half" is closer to zero
        return (lo * window, hi / window)
    return (lo / window, hi * window)


def _judge_interval(label: str, point: float | None, lo: float, hi: float,
                    target: tuple[float, float], ns: Sequence[int]) -> tuple[str, str, str]:
    """Holds when the estimate AND its whole interval lie in the target window (so a noisy
    cell cannot hold by a wide interval); does not hold when the whole interval lies outside;
    otherwise inconclusive. Below stats.THIN_N values a side the interval is not trusted (at
    n = 1 it is a point)."""
    n = "/".join(str(x) for x in ns)
    shown = f"{label} {_f(point)} [{_f(lo)}, {_f(hi)}] n={n}"
    win = f"[{_f(target[0])}, {_f(target[1])}]"
    if min(ns) < stats.THIN_N:
        need = stats.THIN_N
        return INCONCLUSIVE, shown, (
            f"{label} {_f(point)} at n={n}: too few rounds for the interval of a median "
            f"(at n=1 it is a point); {need} rounds a side decide")
    if point is None or not math.isfinite(point) or not math.isfinite(lo):
        return INCONCLUSIVE, shown, f"{label}: undefined (a zero median)"
    if target[0] <= lo and hi <= target[1]:
        return HOLDS, shown, f"{label} {_f(point)} [{_f(lo)}, {_f(hi)}] within {win}"
    if hi < target[0] or lo > target[1]:
        return FAILS, shown, f"{label} {_f(point)} [{_f(lo)}, {_f(hi)}] outside {win}"
    width = hi / lo if lo > 0 and hi > 0 else hi - lo
    wtxt = f"{width:.3g}x wide" if lo > 0 and hi > 0 else f"{_f(width)} wide"
    return INCONCLUSIVE, shown, (f"{label} {_f(point)}: interval [{_f(lo)}, {_f(hi)}] "
                                 f"({wtxt}) straddles {win}; more rounds narrow it")


def _interval_check(cells: Cells, chk: dict[str, Any], rules: Rules,
                    params: dict[str, Any]) -> CheckResult:
    """ratio, difference and comparable: a bootstrap interval per (env, ref) pair."""
    kind, bench, metric = chk["kind"], chk["bench"], chk["metric"]
    if kind == "comparable":
        tol = chk.get("tolerance", rules.comparable)
        target = (float(tol[0]), float(tol[1]))
        desc = f"{metric}{_label(params)}: ratio and its interval within " \
               f"[{target[0]:g}, {target[1]:g}]"
    else:
        target = _window(chk["expected"], rules.window)
        sym = "-" if kind == "difference" else "/"
        desc = (f"{metric}{_label(params)}: env{sym}ref and its interval within "
                f"[{_f(target[0])}, {_f(target[1])}] (paper {chk['expected']})")
    mem = _Members(cells, bench, metric, params)
    ok = set(mem.keep(e for pair in _pairs(chk) for e in pair))
    pairs = [(e, r) for e, r in _pairs(chk) if e in ok and r in ok]
    if not pairs:
        return mem.result(desc, NOT_MEASURED, [], "")
    parts, outcomes = [], []
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
        sym = " - " if kind == "difference" else " / "
        v, shown, why = _judge_interval(f"{e}{sym}{r}", point, lo, hi, target,
                                        (len(ve), len(vr)))
        parts.append(shown + f" {'ok' if v == HOLDS else v.upper()}")
        outcomes.append((v, why))
    verdict = _combine(v for v, _ in outcomes)
    return mem.result(desc, verdict, parts, _first(outcomes, verdict),
                      [x for p in pairs for x in p])


def _ratio_change(cells: Cells, chk: dict[str, Any], rules: Rules,
                  params: dict[str, Any]) -> CheckResult:
    bench, metric = chk["bench"], chk["metric"]
    p_from = {**params, **chk["from"]}
    p_to = {**params, **chk["to"]}
    target = _window(chk["expected"], rules.window)
    desc = (f"{metric}{_label(params)}: (env/ref at {_label(chk['to']).strip()}) / "
            f"(env/ref at {_label(chk['from']).strip()}) and its interval within "
            f"[{_f(target[0])}, {_f(target[1])}] (paper {chk['expected']})")
    m_from = _Members(cells, bench, metric, p_from)
    m_to = _Members(cells, bench, metric, p_to)
    envs = [e for pair in _pairs(chk) for e in pair]
    ok = set(m_from.keep(envs)) & set(m_to.keep(envs))
    mem = _Members(cells, bench, metric, params,
                   list(dict.fromkeys(m_from.missing + m_to.missing)),
                   [e for e in dict.fromkeys(m_from.emulated + m_to.emulated)
                    if e not in m_from.missing + m_to.missing])
    pairs = [(e, r) for e, r in _pairs(chk) if e in ok and r in ok]
    if not pairs:
        return mem.result(desc, NOT_MEASURED, [], "")
    parts, outcomes = [], []
    for e, r in pairs:
        groups = [cells.values(e, bench, metric, p_to) or [],
                  cells.values(r, bench, metric, p_to) or [],
                  cells.values(e, bench, metric, p_from) or [],
                  cells.values(r, bench, metric, p_from) or []]
        med = [float(np.median(g)) for g in groups]
        point = (med[0] / med[1]) / (med[2] / med[3]) if 0 not in (med[1], med[2], med[3]) \
            else math.nan
        lo, hi = stats.bootstrap(groups, lambda m: (m[0] / m[1]) / (m[2] / m[3]))
        v, shown, why = _judge_interval(f"{e} / {r} change", point, lo, hi, target,
                                        [len(g) for g in groups])
        parts.append(shown + f" {'ok' if v == HOLDS else v.upper()}")
        outcomes.append((v, why))
    verdict = _combine(v for v, _ in outcomes)
    return mem.result(desc, verdict, parts, _first(outcomes, verdict),
                      [x for p in pairs for x in p])


# --- correlation across environments -----------------------------------------------------------


def _ranks(x: Sequence[float]) -> Any:
    arr = np.asarray(x, dtype=np.float64)
    order = arr.argsort(kind="stable")
    ranks = np.empty(len(arr))
    ranks[order] = np.arange(len(arr), dtype=np.float64)
    for v in set(arr.tolist()):  # average ranks for ties
        ranks[arr == v] = ranks[arr == v].mean()
    return ranks


def spearman_exact(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Spearman's rho and its exact one-sided permutation p-values (rho this low or lower,
    this high or higher) over all k! orderings. k <= 8."""
    rx, ry = _ranks(x), _ranks(y)

    def rho(a: Any, b: Any) -> float:
        a, b = a - a.mean(), b - b.mean()
        den = math.sqrt(float((a * a).sum() * (b * b).sum()))
        return float((a * b).sum()) / den if den else math.nan

    obs = rho(rx, ry)
    if not math.isfinite(obs):
        return obs, 1.0, 1.0
    perms = [rho(rx, np.asarray(p)) for p in itertools.permutations(ry.tolist())]
    eps = 1e-9
    low = sum(r <= obs + eps for r in perms) / len(perms)
    high = sum(r >= obs - eps for r in perms) / len(perms)
    return obs, low, high


def _envs_to_decide(alpha: float) -> int:
    k = 2
    while 1.0 / math.factorial(k) >= alpha:
        k += 1
    return k


def _inverse(cells: Cells, chk: dict[str, Any], rules: Rules,
             params: dict[str, Any]) -> CheckResult:
    bench, m1, m2 = chk["bench"], chk["metric"], chk["other_metric"]
    max_rho = float(chk.get("max_rho", rules.max_rho))
    desc = (f"{m1} vs {m2}{_label(params)}: Spearman rho <= {max_rho:g} across envs, exact "
            f"p<{rules.alpha:g}")
    m_a = _Members(cells, bench, m1, params)
    m_b = _Members(cells, bench, m2, params)
    envs = list(chk.get("envs", []))
    have = [e for e in m_a.keep(envs) if e in m_b.keep(envs)]
    mem = _Members(cells, bench, m1, params, list(dict.fromkeys(m_a.missing + m_b.missing)),
                   [e for e in dict.fromkeys(m_a.emulated + m_b.emulated)
                    if e not in m_a.missing + m_b.missing])
    if len(have) < rules.min_envs:
        return mem.result(desc, NOT_MEASURED, [f"only {len(have)} envs measured"],
                          f"only {len(have)} of the {rules.min_envs} envs a correlation "
                          "needs were measured")
    x = [float(np.median(cells.values(e, bench, m1, params) or [])) for e in have]
    y = [float(np.median(cells.values(e, bench, m2, params) or [])) for e in have]
    k = len(have)
    rho, p_low, p_high = spearman_exact(x, y)
    shown = [f"rho={_f(rho)} over {k} envs, p={p_low:.2g}"]
    floor = 1.0 / math.factorial(k)
    if floor >= rules.alpha:
        need = _envs_to_decide(rules.alpha)
        return mem.result(desc, INCONCLUSIVE, shown, (
            f"rho={_f(rho)} over {k} envs: an exact one-sided rank test cannot go below "
            f"1/{k}! = {floor:.2g}; {need} envs decide"), have)
    if math.isfinite(rho) and rho <= max_rho and p_low < rules.alpha:
        return replace(mem.result(desc, HOLDS, shown,
                                  f"rho={_f(rho)} over {k} envs, p={p_low:.2g}", have), tests=1)
    if p_high < rules.fail_alpha:
        return replace(mem.result(desc, FAILS, shown, (
            f"rho={_f(rho)} over {k} envs: {m2} rose with {m1}, p={p_high:.2g}"), have),
            tests=1)
    return mem.result(desc, INCONCLUSIVE, shown, (
        f"rho={_f(rho)} over {k} envs: neither inverse nor the opposite at p<{rules.alpha:g}"),
        have)


def _not_testable(cells: Cells, chk: dict[str, Any], rules: Rules,
                  params: dict[str, Any]) -> CheckResult:
    """A claim the method cannot test: always inconclusive, with the reason."""
    return CheckResult(str(chk.get("reason", "not testable")), INCONCLUSIVE, "",
                       reason=f"not testable: {chk.get('reason', '')}".rstrip(": "))


_KINDS: dict[str, Callable[[Cells, dict[str, Any], Rules, dict[str, Any]], CheckResult]] = {
    "order": _order, "ratio": _interval_check, "difference": _interval_check,
    "comparable": _interval_check, "ratio_change": _ratio_change, "inverse": _inverse,
    "not_testable": _not_testable}


def evaluate_check(cells: Cells, chk: dict[str, Any], rules: Rules) -> list[CheckResult]:
    fn = _KINDS.get(chk.get("kind", ""))
    if fn is None:
        raise ValueError(f"claims: unknown check kind {chk.get('kind')!r}; "
                         f"valid: {', '.join(sorted(_KINDS))}")
    return [fn(cells, chk, rules, p) for p in _expand(dict(chk.get("params", {})))]


# --- likely causes of a claim that does not hold ---------------------------------------------

#: The paper's versions (paper.md, Table 1), by the paper's runtime an environment measures
#: (Environment.paper_lineage, journaled in its facts).
PAPER_VERSIONS = {"gvisor": "20200115", "runc": "1.0.0", "kata": "1.11.0", "qemu": "4.1",
                  "firecracker": "0.21.1"}


def _version(text: str, family: str) -> tuple[int, ...] | None:
    if family == "gvisor":
        m = re.search(r"(20\d{2})(\d{2})(\d{2})", text)
        return tuple(int(g) for g in m.groups()) if m else None
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(g or 0) for g in m.groups()) if m else None


def _newer(env: str, facts: Mapping[str, Any]) -> str:
    fam = envinfo.lineage_of(env, facts)
    if fam not in PAPER_VERSIONS:
        return ""  # host, crun, podman, the namespace sandboxes: the paper ran none of them
    text = str(facts.get("runtime_version") or facts.get("version") or "")
    now, paper = _version(text, fam), _version(PAPER_VERSIONS[fam], fam)
    if now is None or paper is None:
        return ""
    if fam == "gvisor":
        years = (now[0] - paper[0]) + (now[1] - paper[1]) / 12
        if years >= 2:
            return (f"{env}: gVisor {''.join(f'{x:02d}' for x in now)} is {years:.1f} years "
                    f"newer than the paper's release-{PAPER_VERSIONS['gvisor']}")
        return ""
    if now[0] > paper[0] or (now[0] == paper[0] and now[1] - paper[1] >= 2):
        return (f"{env}: {fam} {'.'.join(map(str, now))} is much newer than the paper's "
                f"{PAPER_VERSIONS[fam]}")
    return ""


def likely_cause(envs: Iterable[str], meta: Mapping[str, Any] | None) -> str:
    """What the run's facts show that could explain a finding not holding: a host that is itself
    a VM (ptrace far costlier, VMs nested), runtimes much newer than the paper's."""
    if not meta:
        return ""
    envs = list(dict.fromkeys(envs))
    host = meta.get("host") or {}
    env_facts = meta.get("environments") or {}
    causes = []
    if host.get("virtualized") or host.get("virtualization"):
        hv = host.get("hypervisor") or host.get("virtualization")
        hv_txt = f" ({hv})" if isinstance(hv, str) and hv else ""
        if any((env_facts.get(e) or {}).get("platform") == "ptrace" for e in envs):
            causes.append(f"this host is itself a VM{hv_txt}, which makes gVisor's ptrace "
                          "platform far costlier (every trap goes through the outer "
                          "hypervisor)")
        elif any(envinfo.class_of(e, env_facts.get(e)) == "VM" for e in envs):
            causes.append(f"this host is itself a VM{hv_txt}: the VMs run nested")
        else:
            causes.append(f"this host is itself a VM{hv_txt}: every number includes the "
                          "outer hypervisor")
    causes += [c for c in (_newer(e, env_facts.get(e) or {}) for e in envs) if c]
    return "; ".join(causes)


# --- claims ------------------------------------------------------------------------------------


def evaluate_claims(samples: Iterable[Sample], claims: Sequence[dict[str, Any]],
                    rules: Rules, meta: Mapping[str, Any] | None = None) -> list[ClaimResult]:
    cells = Cells(samples, meta)
    out: list[ClaimResult] = []
    for claim in claims:
        checks = [r for chk in claim.get("check", []) for r in evaluate_check(cells, chk, rules)]
        # The family is known once every check has run; judged again at its level (the
        # tests are the same, only the threshold for "does not hold" moves).
        family = sum(c.tests for c in checks)
        if family > 1:
            fam_rules = replace(rules, family=family)
            checks = [r for chk in claim.get("check", [])
                      for r in evaluate_check(cells, chk, fam_rules)]
        # A claim is judged on the checks this run could measure; a check it could not
        # (only Kata members, a block size the profile skips) is named beside the verdict,
        # and only a claim with no measurable check at all reads "not measured".
        judged = [c for c in checks if c.verdict != NOT_MEASURED]
        verdict = _combine(c.verdict for c in judged) if judged else NOT_MEASURED
        missing = tuple(dict.fromkeys(e for c in checks for e in c.missing))
        emulated = tuple(e for e in dict.fromkeys(e for c in checks for e in c.emulated)
                         if e not in missing)
        deciding = [c for c in checks if c.verdict == verdict]
        if verdict == HOLDS:
            reason = "; ".join(c.reason for c in checks if c.reason)
        else:
            reason = deciding[0].reason if deciding else "no checks"
        cause = ""
        if verdict == FAILS:
            cause = likely_cause((e for c in deciding for e in c.judged), meta)
            if cause:
                reason += f"; likely cause: {cause}"
        out.append(ClaimResult(
            id=str(claim["id"]), statement=str(claim["statement"]),
            figure=str(claim.get("figure", "")), kind=str(claim.get("kind", "")),
            paper=str(claim.get("paper", "")), verdict=verdict, checks=tuple(checks),
            missing=missing, reason=reason, emulated=emulated, cause=cause,
            family=max(family, 1)))
    return out


def scorecard(results_dir: Path, claims_path: Path = CLAIMS_FILE) -> list[ClaimResult]:
    """Every claim of the paper, scored against the run in results_dir."""
    meta = results.read_meta(results_dir)  # refuses a directory of an unknown schema up front
    rules, claims = load_claims(claims_path)
    return evaluate_claims(results.read_samples(results_dir), claims, rules, meta)
