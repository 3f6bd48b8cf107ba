"""The bare host: the workload runs as plain processes, reached over loopback. The baseline."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import subprocess
from typing import Any

import psutil

from sandbench import images, paths, procs
from sandbench.environments.base import (
    Availability,
    Completed,
    Environment,
    Sandbox,
    SandboxSpec,
    run_cmd,
)
from sandbench.environments.oci import IDLE_ARGV


class HostEnvironment(Environment):
    name = "host"
    description = "bare host processes (baseline)"
    family = "host"

    def available(self) -> Availability:
        return Availability.yes()

    def facts(self) -> dict[str, Any]:
        return {"kernel": platform.release(), "network": "loopback", "driver": "process"}

    def prepare(self, spec: SandboxSpec) -> HostSandbox:
        return HostSandbox(spec)


class HostSandbox(Sandbox):
    _address = "127.0.0.1"
    host_address = "127.0.0.1"
    network_path = "loopback"

    def __init__(self, spec: SandboxSpec) -> None:
        super().__init__(paths.new_id(), "host")
        self.spec = spec
        self.rootfs = images.ensure(spec.image).rootfs
        self.proc: subprocess.Popen[bytes] | None = None

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
            )
        finally:
            if not isinstance(out, int):
                out.close()

    def exec(self, argv: list[str], timeout: float = 60.0) -> Completed:
        cp = run_cmd(self._host_argv(argv), timeout=timeout, check=False)
        return Completed(argv, cp.returncode, cp.stdout, cp.stderr)

    def host_pids(self) -> list[int]:
        return procs.descendants([self.proc.pid]) if self.proc else []

    def _stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(psutil.NoSuchProcess):
            self.proc.wait(timeout=10)


