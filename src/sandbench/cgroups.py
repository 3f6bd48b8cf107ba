"""sandbench's cgroups: where they live, how they are made, limited and removed.

Every cgroup the tool makes (itself, or an OCI runtime told cgroupsPath /sandbench/<id>) sits
under `sandbench/` in each hierarchy. A host may mount one hierarchy twice or under aliases
(cpu,cpuacct with cpu and cpuacct as links), so hierarchies are read from mountinfo and
deduplicated by real path and by superblock: each cgroup is counted and removed once.

Removal is children first in every hierarchy: a runtime whose start failed leaves
sandbench/<id> (and sometimes deeper directories) in each hierarchy, and rmdir of a parent
fails while a child exists. rmdir of a cgroup with processes fails with EBUSY, so a live
sandbox is never torn out from under its runtime.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from sandbench import paths
from sandbench.errors import SandboxError
from sandbench.sandbox_values import Limits

ROOT = Path("/sys/fs/cgroup")
#: The parent of every cgroup the tool makes, in every hierarchy.
BASE = "sandbench"
#: Period of the CPU bandwidth limit, the same as the OCI bundles' (oci_spec.CPU_PERIOD_US).
CPU_PERIOD_US = 100_000

#: Age under which an empty cgroup may still be a start in progress.
YOUNG_S = 30.0

_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Hierarchy:
    path: Path
    version: int  # 1 or 2
    controllers: frozenset[str]


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mountinfo() -> list[Hierarchy]:
    found: list[Hierarchy] = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
        known = {ln.split()[0] for ln in Path("/proc/cgroups").read_text().splitlines()[1:]}
    except OSError:
        return found
    for line in lines:
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fstype, _source, superopts = (post.split(" ") + ["", "", ""])[:3]
        mnt = Path(_unescape(pre.split(" ")[4]))
        if fstype == "cgroup":
            ctl = frozenset(o for o in superopts.split(",")
                            if o in known or o.startswith("name="))
            found.append(Hierarchy(mnt, 1, ctl))
        elif fstype == "cgroup2":
            try:
                ctl = frozenset((mnt / "cgroup.controllers").read_text().split())
            except OSError:
                ctl = frozenset()
            found.append(Hierarchy(mnt, 2, ctl))
    return found


def mounted() -> list[Hierarchy]:
    """Every cgroup hierarchy of this host once (v1 hierarchies and the v2 one).

    Read once per process: mountinfo grows by a line per network namespace, and with 4,353
    mounts one read took 12 ms and the parse 20 ms, twice in every sandbox's stop (and in
    every host-environment start), which made a density ramp's teardown grow with N through
    the tool's own work. Hierarchies are mounted at boot; forget_mounts() makes the next
    call read again."""
    return list(_mounted())


def forget_mounts() -> None:
    """The next mounted() reads mountinfo again (after mounting or unmounting a hierarchy)."""
    _mounted.cache_clear()


@functools.cache
def _mounted() -> tuple[Hierarchy, ...]:
    out: list[Hierarchy] = []
    seen: set[object] = set()
    for h in _mountinfo():
        try:
            real = h.path.resolve()
            dev = real.stat().st_dev
        except OSError:
            continue
        if real in seen or dev in seen:
            continue
        seen |= {real, dev}
        out.append(Hierarchy(real, h.version, h.controllers))
    return tuple(out)


def hierarchies() -> list[Path]:
    return [h.path for h in mounted()]


def _check_rel(rel: str) -> Path:
    """A cgroup path relative to a hierarchy's root, inside sandbench's tree."""
    parts = rel.strip("/").split("/")
    if parts[0] != BASE or not all(_SAFE_PART.match(p) for p in parts):
        raise ValueError(f"cgroup {rel!r} is not under {BASE}/ or has unsafe components")
    return Path(*parts)


def _relevant(h: Hierarchy) -> bool:
    """Hierarchies a limited cgroup needs: v1 cpu and memory, and v2 (on a hybrid host it
    tracks the process as runc does; on a v2 host it carries the controllers)."""
    return h.version == 2 or bool(h.controllers & {"cpu", "memory"})


def _write(f: Path, value: str) -> None:
    try:
        f.write_text(value)
    except OSError as e:
        raise SandboxError(
            f"cannot write {value!r} to {f}: {e.strerror}",
            {"file": str(f), "value": value, "errno": e.errno},
        ) from None


def create(rel: str, limits: Limits) -> None:
    """mkdir `rel` (sandbench/<id>) under each relevant hierarchy and apply the limits: v1
    cpu.cfs_quota_us/cfs_period_us and memory.limit_in_bytes, v2 cpu.max and memory.max.
    A limit that cannot be applied raises SandboxError (and what was made is removed)."""
    relp = _check_rel(rel)
    ident = relp.name
    if paths.is_sandbox_id(ident) and paths.owner(ident) is None:
        # The owner record tells this live cgroup from a killed run's (clean, probes).
        paths.claim(ident)
    made = False
    try:
        for h in mounted():
            if not _relevant(h):
                continue
            d = h.path / relp
            if h.version == 2:
                _mkdir_v2(h.path, relp, limits)
            else:
                d.mkdir(parents=True, exist_ok=True)
            made = True
            _apply(h, d, limits)
        if not made:
            raise SandboxError("no cgroup hierarchy is mounted", {"mountinfo": "no cgroup"})
        missing = [what for what, want, ctl in (("cpus", limits.cpus, "cpu"),
                                                ("memory_mib", limits.memory_mib, "memory"))
                   if want is not None and not any(
                       (h.path / relp / f).exists() for h in mounted() for f in _files(ctl))]
        if missing:
            raise SandboxError(
                f"cannot enforce {', '.join(missing)}: no cgroup controller for it",
                {"hierarchies": [f"{h.path} v{h.version} {sorted(h.controllers)}"
                                 for h in mounted()]},
            )
    except BaseException:
        remove_tree(rel)
        raise


def _files(ctl: str) -> tuple[str, ...]:
    return ("cpu.cfs_quota_us", "cpu.max") if ctl == "cpu" else (
        "memory.limit_in_bytes", "memory.max")


def _mkdir_v2(root: Path, relp: Path, limits: Limits) -> None:
    """Make each level and delegate cpu/memory to its children where the parent offers them;
    the root's own subtree_control belongs to the host and is left as it is."""
    cur = root
    for part in relp.parts:
        nxt = cur / part
        nxt.mkdir(exist_ok=True)
        cur = nxt
        if cur == root / relp:
            break
        with contextlib.suppress(OSError):
            have = set((cur / "cgroup.controllers").read_text().split())
            want = [c for c in ("cpu", "memory") if c in have]
            if want:
                (cur / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in want))


def _apply(h: Hierarchy, d: Path, limits: Limits) -> None:
    if h.version == 1:
        if limits.cpus is not None and (d / "cpu.cfs_quota_us").exists():
            _write(d / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(d / "cpu.cfs_quota_us", str(int(limits.cpus * CPU_PERIOD_US)))
        if limits.memory_mib is not None and (d / "memory.limit_in_bytes").exists():
            _write(d / "memory.limit_in_bytes", str(limits.memory_mib * 1024 * 1024))
        return
    if limits.cpus is not None and (d / "cpu.max").exists():
        _write(d / "cpu.max", f"{int(limits.cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")
    if limits.memory_mib is not None and (d / "memory.max").exists():
        _write(d / "memory.max", str(limits.memory_mib * 1024 * 1024))


def add_pid(rel: str, pid: int) -> None:
    """Move pid into `rel` in every hierarchy where it exists (create() made it)."""
    relp = _check_rel(rel)
    moved = 0
    for h in mounted():
        d = h.path / relp
        if d.is_dir():
            _write(d / "cgroup.procs", str(pid))
            moved += 1
    if not moved:
        raise SandboxError(f"cgroup {rel} does not exist", {"cgroup": rel, "pid": pid})


def _tree(top: Path) -> list[Path]:
    """Directories under and including top, deepest first."""
    if not top.is_dir():
        return []
    dirs = [Path(root) for root, _sub, _files in os.walk(top)]
    return sorted(dirs, key=lambda p: len(p.parts), reverse=True)


def remove_tree(rel: str) -> list[str]:
    """Remove `rel` and everything below it, children first, in every hierarchy. Returns a
    line per directory that could not be removed (EBUSY: processes still in it)."""
    relp = _check_rel(rel)
    failed: list[str] = []
    for h in mounted():
        for d in _tree(h.path / relp):
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError as e:
                failed.append(f"{d}: {e.strerror}")
    ident = relp.name
    rec = paths.owner(ident) if paths.is_sandbox_id(ident) else None
    if not failed and rec is not None and rec.pid == os.getpid() \
            and not Path(f"/var/run/netns/{ident}").exists():
        paths.release(ident)
    return failed


def remove_empty_cgroups(name: str = BASE, min_age_s: float = YOUNG_S) -> None:
    """Remove the shared parent (`sandbench/`, or `docker/` for a daemon the tool started)
    in every hierarchy when it is empty, after its empty children; a cgroup with processes
    stays (EBUSY). A child younger than min_age_s also stays: it may belong to a start in
    progress (made, pid not yet moved in) in this or another sandbench process; a sandbox
    removes its own with remove_tree. `docker/` is passed only by the owner of the daemon
    that made it."""
    if name not in (BASE, "docker"):
        raise ValueError(f"not a cgroup tree sandbench makes: {name!r}")
    now = time.time()
    for h in mounted():
        top = h.path / name
        for d in _tree(top):
            with contextlib.suppress(OSError):
                if d == top or now - d.stat().st_ctime >= min_age_s:
                    d.rmdir()


def remove_base_if_empty() -> None:
    """Remove the shared parent `sandbench/` in every hierarchy if nothing is left in it: what
    a sandbox's stop does after removing its own tree. Only the parent is tried (the kernel
    refuses a cgroup with children), never a walk of its children: with thousands of
    sandboxes up, one walk per stop made a density ramp's teardown quadratic."""
    for h in mounted():
        with contextlib.suppress(OSError):
            (h.path / BASE).rmdir()


def owned_dirs() -> list[Path]:
    """Every cgroup under sandbench/ in every hierarchy, children before parents."""
    out: list[Path] = []
    for h in mounted():
        out += _tree(h.path / BASE)
    return out


def is_busy(err: OSError) -> bool:
    return err.errno == errno.EBUSY


#: How long a freeze may take to settle (the kernel freezes a cgroup's tasks one by one;
#: a task in an uninterruptible sleep holds it in FREEZING).
FREEZE_SETTLE_S = 2.0


def _freezer_dirs(rel: str) -> list[tuple[Path, int]]:
    """Where rel can be frozen, best first: the v1 freezer hierarchy, then cgroup v2."""
    relp = _check_rel(rel)
    out: list[tuple[Path, int]] = []
    for h in mounted():
        if h.version == 1 and "freezer" in h.controllers:
            out.insert(0, (h.path / relp, 1))
        elif h.version == 2:
            out.append((h.path / relp, 2))
    return out


def _has_procs(d: Path) -> bool:
    """Whether d or a cgroup below it holds a task (both freezers act on the subtree:
    systemd-nspawn moves its processes into d/supervisor and d/payload of the unified
    hierarchy)."""
    for c in _tree(d):
        try:
            if (c / "cgroup.procs").read_text().strip():
                return True
        except OSError:
            continue
    return False


def freeze(rel: str) -> Path | None:
    """Freeze every task of cgroup rel with one write (the runtimes' own pause does the same
    through a command); returns the cgroup frozen, None when no hierarchy holds rel's tasks
    (then the caller pauses another way). An empty cgroup is never frozen: a process started
    into it later would start frozen."""
    for d, version in _freezer_dirs(rel):
        if not _has_procs(d):
            continue
        if version == 1:
            _write(d / "freezer.state", "FROZEN")
            state, want = d / "freezer.state", "FROZEN"
        else:
            _write(d / "cgroup.freeze", "1")
            state, want = d / "cgroup.events", "frozen 1"
        deadline = time.monotonic() + FREEZE_SETTLE_S
        while want not in state.read_text():
            if time.monotonic() > deadline:
                thaw(d)
                raise SandboxError(f"cgroup {d} did not freeze within {FREEZE_SETTLE_S:g} s",
                                   {"cgroup": str(d), "state": state.read_text()})
            time.sleep(0.0002)
        return d
    return None


def thaw(d: Path) -> None:
    """Undo freeze(); d is what freeze returned."""
    if (d / "freezer.state").exists():
        _write(d / "freezer.state", "THAWED")
    else:
        _write(d / "cgroup.freeze", "0")
