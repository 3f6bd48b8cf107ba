"""The results directory: an append-only NDJSON journal, run metadata and raw tool outputs.

Layout of a results directory (schema 1):

  meta.json       schema, tool version, profile, plan, host facts, each environment's facts
  results.jsonl   one JSON record per line, fsync'd as written:
                    {"type": "sample", "env", "bench", "metric", "value", "unit", "round",
                     "params", "timestamp", "raw", "flags"}
                    {"type": "failure", "env", "bench", "round", "error", "params", "timestamp"}
                    {"type": "not_applicable", "env", "bench", "reason", "timestamp"}
                    {"type": "cell", ...} where a cell's rounds ended and why
                    {"type": "timing", "bench", "wall_s", "spans"} where a benchmark's time went
  raw/            tool outputs as printed (fio/iperf3/sysbench JSON, helper output), named by
                  env/bench/round; a sample's "raw" field is the path relative to the directory
  report.*        written by `sandbench report` from the above only
"""

from __future__ import annotations

import functools
import json
import math
import os
import types
import typing
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Self

from sandbench.errors import UsageError

SCHEMA_VERSION = 1
JOURNAL = "results.jsonl"
META = "meta.json"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


#: What a metric measures. The kind fixes the usual direction; a metric may override it.
KINDS = {
    "latency": "lower",  # time per operation (getpid, fio completion, request)
    "time": "lower",  # duration of one thing (a start, a teardown)
    "rate": "higher",  # work per time (Gbit/s, tx/s, events/s, IOPS)
    "size": "lower",  # memory, bytes held
    "count": "lower",  # events that should not happen (errors, retransmits)
    "amount": "higher",  # work done in a fixed time (sysbench events), sandboxes that fit
}
DIRECTIONS = ("higher", "lower")


class JsonRecord:
    """A dataclass written as a JSON object and read back as the same class: `from_dict`
    checks every field against its annotation (finite numbers, a round of `min_round` or
    more, a raw path inside the results directory) and says in one line (SchemaError) which
    file, line, field and value it cannot read. Keys it does not declare are ignored, so a
    record a later sandbench added a field to still reads; fields added since schema 1 have
    defaults, so records older than them read too."""

    #: What the record is called in messages ("sample", "ramp step").
    what: ClassVar[str] = "record"
    #: The lowest round a record of this class may carry.
    min_round: ClassVar[int] = 0

    @classmethod
    def from_dict(cls, rec: Any, where: str) -> Self:
        if not isinstance(rec, dict):
            raise SchemaError(f"{where}: not a JSON object but {_describe(rec)}")
        values: dict[str, Any] = {}
        klass: type = cls  # mypy does not see a type[Self] as hashable for the cache
        for name, hint, required in _record_fields(klass):
            if name not in rec:
                if required:
                    raise SchemaError(f"{where}: {cls.what} record without {name!r}")
                continue
            value = rec[name]
            if not _type_ok(hint, value):
                raise SchemaError(f"{where}: {cls.what} field {name!r} must be "
                                  f"{_wanted(hint)}, got {_describe(value)}")
            values[name] = value
        if values.get("round", cls.min_round) < cls.min_round:
            raise SchemaError(f"{where}: {cls.what} field 'round' must be {cls.min_round} or "
                              f"more, got {values['round']}")
        raw = values.get("raw")
        if raw is not None and not safe_relative(raw):
            raise SchemaError(f"{where}: {cls.what} field 'raw' must be a path inside the "
                              f"results directory, got {_describe(raw)}")
        make: Callable[..., Self] = cls  # a dataclass: its fields are its keywords
        return make(**values)


@dataclass(frozen=True)
class Measurement:
    """What a benchmark round returns; the runner turns it into a Sample.

    Every measurement declares its kind (KINDS) and so its direction (higher or lower is
    better): compare, stats, the scorecard and the report read the meaning from the journal,
    never from metric names. Use the constructors: Measurement.latency(...), .rate(...)."""

    metric: str
    value: float
    unit: str
    raw: str | None = None
    #: Parameters that distinguish cells of one benchmark (disk: pattern and block size).
    params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    kind: str = ""
    direction: str = ""

    def __post_init__(self) -> None:
        if self.kind and self.kind not in KINDS:
            raise ValueError(f"metric {self.metric}: unknown kind {self.kind!r}; "
                             f"valid: {', '.join(KINDS)}")
        if self.kind and not self.direction:
            object.__setattr__(self, "direction", KINDS[self.kind])
        if self.direction and self.direction not in DIRECTIONS:
            raise ValueError(f"metric {self.metric}: direction {self.direction!r} is not "
                             "'higher' or 'lower'")

    @classmethod
    def of(cls, kind: str, metric: str, value: float, unit: str, **kw: Any) -> Measurement:
        return cls(metric, value, unit, kind=kind, **kw)

    @classmethod
    def latency(cls, metric: str, value: float, unit: str, **kw: Any) -> Measurement:
        return cls.of("latency", metric, value, unit, **kw)

    @classmethod
    def time(cls, metric: str, value: float, unit: str = "s", **kw: Any) -> Measurement:
        return cls.of("time", metric, value, unit, **kw)

    @classmethod
    def rate(cls, metric: str, value: float, unit: str, **kw: Any) -> Measurement:
        return cls.of("rate", metric, value, unit, **kw)

    @classmethod
    def size(cls, metric: str, value: float, unit: str = "MiB", **kw: Any) -> Measurement:
        return cls.of("size", metric, value, unit, **kw)

    @classmethod
    def count(cls, metric: str, value: float, unit: str = "", **kw: Any) -> Measurement:
        return cls.of("count", metric, value, unit, **kw)

    @classmethod
    def amount(cls, metric: str, value: float, unit: str, **kw: Any) -> Measurement:
        return cls.of("amount", metric, value, unit, **kw)


@dataclass(frozen=True)
class Sample(JsonRecord):
    env: str
    bench: str
    metric: str
    value: float
    unit: str
    round: int
    params: dict[str, Any]
    timestamp: str
    raw: str | None = None
    flags: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    kind: str = ""
    direction: str = ""
    type: str = "sample"

    what: ClassVar[str] = "sample"


@dataclass(frozen=True)
class Failure(JsonRecord):
    env: str
    bench: str
    round: int
    error: str
    params: dict[str, Any]
    timestamp: str
    #: Command, exit status, output tails, sandbox state: what shows the cause.
    evidence: dict[str, Any] = field(default_factory=dict)
    type: str = "failure"

    what: ClassVar[str] = "failure"
    #: A failure of a session's teardown has round -1.
    min_round: ClassVar[int] = -1


@dataclass(frozen=True)
class NotApplicableCell(JsonRecord):
    """A benchmark that has no meaning in an environment (errors.NotApplicable): the reason
    instead of a number; the report shows the cell as "not applicable", not as a failure."""

    env: str
    bench: str
    reason: str
    timestamp: str
    evidence: dict[str, Any] = field(default_factory=dict)
    type: str = "not_applicable"

    what: ClassVar[str] = "not_applicable"


@dataclass(frozen=True)
class CellEnd(JsonRecord):
    """The end of one (env, bench) cell's rounds and why it stopped: "converged" (every
    median's interval within the target), "cap" (max_rounds), "budget" (the study's time),
    "fixed" (--rounds), "failed" (the environment could not go on), "not applicable" (the
    benchmark has no meaning there: a NotApplicableCell record gives the reason)."""

    env: str
    bench: str
    rounds: int
    stop_reason: str
    rel_halfwidth: float | None
    timestamp: str
    type: str = "cell"

    what: ClassVar[str] = "cell"


@dataclass(frozen=True)
class Timing(JsonRecord):
    """Where one benchmark's wall time went (seconds on the monotonic clock): "setup"
    (environments' set-up and sessions' entry), "rounds" (the benchmark's own round code),
    "isolate" (freezing the other environments, thawing the measured one), "noise" (the
    CPU watch around each round), "journal" (writes), "teardown" (sessions' exit) and
    "other" (what the runner spent between them). bench "_run" holds the run-wide spans."""

    bench: str
    wall_s: float
    spans: dict[str, float]
    timestamp: str
    type: str = "timing"

    what: ClassVar[str] = "timing"


#: What the journal holds.
Record = Sample | Failure | CellEnd | Timing | NotApplicableCell


@dataclass(frozen=True)
class HostSample(Sample):
    """A sample as a report holds it: `env` is the environment's label ("env @ host" in a
    report that merges several machines), `host` that machine's label and `source` the index
    of the results directory it came from (where its raw outputs are). Never journaled."""

    host: str = ""
    source: int = 0

    @classmethod
    def of(cls, sample: Sample, host: str, source: int) -> HostSample:
        return cls(**{f.name: getattr(sample, f.name) for f in fields(Sample)},
                   host=host, source=source)


class SchemaError(UsageError):
    """A results directory this sandbench cannot read (unknown schema, a corrupt or wrong-typed
    meta.json or journal line): the CLI says it in one line and exits with 2, like bad flags."""


#: The journal's record types, by their "type" field.
RECORD_TYPES: dict[str, type[Record]] = {"sample": Sample, "failure": Failure, "cell": CellEnd,
                                 "timing": Timing, "not_applicable": NotApplicableCell}


def _describe(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_ok(hint: Any, value: Any) -> bool:
    """Whether a JSON value fits a record field's annotation (str, int, float, bool, dict,
    list[str] and their `| None`). Numbers must be finite: the journal never holds a NaN
    the tool measured, so one there was not written by it."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(a, value) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return (isinstance(value, int | float) and not isinstance(value, bool)
                and math.isfinite(value))
    if hint is str:
        return isinstance(value, str)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if origin is list or hint is list:
        return isinstance(value, list) and (
            not args or args[0] is Any or all(_type_ok(args[0], v) for v in value))
    return True


@functools.cache
def _record_fields(cls: type) -> tuple[tuple[str, Any, bool], ...]:
    """(name, annotation, required) of a record class's fields."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name],
                  f.default is MISSING and f.default_factory is MISSING)
                 for f in fields(cls))


_TYPE_WORDS = {str: "a string", int: "an integer", float: "a finite number", bool: "true/false"}


def _wanted(hint: Any) -> str:
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if union and args else hint
    origin = typing.get_origin(base) or base
    word = _TYPE_WORDS.get(base) or {dict: "an object", list: "a list"}.get(origin, str(base))
    return word + (" or null" if type(None) in typing.get_args(hint) else "")


def safe_relative(raw: str) -> bool:
    """A raw-output path a results directory may hold: relative, inside it, no NUL."""
    p = PurePosixPath(raw)
    return bool(raw) and "\0" not in raw and not p.is_absolute() and ".." not in p.parts


def raw_file(directory: Path, raw: str) -> Path | None:
    """The raw output a sample names, or None when the name (or a symlink on the way)
    leads outside its results directory: a merged directory from another host is input."""
    if not safe_relative(raw):
        return None
    root = directory.resolve()
    path = (directory / raw).resolve()
    return path if path.is_relative_to(root) else None


def parse_record(rec: Any, where: str) -> Record:
    """The record a journal line holds, as the class that wrote it (by its "type" field), if
    it is one this sandbench writes; otherwise SchemaError naming the line, the field and what
    it must be. Every journal record is read here: a migration of an older shape goes here."""
    if not isinstance(rec, dict):
        raise SchemaError(f"{where}: not a JSON object but {_describe(rec)}")
    kind = rec.get("type")
    cls = RECORD_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise SchemaError(f"{where}: unknown record type {_describe(kind)}; known: "
                          f"{', '.join(RECORD_TYPES)}")
    return cls.from_dict(rec, where)


class Journal:
    """Append-only journal. Every record is flushed and fsync'd before the call returns, so a
    kill -9 loses at most the line being written; readers skip a torn last line."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / JOURNAL
        _drop_torn_tail(self.path)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives with the run

    def append(self, record: Record) -> None:
        self.append_many([record])

    def append_many(self, records: Sequence[Record]) -> None:
        """All records of one cell in a single write(2): a kill leaves the whole cell or none
        of it, so a resumed run never sees half a cell."""
        blob = "".join(
            json.dumps(asdict(r), sort_keys=True, separators=(",", ":")) + "\n" for r in records
        )
        self._fh.write(blob)
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop_torn_tail(path: Path) -> None:
    """Before appending to a journal a killed run left, cut a torn last line (a crash mid-write):
    appended records would otherwise follow it and it would sit mid-file. Whole lines are
    never touched."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        data = fh.read()
        keep = data.rfind(b"\n") + 1
        warnings.warn(
            f"{path}: dropping a torn last line ({len(data) - keep} bytes) before resuming",
            stacklevel=3,
        )
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())


def read_records(directory: Path) -> Iterator[Record]:
    """Every intact record of a journal. A torn last line (a crash mid-write) is skipped with a
    warning; a corrupt line elsewhere is an error, since that is not what a crash leaves."""
    path = directory / JOURNAL
    if not path.exists():
        return
    lines = path.read_bytes().split(b"\n")
    # The file ends with "\n" when intact, so the last element is b"".
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except ValueError:
            if i == len(lines) - 1:
                warnings.warn(
                    f"{path}: ignoring a torn last line ({len(raw)} bytes), left by an "
                    "interrupted run",
                    stacklevel=2,
                )
                continue
            raise SchemaError(f"{path}: line {i + 1} is not JSON") from None
        yield parse_record(rec, f"{path}: line {i + 1}")


def read_samples(directory: Path) -> list[Sample]:
    return [r for r in read_records(directory) if isinstance(r, Sample)]


def read_failures(directory: Path) -> list[Failure]:
    return [r for r in read_records(directory) if isinstance(r, Failure)]


def read_not_applicable(directory: Path) -> list[NotApplicableCell]:
    return [r for r in read_records(directory) if isinstance(r, NotApplicableCell)]


def finished_cells(directory: Path) -> set[tuple[str, str, int]]:
    """(env, bench, round) of every round with an outcome (samples or a failure)."""
    return {(r.env, r.bench, r.round) for r in read_records(directory)
            if isinstance(r, Sample | Failure)}


def read_timings(directory: Path) -> list[Timing]:
    return [r for r in read_records(directory) if isinstance(r, Timing)]


def read_cell_ends(directory: Path) -> list[CellEnd]:
    return [r for r in read_records(directory) if isinstance(r, CellEnd)]


def cell_progress(directory: Path) -> tuple[set[tuple[str, str, int]], set[tuple[str, str]]]:
    """For resume: the rounds with an outcome, and the (env, bench) cells already ended."""
    rounds: set[tuple[str, str, int]] = set()
    ended: set[tuple[str, str]] = set()
    for r in read_records(directory):
        if isinstance(r, Sample | Failure):
            rounds.add((r.env, r.bench, r.round))
        elif isinstance(r, CellEnd):
            ended.add((r.env, r.bench))
    return rounds, ended


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    """Atomically (write + rename) so a crash never leaves half a meta.json."""
    meta = {"schema": SCHEMA_VERSION, **meta}
    tmp = directory / (META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, directory / META)


def read_meta(directory: Path) -> dict[str, Any]:
    path = directory / META
    if not path.exists():
        raise SchemaError(f"{directory}: no {META}; not a sandbench results directory")
    try:
        meta = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise SchemaError(f"{path}: not valid JSON ({str(e).splitlines()[0]}); "
                          "a truncated or damaged meta.json") from None
    if not isinstance(meta, dict):
        raise SchemaError(f"{path}: not a JSON object but {_describe(meta)}")
    schema = meta.get("schema")
    if schema != SCHEMA_VERSION:
        raise SchemaError(
            f"{path}: results schema {schema!r} is not the one this sandbench reads "
            f"({SCHEMA_VERSION}); use the sandbench version that wrote it"
        )
    if isinstance(meta.get("plan"), dict):
        migrate_plan(meta["plan"])
    _check_meta(meta, path)
    return meta


#: Round settings the previous meta.json kept inside a benchmark's parameters.
_OLD_ROUND_KEYS = ("rounds", "max_rounds")


def migrate_plan(plan: dict[str, Any]) -> None:
    """The one migration of an older meta.json's plan, in place: the round policy used to sit
    in three places (plan.rounds as an int per benchmark, "rounds"/"max_rounds" inside
    plan.params, plan.rounds_by_env and plan.max_rounds_by_env); it is now plan.rounds[bench]
    = {"rounds", "max_rounds", "by_env": {env: {"min", "max"}}} and params hold none. The
    disk benchmark's paper grid ("patterns" x "block_sizes") is now its "jobs" list. A plan
    in the current shape, or one too damaged to read, is left as it is (_check_meta says
    what is wrong)."""
    params, rounds = plan.get("params"), plan.get("rounds")
    if not isinstance(params, dict) or not isinstance(rounds, dict | type(None)):
        return
    old = (any(isinstance(v, int) for v in (rounds or {}).values())
           or "rounds_by_env" in plan or "max_rounds_by_env" in plan
           or any(isinstance(p, dict) and any(k in p for k in _OLD_ROUND_KEYS)
                  for p in params.values()))
    if not old:
        return
    by_env = plan.pop("rounds_by_env", None) or {}
    max_by_env = plan.pop("max_rounds_by_env", None) or {}
    new: dict[str, Any] = {}
    for bench, p in params.items():
        if not isinstance(p, dict):
            continue
        low = p.pop("rounds", None)
        if not isinstance(low, int):
            low = (rounds or {}).get(bench)
        high = p.pop("max_rounds", low)
        envs: dict[str, Any] = by_env.get(bench) or {} if isinstance(by_env, dict) else {}
        maxes: dict[str, Any] = max_by_env.get(bench) or {} if isinstance(max_by_env, dict) else {}
        if not isinstance(envs, dict) or not isinstance(maxes, dict):
            envs, maxes = {}, {}
        new[bench] = {"rounds": low, "max_rounds": high,
                      "by_env": {e: {"min": n, "max": maxes.get(e, n)} for e, n in envs.items()}}
        if bench == "disk" and "jobs" not in p and "patterns" in p and "block_sizes" in p:
            pats, sizes = p.pop("patterns"), p.pop("block_sizes")
            if isinstance(pats, list) and isinstance(sizes, list):
                p["jobs"] = [[a, b] for a in pats for b in sizes]
    plan["rounds"] = new


#: meta.json's keys and what each must be when present (readers tolerate an absent one).
_META_TYPES: dict[str, Any] = {
    "tool_version": str, "created": str, "finished": str, "profile": str, "baseline": str,
    "plan": dict, "host": dict, "environments": dict[str, dict[str, Any]],
    "unavailable": dict[str, str], "resources": dict, "resumed": list[str],
    "resumed_host": list[dict[str, Any]],
}
_PLAN_TYPES: dict[str, Any] = {
    "envs": list[str], "benches": list[str], "rounds": dict[str, dict[str, Any]],
    "params": dict[str, dict[str, Any]], "rounds_override": int | None, "timeouts": dict,
    "seed": int,
}


def _check_map(doc: dict[str, Any], types: dict[str, Any], where: str) -> None:
    for key, hint in types.items():
        if key not in doc:
            continue
        value = doc[key]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        ok = _type_ok(hint, value)
        if ok and origin is dict and len(args) == 2:
            ok = all(isinstance(k, str) and _type_ok(args[1], v) for k, v in value.items())
        if not ok:
            raise SchemaError(f"{where}: {key!r} must be {_wanted(hint)}, got "
                              f"{_describe(value)}")


def _check_meta(meta: dict[str, Any], path: Path) -> None:
    """Wrong-typed fields of meta.json as one-line errors; a benchmark parameter that is a
    non-finite number is refused too (resume would measure with it)."""
    _check_map(meta, _META_TYPES, str(path))
    plan = meta.get("plan") or {}
    _check_map(plan, _PLAN_TYPES, f"{path}: plan")
    for bench, params in (plan.get("params") or {}).items():
        for k, v in params.items():
            if isinstance(v, float) and not math.isfinite(v):
                raise SchemaError(f"{path}: plan.params.{bench}.{k} must be a finite number, "
                                  f"got {v!r}")


def require_plan(meta: dict[str, Any], path: Path) -> None:
    """What resuming a run needs of its meta.json beyond read_meta's types."""
    missing = [k for k in ("profile", "plan") if k not in meta]
    missing += [f"plan.{k}" for k in ("envs", "benches", "params") if k not in
                (meta.get("plan") or {})]
    if missing:
        raise SchemaError(f"{path / META}: no {', '.join(missing)}; not a run sandbench can "
                          "resume")
