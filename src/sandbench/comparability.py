"""When two sets of measurements may be compared: ONE list of checked facts and parameters,
shared by `sandbench compare` and `sandbench run --resume`.

Numbers from another kernel, CPU, core count, virtualization, runtime version, gVisor platform
or QEMU accelerator differ for reasons other than the change being asked about (pyperf's rule),
and numbers from other benchmark parameters (a quick run's 10 s of sysbench cpu against a paper
run's 600 s) measure something else. Only the round policy (plan.rounds, never among the
parameters) may differ: it changes how precise a cell is, not what it measures.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

#: Facts of the machine (meta["host"], hostfacts.host_facts()).
CHECKED_HOST_FACTS: tuple[str, ...] = ("kernel", "cpu_model", "cores", "virtualized",
                                       "hypervisor")
#: Facts of each environment (meta["environments"][name], Environment.facts()).
CHECKED_ENV_FACTS: tuple[str, ...] = ("version", "runtime_version", "platform", "accel")


def _canonical(v: Any) -> Any:
    # Numbers as floats: a float field decodes an integer to a float (params.py), and older
    # runs recorded a study file's value as written, so 16 and 16.0 are the same value.
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, dict):
        return {str(k): _canonical(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_canonical(x) for x in v]
    return str(v)


def _same(a: Any, b: Any) -> bool:
    # JSON text of the canonical form: 16 and 16.0 match, 16 and "16" or True and 1 do not
    return json.dumps(_canonical(a), sort_keys=True) == json.dumps(_canonical(b),
                                                                   sort_keys=True)


def differing_host_facts(a: Mapping[str, Any], b: Mapping[str, Any],
                         names: tuple[str, str] = ("A", "B")) -> list[str]:
    """'host kernel: A '6.1' vs B '6.8'' for every checked host fact that differs. A fact one
    side did not record counts as differing (None), since nothing shows it is the same."""
    return [f"host {k}: {names[0]} {a.get(k)!r} vs {names[1]} {b.get(k)!r}"
            for k in CHECKED_HOST_FACTS if not _same(a.get(k), b.get(k))]


def differing_env_facts(a: Mapping[str, Any], b: Mapping[str, Any],
                        names: tuple[str, str] = ("A", "B")) -> list[str]:
    """Checked facts of the environments both sides have, as 'docker version: A .. vs B ..'."""
    out = []
    for env in [e for e in a if e in b]:
        fa, fb = a.get(env) or {}, b.get(env) or {}
        out += [f"{env} {k}: {names[0]} {fa.get(k)!r} vs {names[1]} {fb.get(k)!r}"
                for k in CHECKED_ENV_FACTS if not _same(fa.get(k), fb.get(k))]
    return out


def differing_facts(meta_a: Mapping[str, Any], meta_b: Mapping[str, Any]) -> list[str]:
    """Every checked host and environment fact that differs between two runs' meta.json."""
    return (differing_host_facts(meta_a.get("host") or {}, meta_b.get("host") or {})
            + differing_env_facts(meta_a.get("environments") or {},
                                  meta_b.get("environments") or {}))


def plan_params(meta: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """plan.params per benchmark: what its cells measure with. The round policy is not among
    them (plan.rounds; results.read_meta moves an older meta.json's there)."""
    params = (meta.get("plan") or {}).get("params") or {}
    return {str(b): dict(p or {}) for b, p in params.items()}


def differing_params(meta_a: Mapping[str, Any], meta_b: Mapping[str, Any]) -> list[str]:
    """Parameters of the benchmarks both runs planned that differ, as
    'cpu time_s: A 10 vs B 600'. The round policy is not a parameter: it never differs here."""
    return differing_params_among([meta_a, meta_b], ["A", "B"])


def differing_params_among(metas: Sequence[Mapping[str, Any]],
                           labels: Sequence[str]) -> list[str]:
    """The one parameter comparison (compare, resume, a merge of hosts): parameters of the
    benchmarks every run planned that differ between any two, as
    'cpu time_s: host1 10 vs host2 600' (round policies are no parameters). A benchmark
    only some runs planned is no difference: a merged report shows it for those hosts."""
    plans = [plan_params(m) for m in metas]
    planned = [set((m.get("plan") or {}).get("benches") or p)
               for m, p in zip(metas, plans, strict=True)]
    out = []
    for bench in sorted(set.intersection(*planned) if planned else set()):
        ps = [p.get(bench, {}) for p in plans]
        for k in sorted(set().union(*ps)):
            if any(not _same(ps[0].get(k), q.get(k)) for q in ps[1:]):
                out.append(f"{bench} {k}: " + " vs ".join(
                    f"{lab} {_show(q, k)}" for lab, q in zip(labels, ps, strict=True)))
    return out


def _show(params: Mapping[str, Any], key: str) -> str:
    return json.dumps(params[key], default=str) if key in params else "(not set)"


def resume_differences(meta: Mapping[str, Any], host_now: Mapping[str, Any],
                       env_facts_now: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What would make resumed cells incomparable with the run's stored ones: the checked host
    facts against this machine's, and the checked facts of each environment about to run
    against the stored ones (an environment the run never recorded counts as differing)."""
    names = ("run has", "this machine")
    out = differing_host_facts(meta.get("host") or {}, host_now, names)
    stored = meta.get("environments") or {}
    for env, now in env_facts_now.items():
        out += differing_env_facts({env: stored.get(env) or {}}, {env: now}, names)
    return out
