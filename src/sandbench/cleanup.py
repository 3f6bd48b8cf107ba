"""Find and remove what killed or crashed runs left behind, and nothing else.

Each environment lists its own leftovers (Environment.leftovers(), matched by sandbench's
mark only: its state root, its label, its containerd namespace, its own daemon's
descendants). What no single driver owns is found here or by the module that makes it:
namespaces and links (net.py, a name pattern plus an owner record), volumes (volume.py, a
name pattern plus an owner file, in a marked volume directory), cgroups (cgroups.py, the
sandbench/ tree of each hierarchy), mounts and state entries under the marked state
directory, and processes that run a binary only sandbench ships or live in its cgroups.

Anything of a sandbox whose owner process still runs is in use, not a leftover: a run's own
sandboxes never show up as "leftovers of earlier runs", and clean never removes them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import groupby
from pathlib import Path

import psutil

from sandbench import cgroups, net, paths, procs
from sandbench.cgroups import remove_empty_cgroups
from sandbench.sandbox_values import Leftover

__all__ = ["CleanReport", "Leftover", "cgroup_dirs", "clean", "find_leftovers",
           "remove_empty_cgroups"]

def cgroup_dirs() -> list[Path]:
    """The tool's cgroups, children before parents, each hierarchy once (tests compare it)."""
    return cgroups.owned_dirs()


# -- finding ---------------------------------------------------------------------------------


def _environments_leftovers() -> list[Leftover]:
    # Imported here: the drivers import modules that import this one.
    from sandbench.environments.registry import all_environments

    found: list[Leftover] = []
    for env in all_environments():
        try:
            found += env.leftovers()
        except Exception as e:  # noqa: BLE001 - one broken driver must not hide the rest
            found.append(Leftover("error", f"{env.name}: listing leftovers failed: {e}",
                                  _cannot_remove))
    return found


def _cannot_remove() -> None:
    raise RuntimeError("nothing to remove: the listing itself failed")


def _own_lineage(children: bool = True) -> set[int]:
    me = psutil.Process()
    kids = {p.pid for p in me.children(True)} if children else set()
    return {me.pid, *(p.pid for p in me.parents()), *kids}


def _exe_roots() -> list[str]:
    """Directories whose binaries only sandbench runs: the image cache (the host environment
    runs the image's tools from there), the marked state and volume directories."""
    from sandbench.volume import VOLUME_ROOT

    roots = []
    if paths.unsafe_dir_reason(paths.CACHE_DIR) is None and paths.is_marked(paths.CACHE_DIR):
        roots.append(f"{paths.CACHE_DIR}/images/")
    state = paths.state_root_if_ours()
    if state is not None:
        roots.append(f"{state}/")
    if paths.is_marked(VOLUME_ROOT):
        roots.append(f"{VOLUME_ROOT}/")
    return roots


def _sandbench_cgroup(pid: int) -> str | None:
    """The process's cgroup path when it lies in a sandbench/ tree (any hierarchy)."""
    try:
        with open(f"/proc/{pid}/cgroup") as fh:
            for line in fh:
                path = line.rstrip("\n").split(":", 2)[-1]
                if path.endswith(" (deleted)"):
                    return None  # exiting (a zombie): its cgroup went already, nothing to do
                if path == f"/{cgroups.BASE}" or path.startswith(f"/{cgroups.BASE}/"):
                    return path
    except OSError:
        pass
    return None


def _stray_processes(listed: set[int], own_children: bool = False) -> list[Leftover]:
    """Processes that are sandbench's by a mark they carry, not by what their argv names: a
    binary that only sandbench runs (its executable lies in the image cache, the state or
    the volume directory), or membership of a sandbench/ cgroup. A user's `tail -f` of a
    file in the state directory or `du` of the volume directory is neither. Skipped: those
    a driver already listed, this process's lineage, and those of a live sandbox."""
    roots = _exe_roots()
    skip = _own_lineage(children=not own_children) | listed
    live = paths.live_ids()
    found = []
    for p in psutil.process_iter(["pid", "name", "cmdline", "create_time", "status"]):
        pid = p.info["pid"]
        if pid in skip or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue  # a zombie holds nothing and cannot be killed: its parent reaps it
        try:
            exe = p.exe()
        except psutil.Error:
            exe = ""
        group = _sandbench_cgroup(pid)
        if not (group or any(exe.startswith(r) for r in roots)):
            continue
        if (paths.ids_in(" ".join(p.info["cmdline"] or [])) | paths.ids_in(group or "")) & live:
            continue
        where = f" (in {group})" if group else ""
        found.append(Leftover("process", f"{pid} {p.info['name']}{where}",
                              partial(procs.kill_exact, pid, p.info["create_time"])))
    return found


def _mounts_under_state() -> list[Leftover]:
    """Mounts strictly below the marked state directory (deepest first)."""
    state = paths.state_root_if_ours()
    if state is None:
        return []
    live = paths.live_ids()
    prefix = str(state).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            mnt = line.split()[4].replace("\\040", " ")
            if mnt.startswith(prefix) and not paths.ids_in(mnt) & live:
                found.append(mnt)
    return [Leftover("mount", m, partial(_umount, m))
            for m in sorted(set(found), key=len, reverse=True)]


def _mounted() -> set[str]:
    with open("/proc/self/mountinfo") as fh:
        return {line.split()[4].replace("\\040", " ") for line in fh}


def _umount(mnt: str) -> None:
    from sandbench.environments.base import run_cmd

    if mnt in _mounted():  # an item removed before (a daemon's store) took it already
        run_cmd(["umount", "-l", mnt], timeout=30)


def _cgroup_leftovers() -> list[Leftover]:
    """sandbench/<name> trees (one item per name, all hierarchies), then the parent."""
    live = paths.live_ids()
    rels: dict[str, int] = {}
    parent = False
    for h in cgroups.hierarchies():
        top = h / cgroups.BASE
        if not top.is_dir():
            continue
        parent = True
        for child in top.iterdir():
            if child.is_dir():
                rel = f"{cgroups.BASE}/{child.name}"
                rels[rel] = rels.get(rel, 0) + 1
    found = [Leftover("cgroup", f"{rel} ({n} hierarch{'y' if n == 1 else 'ies'})",
                      partial(_remove_cgroup, rel))
             for rel, n in sorted(rels.items()) if not paths.ids_in(rel) & live]
    if parent and len(found) == len(rels):
        found.append(Leftover("cgroup", f"{cgroups.BASE}/ (parent)", _remove_cgroup_parent))
    return found


def _remove_cgroup(rel: str) -> None:
    failed = cgroups.remove_tree(rel)
    if failed:
        raise OSError(f"{len(failed)} not removed, first: {failed[0]}")


def _remove_cgroup_parent() -> None:
    remove_empty_cgroups(min_age_s=0)
    left = [str(h / cgroups.BASE) for h in cgroups.hierarchies() if (h / cgroups.BASE).exists()]
    if left:
        raise OSError(f"still there (busy or not empty): {', '.join(left[:3])}")


def _state_entries() -> list[Leftover]:
    """Bundles and VM directories of sandboxes no live process owns; owner records of dead
    processes (last: the items above are matched through them)."""
    state = paths.state_root_if_ours()
    if state is None:
        return []
    live = paths.live_ids()
    found = []
    for sub in ("bundles", "vm"):
        d = state / sub
        for entry in sorted(d.iterdir()) if d.is_dir() else []:
            if paths.is_sandbox_id(entry.name) and entry.name not in live:
                found.append(Leftover("state", str(entry), partial(_rm, entry)))
    for rec in paths.owners():
        if not rec.alive():
            found.append(Leftover("owner record", f"{rec.ident} (pid {rec.pid})",
                                  partial(paths.release, rec.ident)))
    return found


def find_leftovers(own_children: bool = False) -> list[Leftover]:
    """Everything killed runs left, in removal order. Runs no availability probe and
    creates nothing, so it may run first thing in a run; sandboxes of live processes
    (this one included) are not listed."""
    from sandbench import volume

    drivers = _environments_leftovers()
    listed = set()
    for item in drivers:
        head = item.ident.split(" ", 1)[0]
        if item.kind == "process" and head.isdigit():
            listed.add(int(head))
    found = [
        *drivers,
        *_stray_processes(listed, own_children),
        *net.leftovers(),
        *_mounts_under_state(),
        *_cgroup_leftovers(),
        *volume.leftover_items(),
        *_state_entries(),
    ]
    # Whatever a driver lists, an item naming a sandbox whose owner runs is in use.
    live = paths.live_ids()
    unique: dict[tuple[str, str], Leftover] = {}
    for item in found:
        if not paths.ids_in(item.ident) & live:
            unique.setdefault((item.kind, item.ident), item)
    return list(unique.values())


# -- removing ----------------------------------------------------------------------------------


@dataclass
class CleanReport:
    removed: list[Leftover] = field(default_factory=list)
    #: What could not be removed, each with the reason.
    failed: list[tuple[Leftover, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def lines(self) -> list[str]:
        return [str(i) for i in self.removed] + [str(i) for i, _ in self.failed]

    # A sequence of lines, as clean() returned before (the run's leftover warning uses it).
    def __len__(self) -> int:
        return len(self.removed) + len(self.failed)

    def __getitem__(self, i: int) -> str:
        return self.lines()[i]


#: Kinds whose items are independent of each other (one container, process, namespace, link,
#: file each): a run of them is removed in parallel, since a killed density ramp leaves
#: thousands (2,476 runc sandboxes took 5 min one by one). Cgroups (children before parents),
#: mounts (nested), daemons and their networks and images go one by one, in order.
PARALLEL_KINDS = frozenset({"container", "docker container", "podman container", "process",
                            "netns", "link", "tap", "address slot", "state", "owner record",
                            "volume"})
CLEAN_WORKERS = 8


def clean(dry_run: bool = False,
          on_item: Callable[[Leftover, str | None], None] | None = None) -> CleanReport:
    """Remove every leftover, in order. An item whose removal raised, or that is still
    found afterwards, is reported as failed with the reason; dry_run only lists (as
    removed: the caller says "would remove")."""
    items = find_leftovers()
    report = CleanReport()
    if dry_run:
        report.removed = items
        return report
    errors: dict[tuple[str, str], str] = {}

    def remove(item: Leftover) -> None:
        try:
            item.remove()
        except Exception as e:  # noqa: BLE001 - reported per item, clean goes on
            errors[(item.kind, item.ident)] = f"{type(e).__name__}: {e}"

    for kind, run in groupby(items, key=lambda i: i.kind):
        group = list(run)
        if kind in PARALLEL_KINDS and len(group) > 1:
            with ThreadPoolExecutor(max_workers=CLEAN_WORKERS) as pool:
                list(pool.map(remove, group))
        else:
            for item in group:
                remove(item)
    still = {(i.kind, i.ident) for i in find_leftovers()}
    for item in items:
        key = (item.kind, item.ident)
        if key in errors or key in still:
            reason = errors.get(key, "still present after removal")
            report.failed.append((item, reason))
        else:
            report.removed.append(item)
        if on_item is not None:
            on_item(item, errors.get(key) or ("still present after removal"
                                              if key in still else None))
    return report


def _rm(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)
