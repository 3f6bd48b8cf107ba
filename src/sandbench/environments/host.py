"""The bare host: the workload runs as plain processes, reached over loopback. The baseline.

Same resources as every other environment: prepare() makes a transient cgroup
sandbench/<id> with the run's CPU and memory limits, and every process launch() or exec()
starts is in it from its first instruction (it joins before exec), so a server it forks or
daemonizes stays limited and is found and killed at stop. The cgroup goes at stop.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from sandbench import cgroups, images, paths, procs
from sandbench.environments import cgroup_limits, criu
from sandbench.environments.base import (
    IDLE_ARGV,
    Availability,
    Completed,
    Environment,
    Leftover,
    Limits,
    Sandbox,
    SandboxSpec,
    run_cmd,
)
from sandbench.errors import SandboxError

STOP_TIMEOUT = 10.0
HOW = "transient cgroup sandbench/<id>: cpu.cfs_quota_us and memory.limit_in_bytes (v1), " \
      "cpu.max and memory.max (v2); launch and exec join it before exec"


class HostEnvironment(Environment):
    name = "host"
    description = "bare host processes (baseline)"
    family = "host"
    isolation_class = "host"

    def restore_unavailable(self, image: str) -> str:
        problem = criu.problem()
        return (f"{self.name}: checkpointing a process tree goes through CRIU: {problem}"
                if problem else f"{self.name}: CRIU dumps of its processes are not driven by "
                "sandbench (runc's CRIU path is measured as runc)")

    def available(self) -> Availability:
        return Availability.yes()

    def facts(self) -> dict[str, Any]:
        return {
            "kernel": platform.release(),
            "network": "loopback",
            "driver": "process",
            "seccomp": "none (host processes, the unisolated baseline)",
            "start_phases": "prepare (cgroup, scratch directory) / start (fork+exec; no "
            "create step: folded into start) / network",
            "freeze": "SIGSTOP/SIGCONT of the sandbox's processes",
        }

    def limits_applied(self, limits: Limits) -> dict[str, Any]:
        if limits.cpus is None and limits.memory_mib is None:
            return {}
        return {"cpus": limits.cpus, "memory_mib": limits.memory_mib, "how": HOW}

    def prepare(self, spec: SandboxSpec) -> HostSandbox:
        return HostSandbox(spec, self.name)

    def leftovers(self) -> list[Leftover]:
        """Scratch directories and transient cgroups of host sandboxes a killed run left:
        state/host/<id> and sandbench/<id> cgroups that only the host environment makes
        (OCI runtimes' sandbench/<id> cgroups hold a container's processes or belong to a
        bundle, and are found by their own environment)."""
        found: list[Leftover] = []
        root = paths.STATE_DIR / "host"
        if not root.is_dir():
            return found
        for d in sorted(root.iterdir()):
            if not d.is_dir() or not paths.PREFIX or not d.name.startswith(paths.PREFIX):
                continue
            rel = f"{cgroups.BASE}/{d.name}"

            def remove(d: Path = d, rel: str = rel) -> None:
                _kill_cgroup(rel)
                cgroups.remove_tree(rel)
                shutil.rmtree(d, ignore_errors=True)

            found.append(Leftover("host-sandbox", f"{d} and cgroup {rel}", remove))
        return found


def _cgroup_pids(rel: str) -> list[int]:
    """Every task in rel or a cgroup below it: systemd-nspawn and LXC move theirs into
    child cgroups (supervisor/payload, payload/monitor) of the one sandbench made."""
    pids: set[int] = set()
    for h in cgroups.hierarchies():
        for root, _dirs, _files in os.walk(h / rel):
            with contextlib.suppress(OSError, ValueError):
                pids |= {int(x) for x in (Path(root) / "cgroup.procs").read_text().split()}
    return sorted(pids)


def _kill_cgroup(rel: str) -> None:
    """SIGKILL everything in the cgroup until it is empty (a fork may race the first pass)."""
    deadline = time.monotonic() + STOP_TIMEOUT
    while (pids := _cgroup_pids(rel)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGCONT)  # a frozen process dies only once continued
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)


class HostSandbox(Sandbox):
    _address = "127.0.0.1"
    host_address = "127.0.0.1"
    network_path = "loopback"
    bind_address = "127.0.0.1"
    volume_kind = "host-directory"
    folded_phases = {"create": "start"}

    def __init__(self, spec: SandboxSpec, env_name: str = "host") -> None:
        super().__init__(paths.new_id(), env_name)
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self.cgroup = f"{cgroups.BASE}/{self.name}"
        self.scratch = paths.STATE_DIR / "host" / self.name
        self._procs_files: list[str] = []
        try:
            self.rootfs = images.ensure(spec.image).rootfs
            paths.state("host")
            self.scratch.mkdir(mode=0o700)
            cgroups.create(self.cgroup, spec.limits)
            self._procs_files = [
                str(h / self.cgroup / "cgroup.procs")
                for h in cgroups.hierarchies()
                if (h / self.cgroup).is_dir()
            ]
        except BaseException:
            self._stop()
            raise
        self.scratch_dir = str(self.scratch)
        self.data_dir = str(spec.volume) if spec.volume is not None else self.scratch_dir

    def _join_cgroup(self) -> None:
        # Runs in the child between fork and exec: only os-level writes, no allocation-heavy
        # work, so it is safe even with other threads in the parent.
        for f in self._procs_files:
            fd = os.open(f, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)

    def _host_argv(self, argv: list[str]) -> list[str]:
        # The static helpers live in the image; on the host they run from its rootfs.
        if argv and argv[0].startswith("/sb/"):
            return [str(self.rootfs / argv[0].lstrip("/")), *argv[1:]]
        return argv

    def helper(self, name: str) -> str:
        return str(self.rootfs / "sb" / name)

    def launch(self, argv: list[str] | None = None) -> None:
        args = self._host_argv(argv or self.spec.argv or IDLE_ARGV)
        out = open(self.spec.log, "ab") if self.spec.log else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                env={**os.environ, **self.spec.env},
                preexec_fn=self._join_cgroup,  # noqa: PLW1509 - see _join_cgroup
            )
        except (OSError, subprocess.SubprocessError) as e:
            raise SandboxError(f"host: cannot start {args[0]}: {e}",
                               {"command": args, "cgroup": self.cgroup}) from None
        finally:
            if not isinstance(out, int):
                out.close()

    def exec(self, argv: list[str], timeout: float = 60.0) -> Completed:
        cp = run_cmd(self._host_argv(argv), timeout=timeout, check=False,
                     preexec_fn=self._join_cgroup)
        return Completed(argv, cp.returncode, cp.stdout, cp.stderr)

    def freezer_cgroup(self) -> str | None:
        # The transient cgroup holds the first process and every exec'd server.
        return self.cgroup if self.proc is not None else None

    def host_pids(self) -> list[int]:
        roots = [self.proc.pid] if self.proc else []
        # Servers started through exec() are not launch's children, but are in the cgroup.
        return procs.descendants([*roots, *_cgroup_pids(self.cgroup)])

    def describe_state(self) -> str:
        if self.proc is None:
            return "not launched"
        rc = self.proc.poll()
        state = "running" if rc is None else f"exited {rc}"
        return f"pid {self.proc.pid} {state}; cgroup {self.cgroup}: {_cgroup_pids(self.cgroup)}"

    def limits_enforced(self) -> dict[str, Any]:
        lim = self.spec.limits
        if lim.cpus is None and lim.memory_mib is None:
            return {}
        if self.proc is None or self.proc.poll() is not None:
            return {}
        return {**cgroup_limits.limits_of(self.proc.pid), "how": HOW}

    def _stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(psutil.NoSuchProcess, subprocess.TimeoutExpired):
                self.proc.wait(timeout=STOP_TIMEOUT)
        _kill_cgroup(self.cgroup)
        cgroups.remove_tree(self.cgroup)
        cgroups.remove_base_if_empty()
        shutil.rmtree(self.scratch, ignore_errors=True)
