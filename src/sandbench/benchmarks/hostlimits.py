"""Host limits that can stop a host from taking more sandboxes before its memory does, each
read as (used, limit) with the knob a person turns to raise it:

  pids_limit        pids.max of a cgroup the sandboxes (or sandbench) live in;
                    sysctl kernel.pid_max / kernel.threads-max (tasks on the host)
  memory_limit      memory.limit_in_bytes / memory.max of such a cgroup
  open_files_limit  sandbench's own RLIMIT_NOFILE (ulimit -n); sysctl fs.file-max
  inotify_limit     sysctl fs.inotify.max_user_instances (instances of root)
  netns_limit       sysctl user.max_net_namespaces
  address_slots     the /30 slots of net.LINK_NET; the Docker bridge's /24 (from its error)

The ramp stops before a start when the next one would not fit (headroom below what each
sandbox has taken so far), and a start that failed is blamed on a limit near exhaustion
before its error text is read, so the stop reason is the limit, not the symptom.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

from sandbench import cgroups, net, paths


@dataclass(frozen=True)
class Reading:
    reason: str
    knob: str
    used: float
    limit: float
    #: What one start needs beyond what the sandbox keeps (runc init's threads, a start's
    #: pipes): a failed start is blamed on this limit when its headroom is within that.
    margin: float = 0.0

    @property
    def headroom(self) -> float:
        return self.limit - self.used


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _sysctl(name: str) -> int | None:
    return _int(_read(Path("/proc/sys") / name.replace(".", "/")))


# Above this a cgroup memory limit means "none" (v1 writes PAGE_COUNTER_MAX in bytes).
_NO_MEMORY_LIMIT = 1 << 60


def cgroup_dirs_of(pids: list[int]) -> set[Path]:
    """The pids and memory cgroup directories of these processes and all their ancestors
    (the root excluded: it has no limit files)."""
    mounts = cgroups.mounted()
    found: set[Path] = set()
    for pid in pids:
        text = _read(Path(f"/proc/{pid}/cgroup"))
        for line in (text or "").splitlines():
            hid, _, rest = line.partition(":")
            ctls, _, rel = rest.partition(":")
            for h in mounts:
                v2 = hid == "0" and h.version == 2
                v1 = h.version == 1 and set(ctls.split(",")) & {"pids", "memory"} and \
                    set(ctls.split(",")) <= set(h.controllers)
                if not (v1 or v2):
                    continue
                parts = [p for p in rel.split("/") if p]
                for i in range(len(parts), 0, -1):
                    found.add(h.path.joinpath(*parts[:i]))
    return found


def _cgroup_readings(dirs: set[Path]) -> list[Reading]:
    out: list[Reading] = []
    for d in sorted(dirs):
        pmax = _int(_read(d / "pids.max"))
        pcur = _int(_read(d / "pids.current"))
        if pmax is not None and pcur is not None:
            out.append(Reading("pids_limit", str(d / "pids.max"), pcur, pmax, margin=32))
        for lim_f, use_f in (("memory.limit_in_bytes", "memory.usage_in_bytes"),
                             ("memory.max", "memory.current")):
            lim = _int(_read(d / lim_f))
            use = _int(_read(d / use_f))
            if lim is not None and use is not None and lim < _NO_MEMORY_LIMIT:
                out.append(Reading("memory_limit", str(d / lim_f), use / 2**20, lim / 2**20,
                                   margin=64))
    return out


def _host_tasks() -> int | None:
    # /proc/loadavg's fourth field is "running/total" scheduling entities: every thread.
    text = _read(Path("/proc/loadavg"))
    try:
        return int(text.split()[3].split("/")[1]) if text else None
    except (IndexError, ValueError):
        return None


def _used_slots() -> int:
    root = paths.state_root_if_ours()
    if root is None:
        return 0
    try:
        return sum(1 for f in os.listdir(root / "net") if f.isdigit() and int(f) < net.SLOTS)
    except OSError:
        return 0


def _inotify_instances() -> int:
    """inotify instances held by root's processes (the per-user count the sysctl bounds)."""
    count = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.stat(f"/proc/{pid}").st_uid != 0:
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify":
                    count += 1
        except OSError:
            continue
    return count


def _net_namespaces() -> int:
    """Network namespaces alive: those of processes and those pinned by /var/run/netns."""
    seen: set[int] = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                seen.add(os.stat(f"/proc/{pid}/ns/net").st_ino)
            except OSError:
                continue
    try:
        for name in os.listdir(net.NETNS_DIR):
            try:
                seen.add(os.stat(net.NETNS_DIR / name).st_ino)
            except OSError:
                continue
    except OSError:
        pass
    return len(seen)


def host_readings(dirs: set[Path], full: bool) -> list[Reading]:
    """Every limit's use now. `full` adds the ones that need a walk of all processes
    (inotify instances, network namespaces): every few steps, and when a start failed."""
    out = _cgroup_readings(dirs)
    tasks = _host_tasks()
    for name in ("kernel.pid_max", "kernel.threads-max"):
        lim = _sysctl(name)
        if tasks is not None and lim is not None:
            out.append(Reading("pids_limit", f"sysctl {name}", tasks, lim, margin=32))
    file_nr = (_read(Path("/proc/sys/fs/file-nr")) or "").split()
    if len(file_nr) == 3:
        out.append(Reading("open_files_limit", "sysctl fs.file-max", int(file_nr[0]),
                           int(file_nr[2]), margin=64))
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY:
        out.append(Reading("open_files_limit", "RLIMIT_NOFILE of sandbench (ulimit -n)",
                           len(os.listdir("/proc/self/fd")), soft, margin=16))
    out.append(Reading("address_slots", f"net.LINK_NET ({net.LINK_NET}: {net.SLOTS} /30 "
                       "slots, one per sandbox link)", _used_slots(), net.SLOTS, margin=0))
    if full:
        lim = _sysctl("fs.inotify.max_user_instances")
        if lim is not None:
            out.append(Reading("inotify_limit", "sysctl fs.inotify.max_user_instances",
                               _inotify_instances(), lim, margin=2))
        lim = _sysctl("user.max_net_namespaces")
        if lim is not None:
            out.append(Reading("netns_limit", "sysctl user.max_net_namespaces",
                               _net_namespaces(), lim, margin=2))
    return out


#: Error texts that name a limit when no reading is near one (the limit is not readable
#: from here, e.g. inside a daemon): (substring, reason, knob).
_TEXTS = (
    ("no free /30", "address_slots", f"net.LINK_NET ({net.LINK_NET})"),
    ("no available ipv4 addresses", "address_slots",
     f"the Docker bridge's subnet (net.DOCKER_BIP {net.DOCKER_BIP})"),
    ("too many open files", "open_files_limit", "RLIMIT_NOFILE (ulimit -n / LimitNOFILE)"),
    ("file table overflow", "open_files_limit", "sysctl fs.file-max"),
    ("inotify", "inotify_limit", "sysctl fs.inotify.max_user_instances"),
    ("resource temporarily unavailable", "pids_limit",
     "pids.max of the sandboxes' cgroup, or sysctl kernel.pid_max"),
    ("cannot allocate memory", "memory_limit", "host memory (or the cgroup memory limit)"),
)


class LimitWatch:
    """Follows every limit through a ramp: what each sandbox takes of it, and whether the
    next start still fits."""

    def __init__(self) -> None:
        self.dirs: set[Path] = cgroup_dirs_of([os.getpid()])
        self._seen: dict[Path, int] = {}
        self._first: dict[str, tuple[int, float]] = {}
        self._cost: dict[str, float] = {}
        self._next_n = 0
        self._last_full: int | None = None

    def learn(self, pids: list[int]) -> None:
        """Add the cgroups that a new sandbox's processes share with another sandbox learned
        before (the parents the next start lands under too). A sandbox's own cgroup bounds
        only itself, and reading one per sandbox on every step made a ramp of thousands
        slow down as it grew."""
        for d in cgroup_dirs_of(pids):
            self._seen[d] = self._seen.get(d, 0) + 1
            if self._seen[d] >= 2:
                self.dirs.add(d)

    def observe(self, n: int, full: bool = False) -> list[Reading]:
        """Read every limit with n sandboxes up; learn what one sandbox costs of each."""
        readings = host_readings(self.dirs, full)
        for r in readings:
            first = self._first.setdefault(r.knob, (n, r.used))
            if n > first[0]:
                self._cost[r.knob] = max(0.0, (r.used - first[1]) / (n - first[0]))
        return readings

    def check(self, n: int, every: int) -> Reading | None:
        """The limit the next start (the n+1-th) would cross, if any. The limits are read only
        when one could be near: the next reading comes when half the tightest headroom (in
        sandboxes) is used, every step when it is close, at most `every` steps apart; the
        readings that walk every process come at most every `every` steps. Reading all of
        them on every step took a third of a ramp's time at a few thousand sandboxes."""
        if n < self._next_n:
            return None
        full = self._last_full is None or n - self._last_full >= every
        readings = self.observe(n, full=full)
        if full:
            self._last_full = n
        ahead = min((r.headroom / self.cost(r) for r in readings), default=float(every))
        self._next_n = n + max(1, min(every, int(ahead // 2)))
        return self.exhausted(readings)

    def cost(self, r: Reading) -> float:
        """What one more sandbox takes of r: as measured, and at least one unit."""
        return max(1.0, self._cost.get(r.knob, 1.0))

    def exhausted(self, readings: list[Reading]) -> Reading | None:
        """The limit the next start would cross, if any (the tightest)."""
        short = [r for r in readings if r.headroom < self.cost(r)]
        return min(short, key=lambda r: r.headroom / self.cost(r)) if short else None

    def blame(self, n: int, error: str) -> tuple[str, str] | None:
        """(reason, knob) for a start that failed: a limit within one start's need of its
        end, else a limit the error text names; None when neither."""
        readings = self.observe(n, full=True)
        near = [r for r in readings if r.headroom < self.cost(r) + r.margin]
        if near:
            r = min(near, key=lambda r: r.headroom / (self.cost(r) + r.margin))
            return r.reason, r.knob
        low = error.lower()
        for text, reason, knob in _TEXTS:
            if text in low:
                return reason, knob
        return None
