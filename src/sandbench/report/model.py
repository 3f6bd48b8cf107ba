"""A results directory loaded once for the report: metadata, cells, env order and colours."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbench import results, stats

# Every env sandbench knows, in the order figures use when the plan does not say.
KNOWN_ENVS: tuple[str, ...] = (
    "host", "runc", "crun", "gvisor-ptrace", "gvisor-systrap", "gvisor-kvm", "docker",
    "docker-gvisor-ptrace", "docker-gvisor-systrap", "docker-gvisor-kvm", "qemu-vm",
    "qemu-microvm", "firecracker", "kata-qemu", "kata-fc",
)

# Fixed per env so that one env has the same colour in every figure and every run; related
# envs share a hue family (gVisor oranges/reds, VMs blues, Kata greens).
ENV_COLOURS: dict[str, str] = {
    "host": "#4d4d4d",
    "runc": "#8c564b",
    "crun": "#c49c94",
    "gvisor-ptrace": "#ff7f0e",
    "gvisor-systrap": "#ffbb78",
    "gvisor-kvm": "#d62728",
    "docker": "#9467bd",
    "docker-gvisor-ptrace": "#e377c2",
    "docker-gvisor-systrap": "#f7b6d2",
    "docker-gvisor-kvm": "#bcbd22",
    "qemu-vm": "#1f77b4",
    "qemu-microvm": "#aec7e8",
    "firecracker": "#17becf",
    "kata-qemu": "#2ca02c",
    "kata-fc": "#98df8a",
}
# The paper's order, for benches the plan does not list.
PAPER_BENCHES: tuple[str, ...] = (
    "startup", "memory", "syscall", "network", "disk", "cpu", "mysql", "nginx")
_SPARE = ("#7f7f7f", "#dbdb8d", "#9edae5", "#c5b0d5", "#ff9896", "#393b79", "#637939")


def env_colour(env: str) -> str:
    if env in ENV_COLOURS:
        return ENV_COLOURS[env]
    # Stable across runs (unlike hash()), so an unknown env keeps its colour too.
    return _SPARE[sum(env.encode()) % len(_SPARE)]


def order_envs(envs: set[str] | list[str], plan_envs: list[str]) -> list[str]:
    """The plan's order, then any other env in KNOWN_ENVS order, then by name."""
    present = set(envs)
    ordered = [e for e in plan_envs if e in present]
    ordered += [e for e in KNOWN_ENVS if e in present and e not in ordered]
    ordered += sorted(present - set(ordered))
    return ordered


@dataclass
class RunData:
    directory: Path
    meta: dict[str, Any]
    samples: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    cells: list[stats.CellStats]
    env_order: list[str]
    baseline: str
    warnings: list[stats.StatWarning]
    groups: dict[stats.CellKey, list[dict[str, Any]]]

    @property
    def plan_envs(self) -> list[str]:
        return list(self.meta.get("plan", {}).get("envs", []))

    def env_rank(self, env: str) -> int:
        return self.env_order.index(env) if env in self.env_order else len(self.env_order)

    def cells_for(self, bench: str, metric: str,
                  params: stats.ParamsKey | None = None) -> list[stats.CellStats]:
        """Cells of one (bench, metric[, params]) in env order."""
        found = [c for c in self.cells if c.bench == bench and c.metric == metric
                 and (params is None or c.params == params)]
        return sorted(found, key=lambda c: self.env_rank(c.env))

    def samples_for(self, env: str, bench: str, metric: str,
                    params: stats.ParamsKey) -> list[dict[str, Any]]:
        return self.groups.get((env, bench, metric, params), [])

    @property
    def baseline_measured(self) -> bool:
        return any(c.env == self.baseline for c in self.cells)


def load_run(directory: Path, baseline: str = "host") -> RunData:
    meta = results.read_meta(directory)
    samples = [s for s in results.read_samples(directory)
               if isinstance(s.get("value"), int | float) and math.isfinite(float(s["value"]))]
    failures = results.read_failures(directory)
    cells = stats.summarize(samples, baseline=baseline)
    plan_envs = list(meta.get("plan", {}).get("envs", []))
    envs = {c.env for c in cells} | {str(f.get("env")) for f in failures}
    order = order_envs(envs | set(plan_envs), plan_envs)
    benches = order_envs({c.bench for c in cells},  # same rule: plan order, then known order
                         [*meta.get("plan", {}).get("benches", []), *PAPER_BENCHES])
    cells.sort(key=lambda c: (benches.index(c.bench), c.metric, c.params,
                              order.index(c.env) if c.env in order else len(order)))
    warns = stats.warnings_for(cells)
    host = meta.get("host", {})
    if host.get("virtualized"):
        hv = host.get("hypervisor") or "a hypervisor"
        warns.insert(0, stats.StatWarning(
            "nested-virt", "host", f"the host itself runs under {hv}",
            "VM-based environments run nested and container numbers include the outer "
            "hypervisor; compare with the paper's bare-metal figures with care"))
    return RunData(directory=directory, meta=meta, samples=samples, failures=failures,
                   cells=cells, env_order=order, baseline=baseline, warnings=warns,
                   groups=stats.group_samples(samples))


def fmt(x: float | None, digits: int = 3) -> str:
    """A number with `digits` significant digits, "n/a" for missing or undefined."""
    if x is None or not math.isfinite(x):
        return "n/a"
    if x == 0:
        return "0"
    if abs(x) >= 1e9 or abs(x) < 1e-3:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}" if abs(x) < 10 ** (digits - 1) else f"{x:.0f}"
