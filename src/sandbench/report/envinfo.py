"""Environment and benchmark names, families, order and colours for the report.

Taken from the registries (sandbench.environments.registry, sandbench.benchmarks.registry) and
the run's own facts, so that an environment or benchmark added there appears in the report
without a change here; one the registry has never heard of still gets a colour of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

# Related environments share a hue family, so a figure reads by family at a glance:
# containers brown/purple, process sandboxes olive, gVisor orange/red/pink, VMs blue/teal/green.
FAMILY_SHADES: dict[str, tuple[str, ...]] = {
    "host": ("#4d4d4d",),
    "container": ("#8c564b", "#c49c94", "#9467bd", "#c5b0d5", "#7b4173", "#a55194",
                  "#ce6dbd"),
    "sandbox": ("#637939", "#8c6d31", "#b5cf6b", "#bd9e39"),
    "gvisor": ("#ff7f0e", "#ffbb78", "#d62728", "#e377c2", "#f7b6d2", "#bcbd22"),
    "vm": ("#1f77b4", "#aec7e8", "#17becf", "#2ca02c", "#98df8a", "#393b79"),
}
# For environments the registry does not list (or a family with more members than shades):
# none of these is a family shade, so a newcomer never looks like a known environment.
SPARE: tuple[str, ...] = ("#7f7f7f", "#843c39", "#9edae5", "#dbdb8d", "#5254a3", "#e7969c",
                          "#6b6ecf", "#e7cb94", "#ad494a", "#3182bd")


@cache
def registry_envs() -> tuple[tuple[str, str], ...]:
    """(name, family) of every registered environment, in the registry's order."""
    from sandbench.environments.registry import all_environments

    return tuple((e.name, str(getattr(e, "family", "container"))) for e in all_environments())


def registry_benches() -> tuple[tuple[str, str, str | None], ...]:
    """(name, description, headline metric or None) of every registered benchmark."""
    from sandbench.benchmarks.registry import all_benchmarks

    return tuple((b.name, b.description, b.headline_metric()) for b in all_benchmarks())


@dataclass(frozen=True)
class BenchPresentation:
    """What a benchmark declares of its presentation (benchmarks/base.py)."""

    title: str
    paper_figure: str
    figure_metrics: tuple[str, ...]
    own_figures: bool


def bench_presentation() -> dict[str, BenchPresentation]:
    """Each registered benchmark's title, paper figure, figure metrics and own-figures flag;
    a benchmark of an old run that is no longer registered gets the defaults."""
    from sandbench.benchmarks.registry import all_benchmarks

    return {b.name: BenchPresentation(b.title or b.name.replace("_", " ").capitalize(),
                                      b.paper_figure, tuple(b.figure_metrics), b.own_figures)
            for b in all_benchmarks()}


def presentation_of(bench: str) -> BenchPresentation:
    return bench_presentation().get(
        bench, BenchPresentation(bench.replace("_", " ").capitalize(), "", (), False))


def converge_metrics() -> dict[str, tuple[str, ...]]:
    """Each registered benchmark's headline metrics (its converge_on)."""
    from sandbench.benchmarks.registry import all_benchmarks

    return {b.name: tuple(b.converge_on) for b in all_benchmarks()}


#: The report's rows, class by class (each environment declares its class: the registry's
#: isolation_class, journaled in the run's facts), weakest isolation first.
CLASS_ORDER = ("host", "process sandbox", "container", "system container", "user-space kernel",
               "VM")


@cache
def registry_classes() -> dict[str, str]:
    from sandbench.environments.registry import all_environments

    return {e.name: str(e.isolation_class) for e in all_environments()}


def registry_lineages() -> dict[str, str]:
    from sandbench.environments.registry import all_environments

    return {e.name: str(e.paper_lineage) for e in all_environments()}


def lineage_of(env: str, facts: Mapping[str, Any] | None = None) -> str:
    """The paper's runtime an environment measures (Environment.paper_lineage): the run's
    own record first, then the registry's; "" for one the paper did not run."""
    if facts and isinstance(facts.get("paper_lineage"), str):
        return str(facts["paper_lineage"])
    return registry_lineages().get(env, "")


def class_of(env: str, facts: Mapping[str, Any] | None = None) -> str:
    """The run's own record first (what the environment declared when it ran), then the
    registry's; "other" for an environment neither knows."""
    if facts and isinstance(facts.get("isolation_class"), str):
        return str(facts["isolation_class"])
    return registry_classes().get(env, "other")


def by_class(names: Iterable[str], facts: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """names grouped by class in CLASS_ORDER (classes it does not know last), keeping the
    given order within a class."""
    def rank(n: str) -> int:
        c = class_of(n, facts.get(n))
        return CLASS_ORDER.index(c) if c in CLASS_ORDER else len(CLASS_ORDER)

    return sorted(names, key=rank)


def known_env_names() -> tuple[str, ...]:
    return tuple(n for n, _ in registry_envs())


def bench_description(bench: str) -> str:
    for name, desc, _ in registry_benches():
        if name == bench:
            return desc
    return ""


def family_of(env: str, facts: Mapping[str, Any] | None = None) -> str:
    for name, fam in registry_envs():
        if name == env:
            return fam
    if facts and isinstance(facts.get("family"), str):
        return str(facts["family"])
    return "other"


def order(names: Iterable[str], *preferred: Iterable[str]) -> list[str]:
    """The preferred lists' order (a run's plan), then the registry's, then by name."""
    return _ordered(set(names), [*preferred, known_env_names()])


def _ordered(present: set[str], seqs: Iterable[Iterable[str]]) -> list[str]:
    out: list[str] = []
    for seq in seqs:
        for n in seq:
            if n in present and n not in out:
                out.append(n)
    return out + sorted(present - set(out))


def bench_order(names: Iterable[str], *preferred: Iterable[str]) -> list[str]:
    return _ordered(set(names), [*preferred, [n for n, _, _ in registry_benches()]])


def colours(envs: Iterable[str], facts: Mapping[str, Mapping[str, Any]] | None = None
            ) -> dict[str, str]:
    """A colour per environment. A registered one gets its family's shade by its rank in the
    family (the same in every run); others get spare colours no other environment of this
    report uses, in name order, so two environments never share a colour."""
    facts = facts or {}
    out: dict[str, str] = {}
    rank: dict[str, int] = {}
    for name, fam in registry_envs():
        shades = FAMILY_SHADES.get(fam, ())
        i = rank.get(fam, 0)
        rank[fam] = i + 1
        if i < len(shades):
            out[name] = shades[i]
    wanted = list(dict.fromkeys(envs))
    spare = [c for c in SPARE if c not in {out[e] for e in wanted if e in out}]
    result: dict[str, str] = {}
    extra_i = 0
    for env in sorted(wanted):
        if env in out:
            result[env] = out[env]
            continue
        fam_shades = FAMILY_SHADES.get(family_of(env, facts.get(env)), ())
        free = [c for c in fam_shades if c not in out.values() and c not in result.values()]
        if free:
            result[env] = free[0]
        else:
            result[env] = spare[extra_i % len(spare)] if spare else SPARE[extra_i % len(SPARE)]
            extra_i += 1
    return {e: result[e] for e in wanted}
