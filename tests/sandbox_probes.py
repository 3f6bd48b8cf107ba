"""What the namespace-sandbox tests read of a running sandbox from the host: a process's
name, the probe workload's pid once the tool has started it, /proc/PID/status fields."""

from __future__ import annotations

import re
import time
from pathlib import Path

import psutil

from sandbench.environments.base import Sandbox


def name(pid: int) -> str:
    try:
        return psutil.Process(pid).name()
    except psutil.Error:  # a wrapper's transient processes come and go
        return ""


def probe_pid(sb: Sandbox) -> int:
    """The workload's pid, once the tool has started it (launch returns first)."""
    deadline = time.monotonic() + 10
    while True:
        pids = sb.host_pids()
        probes = [p for p in pids if name(p) == "probe"]
        if probes or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert probes, f"no probe among {pids}"
    return probes[0]


def status_of(text: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+):\s+(\S+)$", text, re.M))


def status(pid: int) -> dict[str, str]:
    return status_of(Path(f"/proc/{pid}/status").read_text())
