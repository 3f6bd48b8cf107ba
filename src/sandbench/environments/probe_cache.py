"""Results of slow availability probes (a bounded real start), cached until reboot.

The cache lives under the state directory (/run, a tmpfs), keyed by environment and runtime
version, so a probe runs once per boot and per runtime version, not on every `doctor`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from sandbench import paths
from sandbench.environments.base import Availability


def probe(name: str, version: str, fn: Callable[[], Availability]) -> Availability:
    key = hashlib.sha256(f"{name}\0{version}".encode()).hexdigest()[:16]
    path = paths.state("probes") / f"{name}-{key}.json"
    if path.exists():
        data = json.loads(path.read_text())
        return Availability(bool(data["ok"]), str(data["reason"]))
    result = fn()
    path.write_text(json.dumps({"ok": result.ok, "reason": result.reason}))
    return result
