"""Study files: everything `sandbench run` flags can say, plus per-benchmark parameters and
step timeouts, in TOML. Validated completely before anything starts; every error names the
file, the key and what is allowed.

    profile = "quick"                 # quick | paper
    envs = ["host", "runc"]           # default: every available environment
    benches = ["startup", "syscall"]  # default: all
    rounds = 5                        # fixes every benchmark's rounds (no adaptive rounds)
    budget = 30                       # minutes: adaptive rounds stop there
    seccomp = false                   # every environment without its seccomp profile
    out = "results/my-study"
    baseline = "host"

    [timeouts]                        # seconds, per external step
    start = 60

    [bench.memory]                    # any field of the benchmark's Params dataclass,
    count = 20                        # checked by its type and bounds (benchmarks/params.py)
    rounds = 10                       # and its round policy: rounds, max_rounds
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbench.benchmarks.params import (
    MAX_ROUNDS,
    ROUND_KEYS,
    BenchParams,
    check_fields,
    check_rounds,
)
from sandbench.errors import UsageError

TOP_KEYS = ("profile", "envs", "benches", "rounds", "budget", "seccomp", "out", "baseline",
            "timeouts", "bench")
MAX_FILE_BYTES = 1 << 20


@dataclass
class Study:
    profile: str | None = None
    envs: list[str] | None = None
    benches: list[str] | None = None
    rounds: int | None = None
    budget_s: float | None = None
    seccomp: bool | None = None
    out: str | None = None
    baseline: str | None = None
    timeouts: dict[str, float] = field(default_factory=dict)
    #: Per benchmark, its [bench.NAME] table as checked: parameters, rounds, max_rounds.
    bench: dict[str, dict[str, Any]] = field(default_factory=dict)


def _names(path: Path, key: str, value: Any, known: list[str]) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise UsageError(
            f"{path}: {key} must be a non-empty list of names from: {', '.join(known)}"
        )
    for v in value:
        if v not in known:
            raise UsageError(f"{path}: {key}: unknown name {v!r}; allowed: {', '.join(known)}")
    if len(set(value)) != len(value):
        raise UsageError(f"{path}: {key}: a name is listed twice")
    return list(value)


#: Upper bounds of the top-level numbers: beyond them a value is a typo, not a study
#: (MAX_ROUNDS, params.py's, bounds every round count).
MAX_BUDGET_MIN = 7 * 24 * 60.0
MAX_TIMEOUT_S = 86_400.0


def _positive_number(path: Path, key: str, value: Any, integer: bool,
                     bounds: tuple[float, float] | None = None) -> Any:
    """A finite number above zero (TOML's nan and inf are refused), within `bounds`."""
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    kind = "a positive integer" if integer else "a positive finite number"
    if isinstance(value, bool) or not ok_type or not math.isfinite(value) or value <= 0:
        raise UsageError(f"{path}: {key} must be {kind}, got {value!r}")
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise UsageError(f"{path}: {key} must be between {bounds[0]:g} and {bounds[1]:g}, "
                         f"got {value!r}")
    return value


def load(
    path: Path,
    env_names: list[str],
    bench_params: dict[str, type[BenchParams]],
    profiles: tuple[str, ...],
    timeout_keys: list[str],
) -> Study:
    """Parse and validate a study file against the known environments, benchmarks and their
    parameters (each benchmark's Params dataclass). Raises UsageError naming file and key;
    what depends on the profile (max_rounds below a profile's rounds) is the plan's check."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise UsageError(f"{path}: larger than {MAX_FILE_BYTES} bytes; not a study file")
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--study {str(path)!r}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"--study {str(path)!r} is a directory, not a TOML file") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: invalid TOML: {e}") from None
    study = Study()
    for key in data:
        if key not in TOP_KEYS:
            raise UsageError(f"{path}: unknown key {key!r}; allowed: {', '.join(TOP_KEYS)}")
    if "profile" in data:
        if data["profile"] not in profiles:
            raise UsageError(
                f"{path}: profile {data['profile']!r} unknown; allowed: {', '.join(profiles)}"
            )
        study.profile = data["profile"]
    if "envs" in data:
        study.envs = _names(path, "envs", data["envs"], env_names)
    if "benches" in data:
        study.benches = _names(path, "benches", data["benches"], list(bench_params))
    if "rounds" in data:
        study.rounds = _positive_number(path, "rounds", data["rounds"], integer=True,
                                        bounds=(1, MAX_ROUNDS))
    if "budget" in data:
        study.budget_s = 60.0 * float(
            _positive_number(path, "budget", data["budget"], integer=False,
                             bounds=(0.1, MAX_BUDGET_MIN)))
    if "seccomp" in data:
        if not isinstance(data["seccomp"], bool):
            raise UsageError(f"{path}: seccomp must be true or false, got {data['seccomp']!r}")
        study.seccomp = data["seccomp"]
    for key in ("out", "baseline"):
        if key in data:
            if not isinstance(data[key], str) or not data[key] or "\0" in data[key]:
                raise UsageError(f"{path}: {key} must be a non-empty string")
            setattr(study, key, data[key])
    if study.baseline is not None and study.baseline not in env_names:
        raise UsageError(
            f"{path}: baseline {study.baseline!r} unknown; allowed: {', '.join(env_names)}"
        )
    timeouts = data.get("timeouts", {})
    if not isinstance(timeouts, dict):
        raise UsageError(f"{path}: timeouts must be a table of step = seconds")
    for k, v in timeouts.items():
        if k not in timeout_keys:
            raise UsageError(f"{path}: timeouts.{k} unknown; allowed: {', '.join(timeout_keys)}")
        study.timeouts[k] = float(_positive_number(path, f"timeouts.{k}", v, integer=False,
                                                   bounds=(0.1, MAX_TIMEOUT_S)))
    benches = data.get("bench", {})
    if not isinstance(benches, dict):
        raise UsageError(f"{path}: bench must be a table of [bench.NAME] sections")
    for name, params in benches.items():
        if name not in bench_params:
            raise UsageError(
                f"{path}: [bench.{name}] unknown benchmark; allowed: {', '.join(bench_params)}"
            )
        if not isinstance(params, dict):
            raise UsageError(f"{path}: bench.{name} must be a table of parameters")
        where = f"{path}: bench.{name}"
        check_rounds(params, where)
        check_fields(bench_params[name], params, where, extra=ROUND_KEYS)
        study.bench[name] = dict(params)
    return study
