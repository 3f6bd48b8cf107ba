"""The one list of checked facts and parameters shared by compare and --resume."""

from __future__ import annotations

from sandbench import comparability
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


def test_differing_params_ignore_round_settings_only() -> None:
    a, b = meta(["host"]), meta(["host"])
    a["plan"]["params"] = {"disk": {"rounds": 3, "size": "128m", "bs": ["16k"]}}
    b["plan"]["params"] = {"disk": {"rounds": 9, "min_rounds": 5, "adaptive_target": 0.05,
                                    "size": "10g", "bs": ["16k"]}}
    assert comparability.differing_params(a, b) == ['disk size: A "128m" vs B "10g"']
    b["plan"]["params"]["disk"]["size"] = "128m"
    b["plan"]["params"]["disk"]["direct"] = 1
    assert comparability.differing_params(a, b) == ["disk direct: A (not set) vs B 1"]
    # A benchmark only one run planned has no cells to compare: not a difference.
    b["plan"]["params"]["cpu"] = {"time_s": 600}
    b["plan"]["benches"] = [*b["plan"]["benches"]]
    a["plan"]["benches"] = [x for x in a["plan"]["benches"] if x != "cpu"]
    assert comparability.differing_params(a, b) == ["disk direct: A (not set) vs B 1"]


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
    settings (what compare ignores) and a benchmark only one host ran do not block a merge."""
    base = {"plan": {"benches": ["cpu", "disk"],
                     "params": {"cpu": {"time_s": 10, "rounds": 5, "max_rounds": 8},
                                "disk": {"size": "64m"}}}}
    more_rounds = {"plan": {"benches": ["cpu", "disk", "exec"],
                            "params": {"cpu": {"time_s": 10, "rounds": 9, "max_rounds": 20},
                                       "disk": {"size": "64m"}, "exec": {"n": 8}}}}
    longer = {"plan": {"benches": ["cpu"], "params": {"cpu": {"time_s": 600, "rounds": 5}}}}
    assert comparability.differing_params(base, more_rounds) == []
    assert comparability.differing_params_among([base, more_rounds], ["h1", "h2"]) == []
    assert comparability.differing_params_among([base, more_rounds, longer],
                                                ["h1", "h2", "h3"]) == [
        "cpu time_s: h1 10 vs h2 10 vs h3 600"]
    assert comparability.differing_params(base, longer) == ["cpu time_s: A 10 vs B 600"]
