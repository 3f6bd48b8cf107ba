"""The noise flag's CPU reading: nanoseconds where the kernel gives them, ticks less one
tick otherwise, so a round is flagged only on CPU another process provably used."""

from __future__ import annotations

import subprocess
import time

import psutil
import pytest

from sandbench import noise


def test_provable_cpu_is_the_ns_count_or_the_ticks_less_one() -> None:
    tick = 0.01
    # one tick in the counters but 0.3 ms of real run time: 0.3 ms, not 10 ms
    assert noise.provable_cpu_s(0.01, 0.0003, tick) == pytest.approx(0.0003)
    # a thread that ended during the round took its ns with it: the ticks' floor holds
    assert noise.provable_cpu_s(0.05, 0.001, tick) == pytest.approx(0.04)
    # no ns source: one tick could be truncation alone
    assert noise.provable_cpu_s(0.01, None, tick) == 0.0
    assert noise.provable_cpu_s(0.03, None, tick) == pytest.approx(0.02)


def test_rule_states_source_resolution_and_threshold() -> None:
    r = noise.rule(noise.TICKS)
    assert r["source"] == "ticks" and "clock ticks" in r["resolution"]
    assert r["core_fraction"] == noise.NOISY_CORE_FRACTION
    assert "1 ns" in noise.rule(noise.SCHEDSTAT)["resolution"]


def test_watch_sees_a_foreign_busy_process_at_ns_resolution() -> None:
    if not noise.schedstat_works():
        pytest.skip("this kernel has no per-thread schedstat (CONFIG_SCHEDSTATS/SCHED_INFO)")
    # Not our child (children are the measured side): the outer shell exits at once and
    # the busy loop is reparented.
    out = subprocess.run(["sh", "-c", "(timeout 3 sh -c 'while :; do :; done') "
                          ">/dev/null 2>&1 & echo $!"], capture_output=True, text=True,
                         check=True).stdout
    pid = int(out.split()[0])
    try:
        time.sleep(0.05)
        watch = noise.CpuWatch([])
        time.sleep(0.3)
        n = watch.stop()
        assert n.source == noise.SCHEDSTAT
        # On 2 cores the loop gets at least a good share of one over 0.3 s.
        assert n.other_cpu_s > 0.1 and n.core_fraction > noise.NOISY_CORE_FRACTION
        assert any("timeout" in b or "sh(" in b for b in n.busiest), n.busiest
    finally:
        for p in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
            p.kill()
