"""Host process accounting: which processes belong to a sandbox and how much memory they hold."""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class MemUse:
    private_dirty_kib: int
    pss_kib: int
    processes: list[str]


#: /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN): a process's children without reading
#: every process on the host, which psutil's children() does (thousands with a density ramp).
_CHILDREN_FILES = os.path.exists("/proc/thread-self/children")


def _children(pid: int) -> list[int] | None:
    """pid's children (from each of its threads), or None when pid has exited."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    out: list[int] = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(c) for c in fh.read().split()]
        except OSError:
            continue  # the thread exited meanwhile
    return out


def descendants(pids: Iterable[int]) -> list[int]:
    """The pids given plus all their descendants, each once, skipping processes that exited."""
    seen: dict[int, None] = {}
    if not _CHILDREN_FILES:
        for pid in pids:
            try:
                p = psutil.Process(pid)
                seen[pid] = None
                for c in p.children(recursive=True):
                    seen[c.pid] = None
            except psutil.NoSuchProcess:
                continue
        return list(seen)
    todo = deque(pids)
    while todo:
        pid = todo.popleft()
        if pid in seen:
            continue
        kids = _children(pid)
        if kids is None:
            continue
        seen[pid] = None
        todo.extend(kids)
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


def kill_exact(pid: int, created: float, timeout: float = 10.0) -> None:
    """SIGKILL pid and wait for it, unless it exited or its pid now names another process
    (a different start time). OSError when it outlives the wait."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - created) > 0.01:
            return
        proc.kill()
        proc.wait(timeout=timeout)
    except psutil.NoSuchProcess:
        return
    except psutil.TimeoutExpired:
        with contextlib.suppress(psutil.NoSuchProcess):
            if proc.status() == psutil.STATUS_ZOMBIE:
                return  # dead; its parent has not reaped it yet
        raise OSError(f"process {pid} did not exit within {timeout:g} s of SIGKILL") from None


def all_processes() -> list[tuple[int, str, float, list[str]]]:
    """(pid, name, start time, argv) of every process, read once."""
    found = []
    for p in psutil.process_iter(["pid", "name", "cmdline", "create_time"]):
        found.append((p.info["pid"], p.info["name"] or "", p.info["create_time"] or 0.0,
                      list(p.info["cmdline"] or [])))
    return found


def has_option(argv: list[str], option: str, value: str) -> bool:
    """argv passes `option value` or `option=value` (e.g. --root <dir>)."""
    return f"{option}={value}" in argv or any(
        a == option and b == value for a, b in zip(argv, argv[1:], strict=False))


def pid_file_alive(path: Path) -> bool:
    """Whether the pid written in path runs. A file that cannot be read or parsed counts as
    alive (being written, or not ours to judge): owner checks never remove what they cannot
    judge."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
