"""LXC: the system container of Linux Containers (lxc-start/lxc-attach), privileged, with
LXC's own defaults, as its users run an application container from a config file.

The study's image rootfs is the container's root (`lxc.rootfs.path = dir:ROOTFS`, read-only),
the benchmark volume bound at /data and a host scratch directory at /tmp (lxc.mount.entry).
`lxc.net.0.type = none` keeps the network namespace lxc-start runs in, and lxc-start runs
under `nsenter --net=` in the netns + veth sandbench prepared: the runc path. The container's
cgroups are children of the host sandbox's transient cgroup (`lxc.cgroup.dir.container =
sandbench/<id>/payload`, `.monitor = sandbench/<id>/monitor`), so the same limits apply and
one write freezes it. The config lives in sandbench's state directory (`-P state/lxc`), never
in the host's /var/lib/lxc.

Security baseline: LXC's defaults from /usr/share/lxc/config/common.conf: its seccomp
deny-list (common.seccomp: kexec_load, open_by_handle_at, init_module, finit_module,
delete_module), its capability drop list (mac_admin mac_override sys_time sys_module
sys_rawio; every other capability stays), no user namespace, AppArmor unconfined (none on
this host's kernel). spec.seccomp False sets an empty lxc.seccomp.profile. exec() is
lxc-attach, LXC's own way in: same namespaces, cgroup, capabilities and seccomp filter.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psutil

from sandbench import paths
from sandbench.environments.base import (
    IDLE_ARGV,
    Availability,
    Completed,
    Leftover,
    SandboxSpec,
    run_cmd,
)
from sandbench.environments.host import HostEnvironment
from sandbench.environments.rootfs_sandbox import RootfsSandbox
from sandbench.errors import SandboxError

COMMON_CONF = Path("/usr/share/lxc/config/common.conf")
#: Where LXC keeps a lock file per container: LOCK_ROOT/<lxcpath>/.<name>.
LOCK_ROOT = Path("/run/lxc/lock")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: What lxc-start needs of the rootfs: mount points for proc/sys/dev and the scratch /tmp
#: (the root is read-only, so LXC cannot create them).
LXC_NEEDS = ("proc", "sys", "dev", "tmp")


def lxcpath() -> Path:
    return paths.state("lxc")


def _version() -> str:
    if shutil.which("lxc-start") is None:
        return ""
    cp = subprocess.run(["lxc-start", "--version"], capture_output=True, text=True,
                        check=False, timeout=10)
    return cp.stdout.strip()


def _fstab_path(p: Path | str) -> str:
    # lxc.mount.entry is an fstab line: whitespace in a path is written octal-escaped.
    return str(p).replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011")


def _lock_file(ident: str) -> Path:
    return LOCK_ROOT / str(lxcpath()).lstrip("/") / f".{ident}"


def _remove_lock(ident: str) -> None:
    """LXC's lock file of the container, then the directories LXC made for sandbench's
    lxcpath below LOCK_ROOT, each only when empty (another container's lock keeps them)."""
    lock = _lock_file(ident)
    with contextlib.suppress(OSError):
        lock.unlink()
    d = lock.parent
    while d != LOCK_ROOT and LOCK_ROOT in d.parents:
        try:
            d.rmdir()
        except OSError:
            break
        d = d.parent


class LxcEnvironment(HostEnvironment):
    name = "lxc"
    description = "LXC system container (lxc-start; image rootfs read-only, prepared netns+veth)"
    family = "container"
    isolation_class = "system container"

    def available(self) -> Availability:
        found = Availability.tools(("lxc-start", "lxc"), ("lxc-attach", "lxc"),
                                   ("nsenter", "util-linux"))
        if not found.ok:
            return found
        if not COMMON_CONF.is_file():
            return Availability.no(f"{COMMON_CONF} missing (LXC's defaults): "
                                   "apt-get install --reinstall lxc")
        return Availability.yes()

    def facts(self) -> dict[str, Any]:
        return {
            "lxc": _version(),
            "network": "veth in the netns sandbench prepared (lxc.net.0.type = none under "
                       "nsenter --net=)",
            "namespaces": "mount, pid, ipc, uts, cgroup, net (the prepared netns); no user "
                          "namespace (a privileged container, LXC's default as root)",
            "user_namespace": "none (privileged container)",
            "capabilities": "all but those common.conf drops: mac_admin, mac_override, "
                            "sys_time, sys_module, sys_rawio (CAP_SYS_ADMIN stays)",
            "no_new_privs": "0 (LXC's default; lxc.no_new_privs not set)",
            "seccomp": "LXC's deny-list common.seccomp (kexec_load, open_by_handle_at, "
                       "init_module, finit_module, delete_module): far narrower than the OCI "
                       "default profile the OCI runtimes use",
            "seccomp_when_off": "none (empty lxc.seccomp.profile)",
            "apparmor": "unconfined (lxc.apparmor.profile)",
            "rootfs": "image rootfs read-only (lxc.rootfs.options = ro); volume bound at "
                      "/data; host scratch directory at /tmp; /dev a tmpfs LXC populates",
            "init": "the workload is the container's PID 1 (lxc-start -F -- ARGV)",
            "exec": "lxc-attach --clear-env: the container's namespaces, cgroup, "
                    "capabilities and seccomp filter",
            "memory_accounting": "the container's processes; the lxc-start monitor outside "
                                 "counted apart as a per-sandbox monitor "
                                 "(monitor_private_dirty)",
            "start_phases": "prepare (cgroup, netns+veth, config) / start (lxc-start; create "
                            "folded into start) / network",
            "freeze": "the sandbox's own cgroup's freezer (one write over payload/ and "
                      "monitor/)",
        }

    def leftovers(self) -> list[Leftover]:
        """Config directories (state/lxc/<id>) and LXC's lock files of sandboxes a killed
        run left: only sandbench ids with sandbench's own record (an owner record whose
        process is gone, or its scratch directory). A container in another lxcpath (the
        host's /var/lib/lxc) is never looked at. Processes and cgroups are the host
        environment's (the lxc-start monitor is in the sandbox's cgroup)."""
        root = paths.STATE_DIR / "lxc"
        lock_dir = _lock_file("x").parent
        names: set[str] = set()
        if root.is_dir():
            names |= {d.name for d in root.iterdir() if d.is_dir()}
        if lock_dir.is_dir():
            names |= {f.name[1:] for f in lock_dir.iterdir() if f.name.startswith(".")}
        live = paths.live_ids()
        found: list[Leftover] = []
        for ident in sorted(names):
            if not paths.is_sandbox_id(ident) or ident in live:
                continue
            if paths.owner(ident) is None and not (paths.STATE_DIR / "host" / ident).is_dir():
                continue

            def remove(ident: str = ident) -> None:
                shutil.rmtree(root / ident, ignore_errors=True)
                _remove_lock(ident)

            found.append(Leftover("lxc-container", f"{root / ident} and its LXC lock", remove))
        return found

    def prepare(self, spec: SandboxSpec) -> LxcSandbox:
        return LxcSandbox(spec, self.name)


class LxcSandbox(RootfsSandbox):
    needs = LXC_NEEDS
    tool = "lxc-start"
    launch_is_monitor = True  # the lxc-start monitor (nsenter execs it)

    def __init__(self, spec: SandboxSpec, env_name: str = "lxc") -> None:
        self.lxcdir: Path | None = None
        super().__init__(spec, env_name)

    def prepare_more(self) -> None:
        bad = [k for k, v in self.spec.env.items() if "\n" in k + v or "=" in k]
        if bad:
            raise SandboxError(f"lxc: environment variable {bad[0]!r} cannot be written to "
                               "an LXC config (a newline, or '=' in the name)",
                               {"env": sorted(self.spec.env)})
        self.lxcdir = lxcpath() / self.name
        self.lxcdir.mkdir(mode=0o700)
        (self.lxcdir / "config").write_text(self._config())

    def _config(self) -> str:
        rel = self.cgroup  # sandbench/<id>, relative to every hierarchy's root
        lines = [
            f"lxc.include = {COMMON_CONF}",
            f"lxc.uts.name = {self.name}",
            f"lxc.rootfs.path = dir:{self.rootfs}",
            "lxc.rootfs.options = ro",
            # The netns lxc-start runs in: the one sandbench prepared (nsenter --net=).
            "lxc.net.0.type = none",
            "lxc.console.path = none",
            "lxc.tty.max = 0",
            "lxc.apparmor.profile = unconfined",
            f"lxc.cgroup.dir.container = {rel}/payload",
            f"lxc.cgroup.dir.monitor = {rel}/monitor",
            f"lxc.mount.entry = {_fstab_path(self.scratch)} tmp none bind 0 0",
            # LXC gives PID 1 only container=lxc: PATH as in every other environment.
            f"lxc.environment = PATH={PATH}",
        ]
        if self.spec.volume is not None:
            lines.append(f"lxc.mount.entry = {_fstab_path(self.spec.volume)} "
                         f"{self.data_dir.lstrip('/')} none bind 0 0")
        lines += [f"lxc.environment = {k}={v}" for k, v in sorted(self.spec.env.items())]
        if self.spec.log:
            lines += [f"lxc.log.file = {self.spec.log}", "lxc.log.level = WARN"]
        if not self.spec.seccomp:
            lines.append("lxc.seccomp.profile =")
        return "\n".join(lines) + "\n"

    def launch(self, argv: list[str] | None = None) -> None:
        assert self.link is not None
        self.popen(["nsenter", f"--net={self.link.netns_path}", "lxc-start", "-n", self.name,
                    "-P", str(lxcpath()), "-F", "--", *(argv or self.spec.argv or IDLE_ARGV)])

    def leader_ready(self, pid: int) -> bool:
        # lxc-start's child sets the container up, then execs the workload: until then
        # lxc-attach would find no running container.
        try:
            return psutil.Process(pid).name() != "lxc-start"
        except psutil.Error:
            return False

    def exec(self, argv: list[str], timeout: float = 60.0) -> Completed:
        self.wait_leader(timeout)
        assert self.link is not None
        # lxc-start's command socket is an abstract unix socket, which belongs to a network
        # namespace: lxc-attach reaches it only from the container's.
        cmd = ["nsenter", f"--net={self.link.netns_path}", "lxc-attach", "-n", self.name,
               "-P", str(lxcpath()), "--clear-env", "--set-var", f"PATH={PATH}"]
        for k, v in sorted(self.spec.env.items()):
            cmd += ["--set-var", f"{k}={v}"]
        # lxc-attach moves itself into the container's cgroup: no join beforehand.
        cp = run_cmd([*cmd, "--", *argv], timeout=timeout, check=False)
        return Completed(argv, cp.returncode, cp.stdout, cp.stderr)

    def _stop(self) -> None:
        try:
            super()._stop()
        finally:
            # Also reached from a failed prepare, before the config directory exists.
            if getattr(self, "lxcdir", None) is not None:
                shutil.rmtree(self.lxcdir, ignore_errors=True)  # type: ignore[arg-type]
            _remove_lock(self.name)
