"""Host process accounting: which processes belong to a sandbox and how much memory they hold."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class MemUse:
    private_dirty_kib: int
    pss_kib: int
    processes: list[str]


def descendants(pids: Iterable[int]) -> list[int]:
    """The pids given plus all their descendants, each once, skipping processes that exited."""
    seen: dict[int, None] = {}
    for pid in pids:
        try:
            p = psutil.Process(pid)
            seen[pid] = None
            for c in p.children(recursive=True):
                seen[c.pid] = None
        except psutil.NoSuchProcess:
            continue
    return list(seen)


def smaps_rollup(pid: int) -> dict[str, int]:
    """Fields of /proc/PID/smaps_rollup in KiB (Private_Dirty, Pss, Rss, ...)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


def memory_of(pids: Iterable[int]) -> MemUse:
    """Sum Private_Dirty (the paper's measure) and PSS over the processes."""
    dirty = pss = 0
    names: list[str] = []
    for pid in pids:
        try:
            roll = smaps_rollup(pid)
            name = psutil.Process(pid).name()
        except (FileNotFoundError, ProcessLookupError, psutil.NoSuchProcess):
            continue
        dirty += roll.get("Private_Dirty", 0)
        pss += roll.get("Pss", 0)
        names.append(name)
    return MemUse(dirty, pss, sorted(names))


def find_by_cmdline(*needles: str) -> list[int]:
    """Processes whose command line contains every needle (e.g. a container id)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd and all(n in cmd for n in needles):
            found.append(p.info["pid"])
    return found
