"""Typed benchmark parameters: one frozen dataclass per benchmark, each field carrying its
unit, bounds and a line of doc, and ONE decoder for profiles, study files and --resume.

    @dataclass(frozen=True)
    class CpuParams(BenchParams):
        time_s: int = param(1, unit="s", doc="length of one sysbench run")

Every number must be finite and above zero unless the field's bounds say otherwise (bounds
are inclusive); bool is not an int; an int is fine for a float field; a list's items are
checked too. Unknown keys are refused with the allowed ones named. The round policy (how
many rounds a cell gets) is not a parameter: it is its own type, RoundPolicy, so that it is
recorded once and never decides whether two runs are comparable.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sandbench.errors import UsageError

#: Upper bound of any round count: beyond it a value is a typo, not a study.
MAX_ROUNDS = 10_000
#: The keys of RoundPolicy, as a study file's [bench.NAME] table and meta.json spell them.
ROUND_KEYS = ("rounds", "max_rounds")

P = TypeVar("P", bound="BenchParams")


def param(default: Any, *, unit: str = "", low: float | None = None,
          high: float | None = None, doc: str = "") -> Any:
    """A parameter field: its default, unit, inclusive bounds (numbers) and one-line doc."""
    meta = {"unit": unit, "low": low, "high": high, "doc": doc}
    if isinstance(default, list):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class BenchParams:
    """Base of every benchmark's parameters (a benchmark with none uses it as is)."""

    def to_dict(self) -> dict[str, Any]:
        """As meta.json records them (plain JSON values)."""
        return dataclasses.asdict(self)

    def replace(self: P, **changes: Any) -> P:
        """A copy with some values changed, validated like a study file's."""
        return decode(type(self), changes, type(self).__name__, base=self)

    @classmethod
    def allowed(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


def is_round_count(v: Any) -> bool:
    """An integer (not a bool) in 1..MAX_ROUNDS: what a round policy and a study file's
    round keys accept."""
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_ROUNDS


@dataclass(frozen=True)
class RoundPolicy:
    """How many rounds a cell gets: at least `rounds` (what the scorecard's tests need), then
    adaptive ones up to `max_rounds` while its medians' intervals are too wide."""

    rounds: int
    max_rounds: int

    def __post_init__(self) -> None:
        for name in ROUND_KEYS:
            v = getattr(self, name)
            if not is_round_count(v):
                raise UsageError(f"{name} must be an integer between 1 and {MAX_ROUNDS}, "
                                 f"got {v!r}")
        if self.max_rounds < self.rounds:
            raise UsageError(f"max_rounds ({self.max_rounds}) must be at least rounds "
                             f"({self.rounds})")

    def to_dict(self) -> dict[str, int]:
        return {"rounds": self.rounds, "max_rounds": self.max_rounds}


@dataclass(frozen=True)
class Profile:
    """A benchmark's settings under one profile: the round policy and the parameters."""

    rounds: RoundPolicy
    params: BenchParams


def _kind(hint: Any, meta: Mapping[str, Any]) -> str:
    if hint is bool:
        return "true or false"
    if hint is str:
        return "a string"
    if hint in (int, float):
        low, high = meta.get("low"), meta.get("high")
        what = "an integer" if hint is int else "a finite number"
        if low is not None and high is not None:
            return f"{what} between {low:g} and {high:g}"
        return ("a positive integer" if hint is int else "a positive finite number") + (
            f" at most {high:g}" if high is not None else "")
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"a list (each item {_kind(typing.get_args(hint)[0], {})})"
    return str(hint)


def _value(hint: Any, value: Any, meta: Mapping[str, Any]) -> Any:
    """The value checked against its field's type and bounds; raises ValueError."""
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is str:
        if isinstance(value, str) and "\0" not in value:
            return value
    elif hint in (int, float):
        ok = isinstance(value, int) if hint is int else isinstance(value, int | float)
        if ok and not isinstance(value, bool) and math.isfinite(value):
            low, high = meta.get("low"), meta.get("high")
            if (value > 0 if low is None else value >= low) and (high is None or value <= high):
                return float(value) if hint is float else value
    elif typing.get_origin(hint) is typing.Literal:
        if any(type(value) is type(a) and value == a for a in typing.get_args(hint)):
            return value
    elif typing.get_origin(hint) is list:
        if isinstance(value, list | tuple):
            (item,) = typing.get_args(hint)
            return [_value(item, v, {}) for v in value]
    else:
        raise TypeError(f"parameter type {hint!r} has no decoder")
    raise ValueError


def check_fields(cls: type[BenchParams], mapping: Mapping[str, Any], where: str,
                 extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Each value of mapping checked against its field of cls (keys in `extra` passed
    through unchecked); raises UsageError, one line: '{where}.{key} must be ..., got ...' or
    '{where}.{key} unknown; allowed: ...'."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, v in mapping.items():
        if key in extra:
            values[key] = v
            continue
        if key not in fields:
            allowed = ", ".join(sorted([*fields, *extra])) or "(none)"
            raise UsageError(f"{where}.{key} unknown; allowed: {allowed}")
        meta = fields[key].metadata
        try:
            values[key] = _value(hints[key], v, meta)
        except ValueError:
            raise UsageError(f"{where}.{key} must be {_kind(hints[key], meta)}, "
                             f"got {v!r}") from None
    return values


def decode(cls: type[P], mapping: Mapping[str, Any], where: str, base: P | None = None) -> P:
    """`cls` built from `mapping`, each value checked (check_fields); missing keys come from
    `base` (or the field defaults)."""
    values = check_fields(cls, mapping, where)
    try:
        return dataclasses.replace(base, **values) if base is not None else cls(**values)
    except TypeError as e:  # a field without default not given
        raise UsageError(f"{where}: {e}") from None


def check_rounds(mapping: Mapping[str, Any], where: str) -> dict[str, int]:
    """The round keys of a [bench.NAME] table, each an integer in 1..MAX_ROUNDS."""
    given = {k: mapping[k] for k in ROUND_KEYS if k in mapping}
    for k, v in given.items():
        if not is_round_count(v):
            raise UsageError(f"{where}.{k} must be an integer between 1 and {MAX_ROUNDS}, "
                             f"got {v!r}")
    return given


def decode_rounds(mapping: Mapping[str, Any], where: str, base: RoundPolicy) -> RoundPolicy:
    """The round policy with `rounds` / `max_rounds` from mapping over `base`: rounds alone
    raises the cap to it where needed; a cap below the minimum is refused."""
    given = check_rounds(mapping, where)
    rounds = given.get("rounds", base.rounds)
    cap = given.get("max_rounds", max(base.max_rounds, rounds))
    if cap < rounds:
        raise UsageError(f"{where}.max_rounds {cap} is below rounds {rounds}")
    return RoundPolicy(rounds, cap)


def decode_profile(cls: type[BenchParams], mapping: Mapping[str, Any], where: str,
                   base: Profile) -> Profile:
    """A [bench.NAME] table (parameters plus rounds / max_rounds) over a profile."""
    values = check_fields(cls, mapping, where, extra=ROUND_KEYS)
    params = {k: v for k, v in values.items() if k not in ROUND_KEYS}
    return Profile(decode_rounds(mapping, where, base.rounds),
                   decode(cls, params, where, base=base.params))


def describe(cls: type[BenchParams]) -> list[str]:
    """One line per parameter: name, type, unit, bounds, doc (for docs and errors)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        unit = f" [{f.metadata['unit']}]" if f.metadata.get("unit") else ""
        out.append(f"{f.name}{unit}: {_kind(hints[f.name], f.metadata)}"
                   + (f"; {f.metadata['doc']}" if f.metadata.get("doc") else ""))
    return out
