"""bubblewrap (bwrap): a process sandbox, the base of Flatpak and of coding agents' sandboxes.

The study's image rootfs is bound read-only as /, the benchmark volume read-write at /data,
a host scratch directory at /tmp (rootfs_sandbox.py). bwrap runs under `nsenter --net=` in
the netns + veth sandbench prepared (net.py), the same path as runc; the host sandbox's
transient cgroup gives the same limits (every process joins it before exec).
Seccomp: the containers-common profile compiled to BPF by libseccomp (seccomp_bpf.py) and
passed as `--seccomp FD`; spec.seccomp False = none.
bwrap cannot run a command in a running sandbox: exec() starts a second bwrap with the same
netns, mounts, cgroup and filter.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from sandbench import seccomp, seccomp_bpf
from sandbench.environments import oci_spec
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

FREEZE = "SIGSTOP/SIGCONT of the sandbox's processes"


class BubblewrapEnvironment(HostEnvironment):
    name = "bubblewrap"
    description = "bubblewrap process sandbox (image rootfs read-only, prepared netns+veth)"
    family = "sandbox"
    isolation_class = "process sandbox"
    exec_not_applicable = ("bwrap has no command to run a process in a running sandbox "
                           "(sandbench's exec starts a second bwrap in the same netns, mounts, "
                           "cgroup and filter)")

    def available(self) -> Availability:
        if shutil.which("bwrap") is None:
            return Availability.no("bwrap not found: apt-get install bubblewrap")
        if shutil.which("nsenter") is None:
            return Availability.no("nsenter not found: apt-get install util-linux")
        return Availability.yes()

    def facts(self) -> dict[str, Any]:
        ver = ""
        if shutil.which("bwrap"):
            ver = subprocess.run(["bwrap", "--version"], capture_output=True, text=True,
                                 check=False).stdout.strip()
        return {
            "bwrap": ver,
            "network": "veth in the netns sandbench prepared (nsenter --net=)",
            "namespaces": "mount, pid, ipc, uts, cgroup (--unshare-all minus user and net: "
                          "net is the prepared netns)",
            "user_namespace": "none (run as root, as bwrap does when started by root)",
            "capabilities": "the OCI default set runc's bundles get (--cap-drop ALL, "
                            "--cap-add each of oci_spec.DEFAULT_CAPS); bwrap run by root "
                            "would otherwise keep all",
            "no_new_privs": "1 (bwrap always sets PR_SET_NO_NEW_PRIVS)",
            "seccomp": f"{seccomp.describe()}, compiled to BPF by libseccomp "
                       "(python3-seccomp under /usr/bin/python3), --seccomp FD",
            "seccomp_when_off": "none (bwrap's own default)",
            "rootfs": "image rootfs --ro-bind as /; volume --bind at /data; tmpfs /tmp",
            "exec": "a second bwrap with the same netns, binds, cgroup and seccomp filter "
                    "(host pid namespace, so that daemonized servers outlive it)",
            "memory_accounting": "bwrap's own two processes are in the sandbox's cgroup and "
                                 "counted with it (no separate monitor)",
            "start_phases": "prepare (cgroup, netns+veth, seccomp BPF) / start (bwrap; "
                            "create folded into start) / network",
            "freeze": FREEZE,
        }

    def leftovers(self) -> list[Leftover]:
        """None of its own: a bubblewrap sandbox leaves a state/host/<id> scratch directory
        and sandbench/<id> cgroup (found by the host environment's leftovers()) and a netns
        and veth (found by net.leftovers()); listing them here too would list them twice."""
        return []

    def prepare(self, spec: SandboxSpec) -> BubblewrapSandbox:
        return BubblewrapSandbox(spec, self.name)


class BubblewrapSandbox(RootfsSandbox):
    tool = "bwrap"

    def __init__(self, spec: SandboxSpec, env_name: str = "bubblewrap") -> None:
        self._bpf: bytes | None = None
        super().__init__(spec, env_name)

    def prepare_more(self) -> None:
        if self.spec.seccomp:
            self._bpf = seccomp_bpf.compile_bpf(seccomp.default_oci(oci_spec.DEFAULT_CAPS))

    def _bwrap_argv(self, argv: list[str], seccomp_fd: int | None,
                    first: bool = True) -> list[str]:
        assert self.link is not None
        # /tmp is the host scratch directory, so launch's and exec's processes share it.
        a = ["nsenter", f"--net={self.link.netns_path}", "bwrap",
             "--ro-bind", str(self.rootfs), "/", "--proc", "/proc", "--dev", "/dev",
             "--bind", str(self.scratch), "/tmp", "--unshare-ipc", "--unshare-uts",
             "--unshare-cgroup-try", "--new-session", "--cap-drop", "ALL"]
        for cap in oci_spec.DEFAULT_CAPS:
            a += ["--cap-add", cap]
        if first:
            # exec's bwrap keeps the host pid namespace: a server it daemonizes must outlive
            # it (bwrap's PID 1 would take it down); the cgroup still finds and kills it.
            a += ["--unshare-pid", "--die-with-parent"]
        if self.spec.volume is not None:
            a += ["--bind", str(self.spec.volume), self.data_dir]
        for k, v in sorted(self.spec.env.items()):
            a += ["--setenv", k, v]
        if seccomp_fd is not None:
            a += ["--seccomp", str(seccomp_fd)]
        return [*a, "--", *argv]

    def _seccomp_fd(self) -> int | None:
        if self._bpf is None:
            return None
        r, w = os.pipe()
        os.write(w, self._bpf)  # 3 KB: fits in the pipe buffer
        os.close(w)
        return r

    def launch(self, argv: list[str] | None = None) -> None:
        fd = self._seccomp_fd()
        try:
            self.popen(self._bwrap_argv(argv or self.spec.argv or IDLE_ARGV, fd),
                       pass_fds=(fd,) if fd is not None else ())
        finally:
            if fd is not None:
                os.close(fd)

    def exec(self, argv: list[str], timeout: float = 60.0) -> Completed:
        """A second bwrap in the same netns, rootfs, volume, /tmp, cgroup and seccomp filter
        (bwrap cannot enter a running sandbox; nsenter alone would bypass its filter,
        capability drop and no_new_privs)."""
        fd = self._seccomp_fd()
        try:
            cp = run_cmd(self._bwrap_argv(argv, fd, first=False), timeout=timeout, check=False,
                         preexec_fn=self._join_cgroup,
                         pass_fds=(fd,) if fd is not None else ())
        finally:
            if fd is not None:
                os.close(fd)
        return Completed(argv, cp.returncode, cp.stdout, cp.stderr)
