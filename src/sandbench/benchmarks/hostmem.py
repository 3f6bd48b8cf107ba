"""The host's memory as a whole: MemAvailable and MemTotal from /proc/meminfo, memory pressure
from /proc/pressure/memory (PSI), and dropping the page cache (gVisor's size benchmark reads
MemAvailable after it). Used by the benchmarks that fill a host with sandboxes."""

from __future__ import annotations

import os
from pathlib import Path

MEMINFO = Path("/proc/meminfo")
PSI_MEMORY = Path("/proc/pressure/memory")
DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def meminfo_mib(field: str) -> float:
    """A /proc/meminfo field (given in kB) in MiB."""
    for line in MEMINFO.read_text().splitlines():
        name, _, rest = line.partition(":")
        if name == field:
            return int(rest.split()[0]) / 1024.0
    raise KeyError(f"{field} not in {MEMINFO}")


def mem_available_mib() -> float:
    return meminfo_mib("MemAvailable")


def mem_total_mib() -> float:
    return meminfo_mib("MemTotal")


def psi_some_avg10() -> float | None:
    """Share of the last 10 s in which some task waited for memory (percent); None where the
    kernel has no PSI (CONFIG_PSI off, or booted with psi=0)."""
    try:
        text = PSI_MEMORY.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("some "):
            for part in line.split()[1:]:
                key, _, value = part.partition("=")
                if key == "avg10":
                    return float(value)
    return None


def drop_caches() -> bool:
    """Write back dirty pages, then drop the page cache and slab caches, so that MemAvailable
    moves with memory held, not with what happens to be cached. False where not permitted."""
    os.sync()
    try:
        DROP_CACHES.write_text("3\n")
    except OSError:
        return False
    return True
