"""The benchmark contract and the context a run gives each benchmark."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbench.benchmarks.params import BenchParams, Profile, RoundPolicy
from sandbench.environments.base import Environment, Limits, SandboxSpec
from sandbench.results import Measurement

#: Runs one round and returns its measurements.
RoundFn = Callable[[int], list[Measurement]]

#: Bounds for every external step, in seconds (issue: bounded steps). Profiles may override.
DEFAULT_TIMEOUTS = {"start": 60.0, "probe": 60.0, "exec": 120.0, "stop": 30.0, "tool": 900.0}


@dataclass
class RunContext:
    """What a benchmark may use from the run: where raw outputs go, the bounds, the profile."""

    out: Path
    profile: str
    timeouts: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS))
    #: The same resources for every environment's sandboxes (the plan's; recorded in meta).
    limits: Limits = field(default_factory=Limits)
    #: The default seccomp profile everywhere it applies, or off everywhere.
    seccomp: bool = True

    def spec(self, **kw: Any) -> SandboxSpec:
        """A SandboxSpec with the run's limits and security baseline: benchmarks build every
        spec through this, so that no environment gets other resources than the rest."""
        kw.setdefault("limits", self.limits)
        kw.setdefault("seccomp", self.seccomp)
        return SandboxSpec(**kw)

    def save_raw(self, env: str, bench: str, rnd: int, name: str, text: str) -> str:
        """Keep a tool's output as printed; returns its path relative to the results dir."""
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        rel = Path("raw") / env / bench / f"r{rnd:03d}-{safe}"
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(rel)

    def log_path(self, env: str, bench: str, name: str) -> Path:
        path = self.out / "logs" / env / bench / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


class Benchmark(ABC):
    name: str
    description: str = ""
    image: str = "minimal"
    #: The dataclass of its parameters (benchmarks/params.py): types, units, bounds; a study
    #: file's [bench.NAME] table, the profiles and --resume all decode through it.
    Params: type[BenchParams] = BenchParams
    #: Per profile: the round policy (the minimum rounds per environment, what the
    #: scorecard's tests need, and the cap of adaptive rounds) and the parameters.
    profiles: dict[str, Profile] = {}
    #: Part of a study that names no benchmarks (False: run only when named, e.g. density).
    default: bool = True
    #: The metrics whose medians' intervals decide when a cell has enough adaptive rounds
    #: (the headline ones: a start's phases or a rare-event count would never settle and keep
    #: every cell running to its cap); empty = every metric of a converging kind.
    converge_on: tuple[str, ...] = ()
    #: The metric that stands for the benchmark in the summaries (terminal and report), and
    #: which of its cells where it has several (disk: one pattern and block size); the
    #: default is the first converge_on metric, the first cell journaled.
    headline: str = ""
    headline_params: dict[str, Any] = {}
    #: A column title of a few characters for the terminal summary (default: the name).
    short: str = ""
    #: How the report presents it: the figure's title (default: from the name), the paper's
    #: figure it reproduces ("" for none), the metrics its figure draws (default: the
    #: headline), and whether report/figures_extra draws figures of its own instead.
    title: str = ""
    paper_figure: str = ""
    figure_metrics: tuple[str, ...] = ()
    own_figures: bool = False

    def headline_metric(self) -> str | None:
        return self.headline or (self.converge_on[0] if self.converge_on else None)

    def params(self, profile: str) -> BenchParams:
        """The profile's parameters: an instance of self.Params."""
        return self.profiles[profile].params

    def round_policy(self, profile: str) -> RoundPolicy:
        return self.profiles[profile].rounds

    @abstractmethod
    def session(
        self, env: Environment, ctx: RunContext, params: Any
    ) -> AbstractContextManager[RoundFn]:
        """Set up what all rounds in this environment share (a sandbox, a server), yield the
        round function, and tear everything down on exit, whatever happened. `params` is an
        instance of the benchmark's own Params (each session declares that type)."""

