"""firejail: the SUID namespace sandbox of desktop users and of some agents' tool runners.

The study's image rootfs is the sandbox's root (`firejail --chroot`), read-only, with the
benchmark volume at /data and a host scratch directory at /tmp; the sandbox joins the netns
+ veth sandbench prepared (`--netns=`, the runc path); the host sandbox's transient cgroup
gives the same limits (firejail and everything under it join it before exec).

Debian's /etc/firejail/firejail.config disables --chroot (host-wide). sandbench does not
change that file: each sandbox starts in a private mount namespace (`unshare --mount`) where
a copy of it with `chroot yes` is bind-mounted over the original, and where the per-sandbox
view of the rootfs is assembled (read-only bind of the image, tmpfs /run for firejail's own
files, the volume and scratch binds), so that firejail never writes into the shared image and
every mount goes away with the sandbox's last process.

Security baseline as firejail applies it with `--noprofile --seccomp --nonewprivs`: firejail's
default seccomp blacklist, no_new_privs, and the capability set runc's bundles get
(`--caps.keep`), so the numbers compare with runc's. exec() is `firejail --join`, firejail's
own path into a running sandbox: run by root (as here) it joins the namespaces and the chroot
but firejail applies the sandbox's seccomp filter and capability bound only to non-root
joiners, so exec'd commands (the servers of the MariaDB and nginx benchmarks) run without
them; facts say so next to the numbers.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psutil

from sandbench import cgroups, paths
from sandbench.environments import oci_spec
from sandbench.environments.base import (
    IDLE_ARGV,
    Availability,
    Completed,
    Leftover,
    SandboxSpec,
    run_cmd,
)
from sandbench.environments.host import HostEnvironment, _kill_cgroup
from sandbench.environments.rootfs_sandbox import RootfsSandbox
from sandbench.errors import SandboxError

FIREJAIL_CONFIG = Path("/etc/firejail/firejail.config")
#: Where firejail keeps a file per named sandbox, named by its parent's pid and holding the
#: name (its --list and --join read them).
FIREJAIL_NAMES = Path("/run/firejail/name")
FIREJAIL_SANDBOXES = Path("/run/firejail/sandbox")
#: Directories firejail's --chroot requires in the new root (checked before it starts).
CHROOT_NEEDS = ("dev", "proc", "tmp", "etc", "var/tmp", "run")

_WRAPPER = """set -e
mount --bind "$SB_CONF" /etc/firejail/firejail.config
mount --bind "$SB_ROOTFS" "$SB_VIEW"
mount -o remount,bind,ro "$SB_VIEW"
mount -t tmpfs -o mode=755 tmpfs "$SB_VIEW/run"
mount --bind "$SB_SCRATCH" "$SB_VIEW/tmp"
if [ -n "$SB_VOLUME" ]; then mount --bind "$SB_VOLUME" "$SB_VIEW$SB_DATA"; fi
unset SB_CONF SB_ROOTFS SB_VIEW SB_SCRATCH SB_VOLUME SB_DATA
exec "$@"
"""


#: firejail mounts /run/firejail/* (read-only markers, dbus) in whatever mount namespace it
#: starts in; each call here gets a private one, so none is left on the host.
PRIVATE_MOUNTS = ("unshare", "--mount", "--propagation", "private", "--")


def _caps() -> str:
    return ",".join(c.removeprefix("CAP_").lower() for c in oci_spec.DEFAULT_CAPS)


def _version() -> str:
    if shutil.which("firejail") is None:
        return ""
    # Even --version mounts firejail's /run/firejail markers where it runs: keep them in a
    # mount namespace of its own, as every other firejail call here.
    out = subprocess.run([*PRIVATE_MOUNTS, "firejail", "--version"], capture_output=True,
                         text=True, check=False, timeout=10).stdout
    return out.splitlines()[0].strip() if out else ""


def _chroot_disabled() -> bool:
    """Whether the host's firejail.config turns --chroot off (Debian's does: `chroot no`
    commented out, and firejail's built-in default is no)."""
    try:
        text = FIREJAIL_CONFIG.read_text()
    except OSError:
        return True
    m = re.findall(r"^\s*chroot\s+(yes|no)\s*$", text, re.M)
    return not m or m[-1] == "no"


class FirejailEnvironment(HostEnvironment):
    name = "firejail"
    description = "firejail SUID sandbox (--chroot to the image rootfs, prepared netns+veth)"
    family = "sandbox"
    isolation_class = "process sandbox"

    def available(self) -> Availability:
        found = Availability.tools(("firejail", "firejail"), ("unshare", "util-linux"),
                                   ("mount", "mount"))
        if not found.ok:
            return found
        if not FIREJAIL_CONFIG.is_file():
            return Availability.no(f"{FIREJAIL_CONFIG} missing: reinstall Debian's firejail "
                                   "(apt-get install --reinstall firejail)")
        if not os.stat(shutil.which("firejail") or "/").st_mode & 0o4000:
            return Availability.no("firejail is not setuid root here: reinstall Debian's "
                                   "firejail or run `dpkg-statoverride` to restore its mode")
        return Availability.yes()

    def facts(self) -> dict[str, Any]:
        return {
            "firejail": _version(),
            "network": "veth in the netns sandbench prepared (--netns=)",
            "namespaces": "mount, pid, ipc, uts, net (the prepared netns); no user namespace",
            "user_namespace": "none (run as root; firejail's --noroot is not used)",
            "capabilities": "the OCI default set runc's bundles get (--caps.keep=...)",
            "no_new_privs": "1 (--nonewprivs)",
            "seccomp": "firejail's default seccomp blacklist (--seccomp); firejail cannot "
                       "load the containers-common profile the OCI runtimes run",
            "seccomp_when_off": "none (no --seccomp; --nonewprivs and --caps.keep stay)",
            "profile": "--noprofile (the options above instead of /etc/firejail/*.profile, "
                       "whose desktop blacklists name host paths the image does not have)",
            "rootfs": "image rootfs read-only as the chroot (--chroot); volume bound at "
                      "/data; host scratch directory at /tmp; tmpfs /run; host /dev "
                      "(firejail's default without --private-dev)",
            "chroot_config": f"{FIREJAIL_CONFIG} is left as it is ({'chroot disabled' if _chroot_disabled() else 'chroot enabled'}); "  # noqa: E501
                             "each sandbox's private mount namespace binds a copy with "
                             "`chroot yes` over it",
            "exec": "firejail --join=PID (run by root: joins the namespaces and chroot; "
                    "firejail applies the seccomp filter, capability bound and "
                    "no_new_privs on join only for non-root users, so exec'd commands and "
                    "the servers they start run without them)",
            "memory_accounting": "the sandbox's processes; firejail's two monitor "
                                 "processes (the parent outside and its child inside the "
                                 "namespaces) counted apart as a per-sandbox overhead "
                                 "(monitor_private_dirty)",
            "start_phases": "prepare (cgroup, netns+veth, chroot view directory) / start "
                            "(unshare + 6 mounts + firejail; create folded into start) / "
                            "network",
            "freeze": "the sandbox's own cgroup's freezer (one write)",
        }

    def leftovers(self) -> list[Leftover]:
        """Chroot view directories under state/firejail and firejail's name files of
        sandboxes a killed run left, matched by sandbench's id with a view directory of its
        own (a foreign `firejail --name=sb...` has none and is never touched). Processes and
        cgroups are the host environment's leftovers (state/host/<id>)."""
        root = paths.state_root_if_ours()
        d = root / "firejail" if root else None
        if d is None or not d.is_dir():
            return []
        live = paths.live_ids()
        found: list[Leftover] = []
        for view in sorted(d.iterdir()):
            if not paths.is_sandbox_id(view.name) or view.name in live:
                continue

            def remove(view: Path = view) -> None:
                # Its processes first (the host environment's leftover removes the cgroup
                # too, in whichever order clean runs them): a live firejail keeps its record.
                _kill_cgroup(f"{cgroups.BASE}/{view.name}")
                _remove_name_file(view.name)
                with contextlib.suppress(OSError):
                    view.rmdir()  # an empty mount point: its mounts died with the sandbox

            found.append(Leftover("firejail-view", str(view), remove))
        return found

    def prepare(self, spec: SandboxSpec) -> FirejailSandbox:
        return FirejailSandbox(spec, self.name)


def _remove_name_file(ident: str) -> None:
    """firejail's own records of a named sandbox (/run/firejail/name/<pid> holding the name,
    /run/firejail/sandbox/<pid>), left when its parent was SIGKILLed; removed only for the
    name `ident` and only while no firejail process has that pid."""
    if not FIREJAIL_NAMES.is_dir():
        return
    for f in FIREJAIL_NAMES.iterdir():
        try:
            if f.read_text().strip() != ident or not f.name.isdigit():
                continue
        except OSError:
            continue
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(int(f.name))
            if proc.name() == "firejail" and proc.status() != psutil.STATUS_ZOMBIE:
                continue
        f.unlink(missing_ok=True)
        (FIREJAIL_SANDBOXES / f.name).unlink(missing_ok=True)


def _command(argv: list[str]) -> list[str]:
    if not argv or argv[0].startswith("-"):
        raise SandboxError(f"firejail: a command must start with a program, got {argv!r}",
                           {"argv": argv})
    return argv


class FirejailSandbox(RootfsSandbox):
    needs = CHROOT_NEEDS
    tool = "firejail --chroot"

    def __init__(self, spec: SandboxSpec, env_name: str = "firejail") -> None:
        self.view = paths.state("firejail") / paths.new_id()  # replaced by the id below
        super().__init__(spec, env_name)

    def prepare_more(self) -> None:
        self.view = paths.state("firejail") / self.name
        self.view.mkdir(mode=0o700)
        self.conf = self._config()

    def _config(self) -> Path:
        """The host's firejail.config with chroot enabled, for this sandbox's mount
        namespace only (written once per state directory, replaced atomically)."""
        conf = paths.state("firejail") / "firejail.config"
        text = FIREJAIL_CONFIG.read_text() + "\n# sandbench: for its own sandboxes only\n" \
            "chroot yes\n"
        if not conf.exists() or conf.read_text() != text:
            tmp = conf.with_name(f".firejail.config.{os.getpid()}")
            tmp.write_text(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, conf)
        return conf

    def _argv(self, argv: list[str]) -> list[str]:
        assert self.link is not None
        a = [*PRIVATE_MOUNTS, "/bin/sh", "-c",
             _WRAPPER, "firejail-wrap",
             "firejail", "--quiet", "--noprofile", f"--name={self.name}",
             f"--chroot={self.view}", f"--netns={self.link.netns}", "--nonewprivs",
             f"--caps.keep={_caps()}"]
        if self.spec.seccomp:
            a.append("--seccomp")
        for k, v in sorted(self.spec.env.items()):
            a.append(f"--env={k}={v}")
        # No "--" before the command: firejail 0.9.72 then fails to start it ("Cannot
        # start application"); sandbench's commands are absolute paths, never options.
        return [*a, *_command(argv)]

    def _wrapper_env(self) -> dict[str, str]:
        return {**os.environ, "SB_CONF": str(self.conf), "SB_ROOTFS": str(self.rootfs),
                "SB_VIEW": str(self.view), "SB_SCRATCH": str(self.scratch),
                "SB_VOLUME": str(self.spec.volume or ""), "SB_DATA": self.data_dir}

    def launch(self, argv: list[str] | None = None) -> None:
        self.popen(self._argv(argv or self.spec.argv or IDLE_ARGV), env=self._wrapper_env())

    def _joinable(self) -> bool:
        # unshare and the wrapper exec firejail: its parent has launch's pid.
        return self.proc is not None and (FIREJAIL_NAMES / str(self.proc.pid)).exists()

    def exec(self, argv: list[str], timeout: float = 60.0) -> Completed:
        """firejail --join: the sandbox's namespaces and chroot (see the module's note on
        what firejail does not apply to a root joiner). firejail joins by name once the
        sandbox registered it (joined by its parent's pid, which firejail resolves to the
        supervisor inside); a join sent before that fails."""
        if not self._joinable():
            self._wait_joinable(timeout)
        # firejail quotes each argument itself when it builds the joined command line.
        assert self.proc is not None
        # In a private mount namespace as launch's: firejail mounts /run/firejail/* (its
        # read-only markers, dbus) wherever it starts, and a join on the host would leave
        # those mounts on the host. The join enters the sandbox's own namespaces anyway.
        cmd = [*PRIVATE_MOUNTS, "firejail", "--quiet", f"--join={self.proc.pid}", *_command(argv)]
        cp = run_cmd(cmd, timeout=timeout, check=False, preexec_fn=self._join_cgroup,
                     env={**os.environ, **self.spec.env})
        return Completed(argv, cp.returncode, cp.stdout, cp.stderr)

    def _wait_joinable(self, timeout: float) -> None:
        import time

        deadline = time.monotonic() + min(timeout, 10.0)
        while not self._joinable():
            if self.proc is None or self.proc.poll() is not None \
                    or time.monotonic() > deadline:
                raise SandboxError(
                    f"firejail: sandbox {self.name} never registered its name "
                    f"in {FIREJAIL_NAMES}: {self.describe_state()}",
                    {"name_dir": str(FIREJAIL_NAMES), "log": str(self.spec.log)})
            time.sleep(0.005)

    def monitor_pids(self) -> list[int]:
        """firejail's own processes: the parent (outside the namespaces) and its child, the
        sandbox's supervisor; the workload runs under them."""
        if self.proc is None:
            return []
        out: list[int] = []
        with contextlib.suppress(psutil.Error):
            top = psutil.Process(self.proc.pid)
            out = [p.pid for p in [top, *top.children(recursive=True)]
                   if p.name() == "firejail"]
        return out

    def _stop(self) -> None:
        try:
            # SIGKILL at once, as for the host (a SIGTERM costs firejail about 1 s to pass on
            # and wait out): the name and sandbox records it would have removed go below.
            super()._stop()
        finally:
            # Also called by a failed prepare, before the view exists.
            _remove_name_file(self.name)
            with contextlib.suppress(OSError):
                self.view.rmdir()
