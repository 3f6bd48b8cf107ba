"""Results directories loaded once for the report: metadata, cells, order and colours.

One report may merge several results directories (several machines, or several runs of one
machine). The host is then a dimension: every cell's env is labelled "env @ host", its ratio
is taken against the baseline of the same host, and figures group by host.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from sandbench import comparability, results, stats
from sandbench.errors import UsageError
from sandbench.report import envinfo
from sandbench.results import CellEnd, Failure, HostSample, NotApplicableCell, Sample

SEP = " @ "  # between env and host in a merged report's labels
# Kept for callers that want the list of environment names sandbench knows.
KNOWN_ENVS: tuple[str, ...] = envinfo.known_env_names()
def env_colour(env: str) -> str:
    """An environment's colour outside any run (the registry's family shade)."""
    return envinfo.colours([env])[env]


@dataclass
class Source:
    """One results directory of a report."""

    directory: Path
    meta: dict[str, Any]
    host: str  # its label in a merged report


@dataclass
class RunData:
    directory: Path  # where the report goes
    meta: dict[str, Any]  # the first source's
    samples: list[HostSample]  # env renamed to its label
    failures: list[Failure]  # env renamed to its label, as in the records below
    cells: list[stats.CellStats]
    env_order: list[str]  # labels, host by host
    baseline: str
    warnings: list[stats.StatWarning]
    groups: dict[stats.CellKey, list[HostSample]]
    sources: list[Source] = field(default_factory=list)
    cell_records: list[CellEnd] = field(default_factory=list)
    #: Cells a benchmark has no meaning in (results.NotApplicableCell): env label, bench,
    #: reason. Neither numbers nor failures.
    not_applicable: list[NotApplicableCell] = field(default_factory=list)
    bench_order: list[str] = field(default_factory=list)
    colour_of: dict[str, str] = field(default_factory=dict)  # by env name
    label_env: dict[str, str] = field(default_factory=dict)
    label_host: dict[str, str] = field(default_factory=dict)
    host_samples: dict[str, list[HostSample]] = field(default_factory=dict)  # raw names
    class_of: dict[str, str] = field(default_factory=dict)  # by env name: isolation class
    seccomp_of: dict[str, str] = field(default_factory=dict)  # by env name: its filter

    @property
    def plan_envs(self) -> list[str]:
        return list(self.meta.get("plan", {}).get("envs", []))

    @property
    def hosts(self) -> list[str]:
        return [s.host for s in self.sources]

    @property
    def multi_host(self) -> bool:
        return len(self.sources) > 1

    def env_of(self, label: str) -> str:
        return self.label_env.get(label, label)

    def host_of(self, label: str) -> str:
        return self.label_host.get(label, self.hosts[0] if self.sources else "")

    def colour(self, label: str) -> str:
        env = self.env_of(label)
        return self.colour_of.get(env) or env_colour(env)

    def env_rank(self, env: str) -> int:
        return self.env_order.index(env) if env in self.env_order else len(self.env_order)

    def cells_for(self, bench: str, metric: str,
                  params: stats.ParamsKey | None = None) -> list[stats.CellStats]:
        """Cells of one (bench, metric[, params]) in env order."""
        found = [c for c in self.cells if c.bench == bench and c.metric == metric
                 and (params is None or c.params == params)]
        return sorted(found, key=lambda c: self.env_rank(c.env))

    def samples_for(self, env: str, bench: str, metric: str,
                    params: stats.ParamsKey) -> list[HostSample]:
        return self.groups.get((env, bench, metric, params), [])

    def baseline_label(self, host: str) -> str:
        return self.baseline + SEP + host if self.multi_host else self.baseline

    @property
    def baseline_measured(self) -> bool:
        return any(self.env_of(c.env) == self.baseline for c in self.cells)

    def not_applicable_reason(self, label: str, bench: str) -> str | None:
        """Why `bench` has no meaning in the environment `label`, or None."""
        for r in self.not_applicable:
            if r.env == label and r.bench == bench:
                return r.reason
        return None

    def emulated(self, label: str) -> bool:
        return any("emulated" in c.flags for c in self.cells if c.env == label)

    def source_dir(self, sample: HostSample) -> Path:
        return self.sources[sample.source].directory if self.sources else self.directory

    def headline(self, bench: str) -> str | None:
        """The metric that stands for the benchmark in the summary."""
        metrics = list(dict.fromkeys(c.metric for c in self.cells if c.bench == bench))
        declared = [h for n, _, h in envinfo.registry_benches() if n == bench and h]
        for want in declared:
            if want in metrics:
                return want
        kinds = {s.metric: s.kind for s in self.samples if s.bench == bench}
        useful = [m for m in metrics if kinds.get(m) != "count"
                  and m not in stats.EVENT_COUNTS]
        return (useful or metrics)[0] if metrics else None

    def direction(self, bench: str, metric: str) -> str | None:
        """"higher" or "lower" as journaled; None for journals older than directions."""
        for s in self.samples:
            if s.bench == bench and s.metric == metric:
                return s.direction if s.direction in results.DIRECTIONS else None
        return None


def host_labels(metas: Sequence[dict[str, Any]], dirs: Sequence[Path]) -> list[str]:
    """The machine's hostname; where two runs share one, its directory's name as well."""
    names = [str(m.get("host", {}).get("hostname") or d.name) for m, d in zip(metas, dirs,
                                                                          strict=True)]
    out = [n if names.count(n) == 1 else f"{n}:{d.name}" for n, d in zip(names, dirs,
                                                                          strict=True)]
    # Two directories of one name on one host: number them.
    return [o if out.count(o) == 1 else f"{o}#{i + 1}" for i, o in enumerate(out)]


_R = TypeVar("_R", HostSample, Failure, CellEnd, NotApplicableCell)


def _fold(records: list[_R], label_of: dict[str, str]) -> list[_R]:
    """The records with each env renamed to its label in the report."""
    out = []
    for r in records:
        label_of.setdefault(r.env, r.env)
        out.append(replace(r, env=label_of[r.env]))
    return out


def load_runs(directories: Sequence[Path], baseline: str = "host", out: Path | None = None,
              force: bool = False) -> RunData:
    """Load one or several results directories into one RunData. Runs with different
    benchmark parameters are not merged unless `force`: their numbers measure other things."""
    dirs = [Path(d) for d in directories]
    if not dirs:
        raise UsageError("no results directory given")
    metas = [results.read_meta(d) for d in dirs]
    hosts = host_labels(metas, dirs) if len(dirs) > 1 else [
        str(metas[0].get("host", {}).get("hostname") or dirs[0].name)]
    if len(dirs) > 1 and not force:
        diffs = comparability.differing_params_among(metas, hosts)
        if diffs:
            raise UsageError("these runs differ in benchmark parameters: " + "; ".join(diffs)
                             + "; pass --force to merge them anyway")
    multi = len(dirs) > 1
    samples: list[HostSample] = []
    failures: list[Failure] = []
    cell_records: list[CellEnd] = []
    not_applicable: list[NotApplicableCell] = []
    cells: list[stats.CellStats] = []
    label_env: dict[str, str] = {}
    label_host: dict[str, str] = {}
    host_samples: dict[str, list[HostSample]] = {}
    sources = []
    all_envs: list[str] = []
    for i, (d, m, h) in enumerate(zip(dirs, metas, hosts, strict=True)):
        sources.append(Source(d, m, h))
        records = list(results.read_records(d))
        # The journal's numbers are finite (parse_record refuses others).
        raw = [HostSample.of(r, h, i) for r in records if isinstance(r, Sample)]
        envs = ({r.env for r in records if isinstance(r, Sample | Failure | NotApplicableCell)}
                | set(m.get("plan", {}).get("envs", [])))
        label_of = {e: (e + SEP + h if multi else e) for e in envs}
        for e, lab in label_of.items():
            label_env[lab], label_host[lab] = e, h
        all_envs += [e for e in envs if e not in all_envs]
        host_samples[h] = raw
        mine = _fold(raw, label_of)
        samples += mine
        failures += _fold([r for r in records if isinstance(r, Failure)], label_of)
        cell_records += _fold([r for r in records if isinstance(r, CellEnd)], label_of)
        not_applicable += _fold([r for r in records if isinstance(r, NotApplicableCell)],
                                label_of)
        cells += stats.summarize(mine, baseline=label_of.get(baseline, baseline))
    plan_envs = [e for m in metas for e in m.get("plan", {}).get("envs", [])]
    facts: dict[str, dict[str, Any]] = {}
    for m in metas:
        for e, f in (m.get("environments") or {}).items():
            facts.setdefault(e, f or {})
    env_names = envinfo.by_class(envinfo.order(all_envs, plan_envs), facts)
    order = [lab for h in hosts for e in env_names
             for lab in [e + SEP + h if multi else e] if lab in label_env]
    benches = envinfo.bench_order({c.bench for c in cells}
                                  | {r.bench for r in not_applicable},
                                  [b for m in metas for b in m.get("plan", {}).get("benches", [])])
    cells.sort(key=lambda c: (benches.index(c.bench), c.metric, c.params,
                              order.index(c.env) if c.env in order else len(order)))
    warns = stats.warnings_for(cells)
    for src in sources:
        host = src.meta.get("host", {})
        if host.get("virtualized"):
            hv = host.get("hypervisor") or "a hypervisor"
            warns.insert(0, stats.StatWarning(
                "nested-virt", src.host if multi else "host",
                f"the host itself runs under {hv}",
                "VM-based environments run nested and container numbers include the outer "
                "hypervisor; compare with the paper's bare-metal figures with care"))
    return RunData(
        directory=Path(out) if out is not None else dirs[0], meta=metas[0], samples=samples,
        failures=failures, cells=cells, env_order=order, baseline=baseline, warnings=warns,
        groups=stats.group_samples(samples), sources=sources, cell_records=cell_records,
        not_applicable=not_applicable,
        bench_order=benches, colour_of=envinfo.colours(env_names, facts),
        class_of={e: envinfo.class_of(e, facts.get(e)) for e in env_names},
        seccomp_of={e: str(facts.get(e, {}).get("seccomp", "")) for e in env_names},
        label_env=label_env, label_host=label_host, host_samples=host_samples)


def load_run(directory: Path, baseline: str = "host") -> RunData:
    return load_runs([directory], baseline=baseline)


def fmt(x: float | None, digits: int = 3) -> str:
    """A number with `digits` significant digits, "n/a" for missing or undefined."""
    if x is None or not math.isfinite(x):
        return "n/a"
    if x == 0:
        return "0"
    if abs(x) >= 1e9 or abs(x) < 1e-3:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}" if abs(x) < 10 ** (digits - 1) else f"{x:.0f}"
