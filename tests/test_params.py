"""Typed benchmark parameters (issue 27 item 2): one dataclass per benchmark with its types,
units and bounds, one decoder for profiles, study files and --resume, the round policy its
own type recorded once in meta.json."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import pytest

from sandbench.benchmarks.base import Benchmark
from sandbench.benchmarks.disk import Disk
from sandbench.benchmarks.params import (
    BenchParams,
    Profile,
    RoundPolicy,
    decode,
    decode_profile,
    describe,
    param,
)
from sandbench.benchmarks.registry import all_benchmarks
from sandbench.environments.registry import all_environments
from sandbench.errors import UsageError
from sandbench.study import Plan


@dataclass(frozen=True)
class Toy(BenchParams):
    n: int = param(4, unit="calls", high=100, doc="how many")
    gap_s: float = param(0.5, unit="s", low=0.0, high=10.0, doc="wait between")
    mode: Literal["a", "b"] = param("a", doc="which way")
    on: bool = param(True, doc="switch")
    sizes: list[str] = param(["16k"], doc="block sizes")


TOY = Profile(RoundPolicy(5, 8), Toy())


def test_every_benchmark_declares_typed_documented_parameters() -> None:
    for b in all_benchmarks():
        assert issubclass(b.Params, BenchParams), b.name
        assert b.Params.__dataclass_params__.frozen, b.name  # type: ignore[attr-defined]
        for profile in ("quick", "paper"):
            p = b.params(profile)
            assert type(p) is b.Params, (b.name, profile)
            # The shipped values decode as they are: no profile lies outside its own bounds.
            assert decode(b.Params, p.to_dict(), b.name) == p, (b.name, profile)
            assert isinstance(b.round_policy(profile), RoundPolicy)
            assert not {"rounds", "max_rounds"} & set(p.to_dict()), (b.name, profile)
        for f in dataclasses.fields(b.Params):
            assert f.metadata.get("doc"), f"{b.name}.{f.name} has no doc"


@pytest.mark.parametrize(("given", "message"), [
    ({"nn": 3}, "bench.toy.nn unknown; allowed: gap_s, max_rounds, mode, n, on, rounds, sizes"),
    ({"n": 0}, "bench.toy.n must be a positive integer at most 100, got 0"),
    ({"n": 101}, "bench.toy.n must be a positive integer at most 100, got 101"),
    ({"n": 2.5}, "bench.toy.n must be a positive integer at most 100, got 2.5"),
    ({"n": True}, "bench.toy.n must be a positive integer at most 100, got True"),
    ({"n": "4"}, "bench.toy.n must be a positive integer at most 100, got '4'"),
    ({"gap_s": float("nan")}, "bench.toy.gap_s must be a finite number between 0 and 10"),
    ({"gap_s": float("inf")}, "bench.toy.gap_s must be a finite number between 0 and 10"),
    ({"mode": "c"}, "bench.toy.mode must be one of 'a', 'b', got 'c'"),
    ({"on": 1}, "bench.toy.on must be true or false, got 1"),
    ({"sizes": "16k"}, "bench.toy.sizes must be a list (each item a string), got '16k'"),
    ({"sizes": ["16k", 4]}, "bench.toy.sizes must be a list (each item a string)"),
    ({"rounds": 0}, "bench.toy.rounds must be an integer between 1 and 10000, got 0"),
    ({"rounds": 9, "max_rounds": 6}, "bench.toy.max_rounds 6 is below rounds 9"),
])
def test_bad_values_are_refused_in_one_line(given: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError) as err:
        decode_profile(Toy, given, "bench.toy", TOY)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_decoding_over_a_profile() -> None:
    got = decode_profile(Toy, {"gap_s": 2, "sizes": ["1m"], "rounds": 12}, "bench.toy", TOY)
    # An integer for a float field is that float; what is not given stays the profile's;
    # rounds alone above the cap raises the cap to it.
    assert got.params == Toy(n=4, gap_s=2.0, sizes=["1m"])
    assert isinstance(got.params.gap_s, float)
    assert got.rounds == RoundPolicy(12, 12)
    assert decode_profile(Toy, {"max_rounds": 20}, "x", TOY).rounds == RoundPolicy(5, 20)
    assert Toy().replace(n=7).n == 7
    with pytest.raises(UsageError, match="Toy.n must be"):
        Toy().replace(n=-1)
    with pytest.raises(UsageError, match="max_rounds .3. must be at least rounds .5."):
        RoundPolicy(5, 3)
    lines = describe(Toy)
    assert lines[0] == "n [calls]: a positive integer at most 100; how many"
    assert len(lines) == len(dataclasses.fields(Toy))


def test_disk_jobs_are_checked_pairs() -> None:
    p = Disk().params("quick")
    assert p.replace(jobs=[["randread", "4k"]]).jobs == [["randread", "4k"]]
    for bad in ([["sideways", "16k"]], [["seqread", "16q"]], [["seqread"]], []):
        with pytest.raises(UsageError, match="disk jobs"):
            p.replace(jobs=bad)


def _bench(name: str) -> Benchmark:
    return next(b for b in all_benchmarks() if b.name == name)


def test_plan_records_the_round_policy_once() -> None:
    host = next(e for e in all_environments() if e.name == "host")
    cpu, syscall = _bench("cpu"), _bench("syscall")
    plan = Plan(profile="quick", envs=[host], benches=[cpu, syscall],
                overrides={"cpu": {"time_s": 3, "rounds": 7}})
    d = plan.describe()
    assert d["params"]["cpu"] == {**cpu.params("quick").to_dict(), "time_s": 3}
    assert d["rounds"]["cpu"] == {"rounds": 7, "max_rounds": max(7, cpu.round_policy(
        "quick").max_rounds), "by_env": {"host": {"min": 7, "max": d["rounds"]["cpu"][
            "max_rounds"]}}}
    assert d["rounds"]["syscall"]["rounds"] == syscall.round_policy("quick").rounds
    for p in d["params"].values():
        assert not {"rounds", "max_rounds"} & set(p)
    # The session gets the dataclass, never a dict.
    assert plan.params(cpu) == cpu.params("quick").replace(time_s=3)
    fixed = Plan(profile="quick", envs=[host], benches=[cpu], rounds_override=2)
    assert fixed.describe()["rounds"]["cpu"]["by_env"] == {"host": {"min": 2, "max": 2}}
    with pytest.raises(UsageError, match="bench.cpu.threads must be"):
        Plan(profile="quick", envs=[host], benches=[cpu],
             overrides={"cpu": {"threads": 0}}).check()
