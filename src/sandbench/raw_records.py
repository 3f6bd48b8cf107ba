"""The raw outputs the fleet benchmarks keep beside the journal, as the classes that write and
read them: density's ramp (raw/.../ramp.json, one RampStep per sandbox started) and burst's
start times (raw/.../burst.json). The report draws its density and burst figures from these,
so their shape is declared once, here, and checked on the way in like the journal's records.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from sandbench.results import JsonRecord, SchemaError

#: Marks the fields a ramp step holds only when measured (absent, never null, on disk).
_WHEN_MEASURED = {"omit_none": True}


@dataclass(frozen=True, kw_only=True)
class RampStep(JsonRecord):
    """One sandbox more in a density ramp: the host as it stood once the n-th was up. The
    memory fields are there every k-th step (the mean of the last k sandboxes), or the note
    says why none could be counted. The figures need n, its start time and MemAvailable;
    the rest may be missing from ramps older than them (psi_some_avg10 is null where the
    kernel has no PSI)."""

    what: ClassVar[str] = "ramp step"

    n: int
    start_time_s: float
    prepare_s: float | None = None
    mem_available_mib: float
    psi_some_avg10: float | None = None
    # CPU, not memory, may be what fills first: idle sandboxes that still wake (a sentry's
    # timers) slow every later start on a small host.
    load_1m: float | None = None
    t_s: float | None = None
    memory_note: str | None = field(default=None, metadata=_WHEN_MEASURED)
    private_dirty_mib: float | None = field(default=None, metadata=_WHEN_MEASURED)
    pss_mib: float | None = field(default=None, metadata=_WHEN_MEASURED)

    def to_dict(self) -> dict[str, Any]:
        """The step as ramp.json holds it, in the shape it always had: the memory fields
        only where measured."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if not (f.metadata.get("omit_none") and getattr(self, f.name) is None)}


def ramp_json(steps: list[RampStep]) -> str:
    return json.dumps([s.to_dict() for s in steps], indent=1)


def read_ramp(doc: Any, where: str) -> list[RampStep]:
    """A ramp.json's steps in the order of n; SchemaError naming the step it cannot read."""
    if not isinstance(doc, list) or not doc:
        raise SchemaError(f"{where}: a ramp must be a non-empty list of steps")
    steps = [RampStep.from_dict(p, f"{where}: step {i + 1}") for i, p in enumerate(doc)]
    return sorted(steps, key=lambda s: s.n)


@dataclass(frozen=True)
class BurstStarts:
    """The start time (s) of every sandbox of one burst, in launch order. burst.json holds the
    bare list of numbers, which is the shape kept on disk."""

    start_times_s: tuple[float, ...]

    def to_json(self) -> str:
        return json.dumps(list(self.start_times_s))

    @classmethod
    def from_json(cls, doc: Any, where: str) -> BurstStarts:
        if not isinstance(doc, list):
            raise SchemaError(f"{where}: a burst's start times must be a list, got "
                              f"{type(doc).__name__}")
        for i, v in enumerate(doc):
            if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
                raise SchemaError(f"{where}: start time {i + 1} must be a finite number, got "
                                  f"{json.dumps(v)[:40]}")
        return cls(tuple(float(v) for v in doc))
