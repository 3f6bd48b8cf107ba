"""Every verdict of every claim type on constructed data: order, ratio, group, correlation;
the underpowered cases (n = 1, n = 2), emulated-only members, likely causes, Q3."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sandbench.report.scorecard import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NOT_MEASURED,
    ClaimResult,
    Rules,
    evaluate_claims,
    likely_cause,
    scorecard,
)
from sandbench.results import Sample
from tests.reportdata import PAPER_ENVS, meta, realistic_records, write_run


def cell(env: str, median: float, n: int = 7, cov: float = 0.01, metric: str = "m",
         emulated: bool = False) -> list[Sample]:
    rng = np.random.default_rng(sum(env.encode()) + n)
    return [Sample(env=env, bench="b", metric=metric,
                   value=float(median * (1 + rng.normal(0, cov))), unit="s", round=i,
                   params={}, timestamp="", flags=["emulated"] if emulated else [])
            for i in range(n)]


def judge(samples: list[Sample], check: dict[str, Any],
          meta_doc: dict[str, Any] | None = None) -> ClaimResult:
    claim = {"id": "X", "statement": "x", "check": [{"bench": "b", "metric": "m", **check}]}
    return evaluate_claims(samples, [claim], Rules(), meta_doc)[0]


ORDER = {"kind": "order", "less": ["a"], "greater": ["b"]}
RATIO = {"kind": "ratio", "envs": ["g"], "refs": ["h"], "expected": 7.0}


# --- order -------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,min_p", [(1, "1"), (2, "0.33")])
def test_order_underpowered_is_inconclusive_never_fails(n: int, min_p: str) -> None:
    """2.8x apart in every round, yet n = 1 or 2 cannot reach p < 0.01 (the issue's N1)."""
    r = judge(cell("a", 1.0, n=n) + cell("b", 2.8, n=n), ORDER)
    assert r.verdict == INCONCLUSIVE
    assert f"n={n}/{n}" in r.reason and f"is {min_p}," in r.reason
    assert "5 rounds a side decide" in r.reason
    assert "\n" not in r.reason


def test_order_all_four_verdicts() -> None:
    assert judge(cell("a", 1.0) + cell("b", 2.0), ORDER).verdict == HOLDS
    r = judge(cell("a", 2.0) + cell("b", 1.0), ORDER)
    assert r.verdict == FAILS and "opposite" in r.reason
    # Noisy and close: neither order shown at n = 7.
    r = judge(cell("a", 1.0, cov=0.3) + cell("b", 1.05, cov=0.3), ORDER)
    assert r.verdict == INCONCLUSIVE and "p=" in r.reason
    r = judge(cell("a", 1.0), ORDER)
    assert r.verdict == NOT_MEASURED and r.missing == ("b",)


def test_order_emulated_only_member_is_not_measured_and_shown_apart() -> None:
    r = judge(cell("a", 1.0) + cell("b", 9.0, emulated=True), ORDER)
    assert r.verdict == NOT_MEASURED
    assert r.emulated == ("b",) and not r.missing
    assert r.verdict_text == "not measured (b emulated only)"
    assert "b emulated, not judged: median 9" in r.measured
    assert "emulated" in r.reason


def test_emulated_per_meta_accel_for_older_journals() -> None:
    m = meta(["a", "b"])
    m["environments"]["b"]["accel"] = "tcg"
    r = judge(cell("a", 1.0) + cell("b", 9.0), ORDER, m)
    assert r.verdict == NOT_MEASURED and r.emulated == ("b",)


# --- ratio -------------------------------------------------------------------------------------

def test_ratio_all_four_verdicts() -> None:
    r = judge(cell("h", 10.0) + cell("g", 70.0), RATIO)
    assert r.verdict == HOLDS and "within [3.5, 14]" in r.reason
    r = judge(cell("h", 10.0) + cell("g", 300.0), RATIO)
    assert r.verdict == FAILS and "outside [3.5, 14]" in r.reason
    # Estimate 14.5 just past the edge, interval straddling it: no verdict either way.
    r = judge(cell("h", 10.0, cov=0.15) + cell("g", 140.0, cov=0.15), RATIO)
    assert r.verdict == INCONCLUSIVE and "straddles" in r.reason
    r = judge(cell("h", 10.0), RATIO)
    assert r.verdict == NOT_MEASURED and r.missing == ("g",)


def test_noisy_ratio_does_not_hold_by_overlap() -> None:
    """The old rule held a claim when a wide interval merely overlapped the window."""
    r = judge(cell("h", 10.0, cov=0.6) + cell("g", 25.0, cov=0.6), RATIO)
    assert r.verdict == INCONCLUSIVE


@pytest.mark.parametrize("n", [1, 2])
def test_ratio_underpowered_is_inconclusive(n: int) -> None:
    """At n = 1 the interval is a point; a far-off point still decides nothing."""
    for g in (70.0, 3000.0):
        r = judge(cell("h", 10.0, n=n) + cell("g", g, n=n), RATIO)
        assert r.verdict == INCONCLUSIVE, (n, g)
        assert f"n={n}/{n}" in r.reason and "5 rounds a side decide" in r.reason


def test_ratio_emulated_only_is_not_measured() -> None:
    r = judge(cell("h", 10.0) + cell("g", 70.0, emulated=True), RATIO)
    assert r.verdict == NOT_MEASURED and r.emulated == ("g",)


def test_comparable_inconclusive_between() -> None:
    chk = {"kind": "comparable", "envs": ["g"], "refs": ["h"]}
    r = judge(cell("h", 1.0, cov=0.2) + cell("g", 1.2, cov=0.2), chk)
    assert r.verdict == INCONCLUSIVE


# --- group ------------------------------------------------------------------------------------

GROUP = {"kind": "order", "less": ["gv-ptrace", "gv-kvm"], "greater": ["docker"]}


def test_group_all_four_verdicts_name_missing_members() -> None:
    r = judge(cell("docker", 2.0) + cell("gv-ptrace", 1.0), GROUP)
    assert r.verdict == HOLDS and r.verdict_text == "holds, gv-kvm not measured"
    r = judge(cell("docker", 1.0) + cell("gv-ptrace", 2.0), GROUP)
    assert r.verdict == FAILS and r.verdict_text == "does not hold, gv-kvm not measured"
    r = judge(cell("docker", 2.0, n=2) + cell("gv-ptrace", 1.0, n=2), GROUP)
    assert r.verdict == INCONCLUSIVE and "gv-kvm not measured" in r.verdict_text
    r = judge(cell("docker", 2.0), GROUP)
    assert r.verdict == NOT_MEASURED and r.verdict_text == "not measured (no gv-ptrace, gv-kvm)"


def test_group_with_emulated_member() -> None:
    r = judge(cell("docker", 2.0) + cell("gv-ptrace", 1.0) + cell("gv-kvm", 1.0, emulated=True),
              GROUP)
    assert r.verdict == HOLDS and r.verdict_text == "holds; gv-kvm emulated only"


def test_among_group_with_emulated_other() -> None:
    chk = {"kind": "order", "less": ["docker"], "among": ["docker", "gv", "qemu-vm", "kata-fc"]}
    r = judge(cell("docker", 1.0) + cell("gv", 5.0) + cell("qemu-vm", 0.5, emulated=True), chk)
    assert r.verdict == HOLDS  # the emulated VM's smaller number does not decide
    assert r.verdict_text == "holds, kata-fc not measured; qemu-vm emulated only"


# --- correlation ------------------------------------------------------------------------------

def _corr(tps: list[float], lat: list[float], emulated: tuple[int, ...] = ()
          ) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, (t, v) in enumerate(zip(tps, lat, strict=True)):
        out += cell(f"e{i}", t, emulated=i in emulated) + \
            cell(f"e{i}", v, metric="lat", emulated=i in emulated)
    return out


CORR = {"kind": "inverse", "other_metric": "lat", "envs": [f"e{i}" for i in range(6)]}


def test_correlation_all_four_verdicts() -> None:
    tps = [100.0, 200.0, 300.0, 400.0, 500.0, 600.0]
    assert judge(_corr(tps, [1000 / t for t in tps]), CORR).verdict == HOLDS
    r = judge(_corr(tps, [t / 10 for t in tps]), CORR)
    assert r.verdict == FAILS and "rose with" in r.reason
    r = judge(_corr(tps, [5.0, 1.0, 6.0, 2.0, 4.0, 3.0]), CORR)  # unrelated
    assert r.verdict == INCONCLUSIVE and "neither" in r.reason
    r = judge(_corr(tps[:4], [1000 / t for t in tps[:4]]), CORR)  # perfect, but 4 envs
    assert r.verdict == INCONCLUSIVE and "1/4! = 0.042" in r.reason and "5 envs" in r.reason
    r = judge(_corr(tps[:2], [10.0, 5.0]), CORR)
    assert r.verdict == NOT_MEASURED


def test_correlation_ignores_emulated_members() -> None:
    tps = [100.0, 200.0, 300.0, 400.0, 500.0, 600.0]
    r = judge(_corr(tps, [1000 / t for t in tps], emulated=(4, 5)), CORR)
    assert r.verdict == INCONCLUSIVE and "over 4 envs" in r.reason
    assert set(r.emulated) == {"e4", "e5"}


def test_q3_on_p95_can_fail(tmp_path: Path) -> None:
    """Mean latency follows threads / throughput whatever happens; the p95 tail does not, so
    Q3 now fails when the tail rises with throughput."""
    recs = realistic_records(PAPER_ENVS, rounds=5)
    tps = {s.env: s.value for s in recs if s.metric == "tps"}
    from dataclasses import replace
    recs = [replace(s, value=tps[s.env] / 10) if s.metric == "latency_p95" else s for s in recs]
    d = write_run(tmp_path / "run", recs, meta(PAPER_ENVS))
    q3 = next(r for r in scorecard(d) if r.id == "Q3")
    assert q3.verdict == FAILS, q3.reason
    assert "latency_p95" in q3.checks[0].description


# --- likely causes ----------------------------------------------------------------------------

def test_fail_names_likely_cause_from_run_facts() -> None:
    m = meta(["host", "docker-gvisor-ptrace"], virtualized=True,
             versions={"docker-gvisor-ptrace": "runsc version 0.0~20240729.0"})
    chk = {"kind": "ratio", "envs": ["docker-gvisor-ptrace"], "refs": ["host"],
           "expected": 36.0}
    r = judge(cell("host", 150.0) + cell("docker-gvisor-ptrace", 47000.0), chk, m)
    assert r.verdict == FAILS
    assert "itself a VM" in r.cause and "ptrace" in r.cause
    assert "gVisor 20240729 is 4.5 years newer" in r.cause
    assert "likely cause" in r.reason
    # No such fact: no cause invented.
    r = judge(cell("host", 150.0) + cell("docker-gvisor-ptrace", 47000.0), chk,
              meta(["host", "docker-gvisor-ptrace"]))
    assert r.verdict == FAILS and r.cause == "" and "likely cause" not in r.reason


def test_likely_cause_for_vm_and_old_runtime() -> None:
    m = meta(["qemu-vm", "docker"], virtualized=True,
             versions={"qemu-vm": "QEMU emulator version 7.2.11", "docker": "x"})
    cause = likely_cause(["qemu-vm"], m)
    assert "VMs run nested" in cause and "qemu 7.2.11 is much newer" in cause
    assert likely_cause(["docker"], meta(["docker"])) == ""


def test_realistic_scorecard_every_claim_has_a_reason(tmp_path: Path) -> None:
    d = write_run(tmp_path / "run", realistic_records(PAPER_ENVS, rounds=6,
                                                      emulated=["qemu-vm"]), meta(PAPER_ENVS))
    by_id = {r.id: r for r in scorecard(d)}
    assert all(r.reason and "\n" not in r.reason for r in by_id.values())
    # QEMU under TCG decides nothing about hardware virtualization.
    assert by_id["M4"].verdict == NOT_MEASURED and by_id["M4"].emulated == ("qemu-vm",)
    assert by_id["C3"].emulated == ("qemu-vm",)
    # Quick-profile thin cells: inconclusive, not "does not hold".
    thin = write_run(tmp_path / "thin", realistic_records(PAPER_ENVS, rounds=1),
                     meta(PAPER_ENVS))
    verdicts = {r.id: r.verdict for r in scorecard(thin)}
    # Q3 correlates the envs' medians, the envs being its units: one round each can decide it.
    assert {v for k, v in verdicts.items() if k != "Q3"} == {INCONCLUSIVE}


def test_claim_judged_on_its_measurable_checks_naming_the_rest() -> None:
    """D3's shape: one check needs only Kata (absent here), another is measurable: the claim
    gets the measurable check's verdict, with the Kata members named beside it."""
    samples = cell("a", 1.0) + cell("b", 2.0)
    claim = {"id": "X", "statement": "x", "check": [
        {"bench": "b", "metric": "m", "kind": "order", "less": ["kata-fc"],
         "greater": ["kata-qemu"]},
        {"bench": "b", "metric": "m", **ORDER}]}
    r = evaluate_claims(samples, [claim], Rules(), None)[0]
    assert r.verdict == HOLDS
    assert "kata-fc" in r.verdict_text and "not measured" in r.verdict_text
    only_kata = {"id": "Y", "statement": "y", "check": [claim["check"][0]]}
    assert evaluate_claims(samples, [only_kata], Rules(), None)[0].verdict == NOT_MEASURED


def test_page_cache_disk_numbers_decide_nothing() -> None:
    """gVisor's O_DIRECT stops at its own page cache: its disk samples are flagged and a disk
    claim is judged without them, naming why."""
    fast = [replace(s, flags=["page_cache"]) for s in cell("a", 1.0)]
    r = judge(fast + cell("b", 2.0), ORDER)
    assert r.verdict == NOT_MEASURED
    assert "a (page cache)" in r.verdict_text
