"""The one list of checked facts and parameters shared by compare and --resume."""

from __future__ import annotations

from typing import Any

from sandbench import comparability
from sandbench.benchmarks.cpu import Cpu, CpuParams
from sandbench.benchmarks.disk import Disk
from sandbench.benchmarks.exec import ExecParams
from sandbench.benchmarks.params import ROUND_KEYS, RoundPolicy
from sandbench.results import migrate_plan
from tests.reportdata import meta


def test_checked_lists_cover_the_issue() -> None:
    assert {"kernel", "cpu_model", "cores", "virtualized"} <= set(
        comparability.CHECKED_HOST_FACTS)
    assert set(comparability.CHECKED_ENV_FACTS) == {"version", "runtime_version", "platform",
                                                    "accel"}


def test_differing_facts_name_what_differs() -> None:
    a, b = meta(["docker", "qemu-vm"]), meta(["docker", "qemu-vm"])
    assert comparability.differing_facts(a, b) == []
    b["host"]["virtualized"] = True
    b["environments"]["qemu-vm"]["accel"] = "tcg"
    assert comparability.differing_facts(a, b) == [
        "host virtualized: A False vs B True", "qemu-vm accel: A None vs B 'tcg'"]


def _policy(rounds: int, max_rounds: int, envs: list[str]) -> dict[str, Any]:
    """plan.rounds[bench] as a run records it: the policy and what each environment got."""
    return {**RoundPolicy(rounds, max_rounds).to_dict(),
            "by_env": {e: {"min": rounds, "max": max_rounds} for e in envs}}


def test_differing_params_ignore_round_settings_only() -> None:
    disk = Disk().params("quick")
    a, b = meta(["host"]), meta(["host"])
    a["plan"]["params"] = {"disk": disk.replace(size_mib=128).to_dict()}
    a["plan"]["rounds"] = {"disk": _policy(3, 3, ["host"])}
    b["plan"]["params"] = {"disk": disk.replace(size_mib=10240).to_dict()}
    b["plan"]["rounds"] = {"disk": _policy(9, 40, ["host"])}
    assert comparability.differing_params(a, b) == ["disk size_mib: A 128 vs B 10240"]
    b["plan"]["params"]["disk"] = disk.replace(size_mib=128, ioengine="libaio").to_dict()
    assert comparability.differing_params(a, b) == ['disk ioengine: A "psync" vs B "libaio"']
    # A parameter only one run recorded (another version's field) counts as differing.
    b["plan"]["params"]["disk"] = {**disk.replace(size_mib=128).to_dict(), "direct": 1}
    assert comparability.differing_params(a, b) == ["disk direct: A (not set) vs B 1"]
    # A benchmark only one run planned has no cells to compare: not a difference.
    b["plan"]["params"]["cpu"] = CpuParams(time_s=600).to_dict()
    b["plan"]["rounds"]["cpu"] = _policy(5, 10, ["host"])
    b["plan"]["benches"] = [*b["plan"]["benches"]]
    a["plan"]["benches"] = [x for x in a["plan"]["benches"] if x != "cpu"]
    assert comparability.differing_params(a, b) == ["disk direct: A (not set) vs B 1"]


def test_old_meta_round_settings_inside_params_are_migrated_not_compared() -> None:
    """An older meta.json kept "rounds" / "max_rounds" inside plan.params (and the counts in
    plan.rounds_by_env / max_rounds_by_env): read_meta's migration moves them to plan.rounds,
    so that they decide nothing, while a real parameter difference still shows."""
    def old(time_s: int, rounds: int, max_rounds: int) -> dict[str, Any]:
        m = meta(["host"])
        m["plan"]["benches"] = ["cpu"]
        m["plan"]["params"] = {"cpu": {"rounds": rounds, "max_rounds": max_rounds,
                                       **CpuParams(time_s=time_s).to_dict()}}
        m["plan"]["rounds"] = {"cpu": rounds}
        m["plan"]["rounds_by_env"] = {"cpu": {"host": rounds}}
        m["plan"]["max_rounds_by_env"] = {"cpu": {"host": max_rounds}}
        return m

    a, b, longer = old(10, 5, 8), old(10, 9, 20), old(600, 5, 8)
    for m in (a, b, longer):
        migrate_plan(m["plan"])
        assert not set(ROUND_KEYS) & set(m["plan"]["params"]["cpu"])
    assert b["plan"]["rounds"]["cpu"] == {"rounds": 9, "max_rounds": 20,
                                          "by_env": {"host": {"min": 9, "max": 20}}}
    assert comparability.differing_params(a, b) == []
    assert comparability.differing_params(a, longer) == ["cpu time_s: A 10 vs B 600"]


def test_resume_differences() -> None:
    m = meta(["docker-gvisor-ptrace"])
    m["environments"]["docker-gvisor-ptrace"]["platform"] = "ptrace"
    host_now = dict(m["host"])
    now = {"docker-gvisor-ptrace": dict(m["environments"]["docker-gvisor-ptrace"])}
    assert comparability.resume_differences(m, host_now, now) == []
    host_now["cores"] = 2
    now["docker-gvisor-ptrace"]["platform"] = "systrap"
    assert comparability.resume_differences(m, host_now, now) == [
        "host cores: run has 12 vs this machine 2",
        "docker-gvisor-ptrace platform: run has 'ptrace' vs this machine 'systrap'"]
    # An environment the run never recorded: its facts count as differing.
    diffs = comparability.resume_differences(m, m["host"], {"crun": {"version": "1.8"}})
    assert diffs == ["crun version: run has None vs this machine '1.8'"]


def test_merge_and_compare_share_one_parameter_rule() -> None:
    """Issue 27 item 5: a merge of hosts refuses exactly what compare would flag; round
    policies (never parameters) and a benchmark only one host ran do not block a merge."""
    cpu = Cpu().params("quick").replace(time_s=10)
    disk = Disk().params("quick").to_dict()
    base = {"plan": {"benches": ["cpu", "disk"],
                     "params": {"cpu": cpu.to_dict(), "disk": disk},
                     "rounds": {"cpu": _policy(5, 8, ["h"]), "disk": _policy(5, 8, ["h"])}}}
    more_rounds = {"plan": {"benches": ["cpu", "disk", "exec"],
                            "params": {"cpu": cpu.to_dict(), "disk": disk,
                                       "exec": ExecParams(n=8).to_dict()},
                            "rounds": {"cpu": _policy(9, 20, ["h"]),
                                       "disk": _policy(5, 8, ["h"]),
                                       "exec": _policy(5, 6, ["h"])}}}
    longer = {"plan": {"benches": ["cpu"], "params": {"cpu": cpu.replace(time_s=600).to_dict()},
                       "rounds": {"cpu": _policy(5, 5, ["h"])}}}
    assert comparability.differing_params(base, more_rounds) == []
    assert comparability.differing_params_among([base, more_rounds], ["h1", "h2"]) == []
    assert comparability.differing_params_among([base, more_rounds, longer],
                                                ["h1", "h2", "h3"]) == [
        "cpu time_s: h1 10 vs h2 10 vs h3 600"]
    assert comparability.differing_params(base, longer) == ["cpu time_s: A 10 vs B 600"]


def test_same_value_whatever_its_number_type() -> None:
    from sandbench.comparability import _same

    assert _same(16, 16.0) and _same([["a", 1]], [["a", 1.0]])
    assert not _same(16, "16") and not _same(True, 1) and not _same(None, 0)
