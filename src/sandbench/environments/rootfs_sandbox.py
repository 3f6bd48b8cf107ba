"""What the namespace sandboxes driven as host processes share (bubblewrap, firejail,
systemd-nspawn, LXC): the study's image rootfs as their root, the benchmark volume at /data,
a host scratch directory at /tmp, the netns + veth sandbench prepared (the runc path), and
the host sandbox's transient cgroup for limits and freezing.

Each driver says only how its own binary is started and entered; this class holds the rest
once: the image check, the link made and removed, the launch with its log, the addresses.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterable, Mapping

import psutil

from sandbench import net
from sandbench.environments.base import SandboxSpec
from sandbench.environments.host import HostSandbox
from sandbench.errors import SandboxError


class RootfsSandbox(HostSandbox):
    network_path = "veth"
    bind_address = "0.0.0.0"
    volume_kind = "bind-mount"
    data_dir = "/data"
    scratch_dir = "/tmp"
    #: Directories the environment's binary requires in the image (it refuses a tree
    #: without them); checked before anything else is made.
    needs: tuple[str, ...] = ()
    #: What the environment's binary is called in messages.
    tool = ""
    #: Whether launch's process stays outside the container as its monitor (nspawn, LXC):
    #: counted apart from the sandbox by the memory benchmark.
    launch_is_monitor = False

    def __init__(self, spec: SandboxSpec, env_name: str) -> None:
        super().__init__(spec, env_name)
        # HostSandbox set the host paths; inside, the workload sees the image's.
        self.data_dir = "/data"
        self.scratch_dir = "/tmp"
        self.link: net.Link | None = None
        try:
            needed = list(self.needs)
            if spec.volume is not None:
                needed.append("data")
            missing = [d for d in needed if not (self.rootfs / d).is_dir()]
            if missing:
                raise SandboxError(
                    f"{env_name}: image {spec.image!r} lacks "
                    f"{', '.join('/' + m for m in missing)} ({self.tool} needs them): "
                    "rebuild the image",
                    {"rootfs": str(self.rootfs), "missing": missing})
            self.prepare_more()
            self.link = net.create(self.name)
        except BaseException:
            self._stop()
            raise
        self._address = self.link.sandbox_ip
        self.host_address = self.link.host_ip

    def prepare_more(self) -> None:
        """The driver's own preparation (after the image check, before the link)."""

    def helper(self, name: str) -> str:
        return f"/sb/{name}"

    def popen(self, args: list[str], env: Mapping[str, str] | None = None,
              pass_fds: Iterable[int] = ()) -> None:
        """Start launch's process in the sandbox's cgroup from its first instruction, its
        output to the spec's log, in a session of its own (stop kills the group)."""
        out = open(self.spec.log, "ab") if self.spec.log else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True, env=dict(env) if env is not None else None,
                pass_fds=tuple(pass_fds),
                preexec_fn=self._join_cgroup,  # noqa: PLW1509 - see HostSandbox._join_cgroup
            )
        except (OSError, subprocess.SubprocessError) as e:
            raise SandboxError(f"{self.env_name}: cannot start {self.tool}: {e}",
                               {"command": args, "cgroup": self.cgroup}) from None
        finally:
            if not isinstance(out, int):
                out.close()

    def leader(self) -> int | None:
        """The container's PID 1: the first of launch's descendants in a pid namespace
        other than the host's, once leader_ready says the driver has finished with it."""
        if self.proc is None:
            return None
        host_ns = os.stat("/proc/self/ns/pid").st_ino
        with contextlib.suppress(psutil.Error):
            for p in sorted(psutil.Process(self.proc.pid).children(recursive=True),
                            key=lambda p: p.pid):
                with contextlib.suppress(OSError):
                    if os.stat(f"/proc/{p.pid}/ns/pid").st_ino != host_ns:
                        return p.pid if self.leader_ready(p.pid) else None
        return None

    def leader_ready(self, pid: int) -> bool:
        """Whether the container whose PID 1 is pid can be entered (drivers refine it)."""
        return True

    def wait_leader(self, timeout: float) -> int:
        """The leader's pid, waiting up to min(timeout, 10 s) for launch to make it (launch
        returns before the container runs); a container gone or never up raises."""
        deadline = time.monotonic() + min(timeout, 10.0)
        while (pid := self.leader()) is None:
            if self.proc is None or self.proc.poll() is not None \
                    or time.monotonic() > deadline:
                raise SandboxError(f"{self.env_name}: container {self.name} has no running "
                                   f"init: {self.describe_state()}",
                                   {"log": str(self.spec.log), "cgroup": self.cgroup})
            time.sleep(0.005)
        return pid

    def monitor_pids(self) -> list[int]:
        if not self.launch_is_monitor or self.proc is None or self.proc.poll() is not None:
            return super().monitor_pids()
        return [self.proc.pid]

    def environ(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, **(extra or {})}

    def _stop(self) -> None:
        try:
            super()._stop()
        finally:
            # Also reached from a failed __init__, before the link exists.
            link = getattr(self, "link", None)
            if link is not None:
                net.destroy(link)
                self.link = None
