"""systemd-nspawn: systemd's namespace container, run as its users run it on a machine whose
PID 1 is not systemd (`--register=no --keep-unit`: no machined, no transient unit).

The study's image rootfs is the container's root (`-D ROOTFS --read-only`), the benchmark
volume bound at /data and a host scratch directory at /tmp; the container joins the netns +
veth sandbench prepared (`--network-namespace-path=`, the runc path); with --keep-unit it
stays in the host sandbox's transient cgroup, which gives the same limits (systemd-nspawn
joins it before exec) and freezes with one write. `--as-pid2`: nspawn's own stub init is PID 1
and reaps what daemonized servers leave, the workload runs as PID 2.

Security baseline: nspawn's defaults (its system-call allow-list, its capability bounding
set, no user namespace); spec.seccomp False sets SYSTEMD_SECCOMP=0, systemd's documented
switch that turns its seccomp filters off. exec() enters the running container with nsenter
(every namespace, its root and working directory, the cgroup): systemd-nspawn has no command
of its own for that without machined (`machinectl shell`), so exec'd commands run without
nspawn's filter and bounding set; facts say so.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path
from typing import Any

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

#: Where systemd-nspawn keeps a directory per machine name (mount propagation).
PROPAGATE = Path("/run/systemd/nspawn/propagate")
#: What nspawn requires of the directory it is given (it refuses a tree without /usr).
NSPAWN_NEEDS = ("usr", "proc", "sys", "dev", "tmp")


def _version() -> str:
    if shutil.which("systemd-nspawn") is None:
        return ""
    out = subprocess.run(["systemd-nspawn", "--version"], capture_output=True, text=True,
                         check=False, timeout=10).stdout
    return out.splitlines()[0].strip() if out else ""


class NspawnEnvironment(HostEnvironment):
    name = "nspawn"
    description = "systemd-nspawn container (image rootfs read-only, prepared netns+veth)"
    family = "container"
    isolation_class = "container"

    def available(self) -> Availability:
        return Availability.tools(("systemd-nspawn", "systemd-container"),
                                  ("nsenter", "util-linux"))

    def facts(self) -> dict[str, Any]:
        return {
            "systemd-nspawn": _version(),
            "network": "veth in the netns sandbench prepared (--network-namespace-path=)",
            "namespaces": "mount, pid, ipc, uts, cgroup, net (the prepared netns); no user "
                          "namespace (nspawn's default)",
            "user_namespace": "none (--private-users off, nspawn's default)",
            "capabilities": "nspawn's default bounding set (it drops, among others, "
                            "CAP_SYS_MODULE, CAP_SYS_TIME, CAP_SYS_RAWIO; read back from "
                            "/proc in the tests)",
            "no_new_privs": "0 (nspawn's default; --no-new-privileges not given)",
            "seccomp": "nspawn's own system-call allow-list (its default filter)",
            "seccomp_when_off": "none (SYSTEMD_SECCOMP=0)",
            "rootfs": "image rootfs read-only (-D --read-only); volume bound at /data; "
                      "host scratch directory at /tmp; --timezone=off --resolv-conf=off "
                      "(nothing bound over the image's /etc)",
            "registration": "--register=no --keep-unit (PID 1 here is not systemd)",
            "exec": "nsenter into the container's namespaces, root and cgroup (no machined "
                    "for machinectl shell): exec'd commands and the servers they start run "
                    "without nspawn's seccomp filter and bounding set",
            "memory_accounting": "the container's processes (nspawn's stub init and the "
                                 "workload); the systemd-nspawn process outside counted "
                                 "apart as a per-sandbox monitor (monitor_private_dirty)",
            "start_phases": "prepare (cgroup, netns+veth) / start (systemd-nspawn; create "
                            "folded into start) / network",
            "freeze": "the sandbox's own cgroup's freezer (one write)",
        }

    def leftovers(self) -> list[Leftover]:
        """nspawn's propagation directories (/run/systemd/nspawn/propagate/<machine>) of
        sandboxes a killed run left: only names that are sandbench ids with sandbench's own
        record (an owner record whose process is gone, or its scratch directory), never a
        machine of someone else's. Processes and cgroups are the host environment's."""
        if not PROPAGATE.is_dir():
            return []
        live = paths.live_ids()
        found: list[Leftover] = []
        for d in sorted(PROPAGATE.iterdir()):
            ident = d.name
            if not paths.is_sandbox_id(ident) or ident in live:
                continue
            if paths.owner(ident) is None and not (paths.STATE_DIR / "host" / ident).is_dir():
                continue

            def remove(d: Path = d) -> None:
                with contextlib.suppress(OSError):
                    d.rmdir()  # empty once its container is gone; never a recursive delete

            found.append(Leftover("nspawn-propagate", str(d), remove))
        return found

    def prepare(self, spec: SandboxSpec) -> NspawnSandbox:
        return NspawnSandbox(spec, self.name)


class NspawnSandbox(RootfsSandbox):
    needs = NSPAWN_NEEDS
    tool = "systemd-nspawn"
    launch_is_monitor = True  # the systemd-nspawn process outside the container

    def _argv(self, argv: list[str]) -> list[str]:
        assert self.link is not None
        a = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--as-pid2",
             f"--machine={self.name}", "-D", str(self.rootfs), "--read-only",
             f"--network-namespace-path={self.link.netns_path}", "--timezone=off",
             "--resolv-conf=off", f"--bind={self.scratch}:/tmp"]
        if self.spec.volume is not None:
            a.append(f"--bind={self.spec.volume}:{self.data_dir}")
        for k, v in sorted(self.spec.env.items()):
            a.append(f"--setenv={k}={v}")
        return [*a, "--", *argv]

    def launch(self, argv: list[str] | None = None) -> None:
        # SYSTEMD_SECCOMP=0: systemd's documented switch for its seccomp filters.
        self.popen(self._argv(argv or self.spec.argv or IDLE_ARGV),
                   env=self.environ(None if self.spec.seccomp else {"SYSTEMD_SECCOMP": "0"}))

    def exec(self, argv: list[str], timeout: float = 60.0) -> Completed:
        leader = self.wait_leader(timeout)
        cmd = ["nsenter", f"--target={leader}", "--mount", "--uts", "--ipc", "--net",
               "--pid", "--cgroup", "--root", "--wd", "--", "/usr/bin/env", "-i",
               "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               *[f"{k}={v}" for k, v in sorted(self.spec.env.items())], *argv]
        if not (self.rootfs / "usr/bin/env").exists():
            # The minimal image has busybox's env at /bin/env only.
            cmd[cmd.index("/usr/bin/env")] = "/bin/env"
        cp = run_cmd(cmd, timeout=timeout, check=False, preexec_fn=self._join_cgroup)
        return Completed(argv, cp.returncode, cp.stdout, cp.stderr)

    def _stop(self) -> None:
        try:
            super()._stop()
        finally:
            # nspawn's per-machine propagation directory, named by sandbench's id.
            with contextlib.suppress(OSError):
                (PROPAGATE / self.name).rmdir()
