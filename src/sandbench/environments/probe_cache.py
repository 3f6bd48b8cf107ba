"""Results of slow availability probes (a bounded real start), cached.

The cache lives under the state directory, keyed by environment, runtime version and boot,
so a positive verdict holds until reboot or a new runtime version. A negative one expires
after NEGATIVE_TTL_S: a start that timed out on a loaded machine is tried again later, not
refused until reboot. A probe that runs past its bound is reported as a timeout, and a
cached verdict says when it was found.

A probe must leave nothing: cgroups under sandbench/ that appeared during the probe and
belong to no live sandbox (a runtime whose start failed leaves sandbench/<id> in every
hierarchy) are removed here, and what cannot be removed is named in the verdict.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from sandbench import cgroups, paths
from sandbench.environments.base import Availability
from sandbench.errors import SandboxError, StepTimeout

#: Seconds a negative verdict is trusted.
NEGATIVE_TTL_S = 3600.0


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _path(name: str, version: str) -> Path:
    key = hashlib.sha256(f"{name}\0{version}\0{_boot_id()}".encode()).hexdigest()[:16]
    return paths.state("probes") / f"{name}-{key}.json"


def _cached(path: Path) -> Availability | None:
    try:
        data = json.loads(path.read_text())
        ok, reason, at = bool(data["ok"]), str(data["reason"]), float(data["at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing, torn or of an older format: probe again
    age = time.time() - at
    if ok:
        return Availability.yes()
    if age >= NEGATIVE_TTL_S or age < 0:
        return None
    when = time.strftime("%H:%M", time.localtime(at))
    left = int((NEGATIVE_TTL_S - age) // 60) + 1
    return Availability.no(f"{reason} (probed at {when}; probed again in {left} min)")


def _rels() -> set[str]:
    return {f"{cgroups.BASE}/{p.name}" for h in cgroups.hierarchies()
            if (h / cgroups.BASE).is_dir() for p in (h / cgroups.BASE).iterdir() if p.is_dir()}


def _sweep(before: set[str]) -> list[str]:
    """Remove cgroups the probe left; lines for what could not be removed."""
    live = paths.live_ids()
    failed: list[str] = []
    for rel in sorted(_rels() - before):
        if paths.ids_in(rel) & live:
            continue  # a sandbox of this or another run, in use
        failed += cgroups.remove_tree(rel)
    cgroups.remove_empty_cgroups()
    return failed


def probe(name: str, version: str, fn: Callable[[], Availability]) -> Availability:
    path = _path(name, version)
    cached = _cached(path)
    if cached is not None:
        return cached
    before = _rels()
    try:
        result = fn()
    except StepTimeout as e:
        result = Availability.no(f"the probe timed out: {e}")
    except SandboxError as e:
        result = Availability.no(f"the probe failed: {e}")
    finally:
        left = _sweep(before)
    if left:
        # Busy cgroups mean processes of the probe still run: say so; clean finds them.
        result = Availability(result.ok, f"{result.reason + '; ' if result.reason else ''}"
                              f"the probe left cgroups it could not remove: {'; '.join(left[:3])}")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"ok": result.ok, "reason": result.reason, "at": time.time()}))
    tmp.replace(path)
    return result
