"""The agent-VM sandbox both VMMs share (QEMU, Firecracker): everything but the VMM's own
command line or API calls.

A VM here is: a state directory STATE_DIR/vm/<environment>/<id> (agent socket, console log,
command line, the VMM's pid), a tap from vmnet.py, the tool's initramfs and kernel arguments
(helpers/vminit.sh), optionally a root disk, a data disk that is a raw image file on the
benchmark volume, and the guest agent (helpers/agent.c) answering exec. A driver says how to
spawn its VMM (`vmm_command`), how to set it up before the guest runs (`vmm_configure`, after
which the start is marked "created"), how to let it run (`vmm_start`) and how to pause and
resume it (`vmm_pause`/`vmm_resume`, for the runner's freeze).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import subprocess
import time
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from sandbench import paths, settings, vmnet
from sandbench.environments.base import (
    IDLE_ARGV,
    Completed,
    Environment,
    Leftover,
    Limits,
    Sandbox,
    SandboxSpec,
    tail_file,
)
from sandbench.errors import SandboxError, StepTimeout, command_evidence
from sandbench.vm import disk
from sandbench.vm.agent_client import AgentClient, encode_argv

#: Bound on the VMM coming up (process spawned until its monitor or API answers).
LAUNCH_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
#: The kernel's command line limit (COMMAND_LINE_SIZE is 2048 on x86) less a margin.
CMDLINE_MAX = 2000


@dataclass(frozen=True)
class Drive:
    id: str
    path: Path
    role: str  # "root" or "data"
    #: Copy-on-write over a shared cached image (QEMU snapshot=on): never written.
    snapshot: bool = False


def state_root(env_name: str) -> Path:
    return paths.STATE_DIR / "vm" / env_name


class AgentVmEnvironment(Environment):
    """What QEMU and Firecracker environments share: resources from the run's limits, the
    boot bound, and the leftovers of killed runs."""

    isolation_class = "VM"

    family = "vm"
    #: Guest RAM and boot bound when the run sets no limit / no override.
    default_memory_mib: int = 256
    default_boot_timeout_s: float = 60.0
    #: How the VMM is told the vCPU count and RAM (recorded with the limits).
    resource_flags: str = ""

    @property
    def boot_timeout_s(self) -> float:
        """Bound on a boot (launch until the guest answers); SANDBENCH_VM_BOOT_TIMEOUT
        overrides it (systemd under TCG takes tens of seconds)."""
        return float(settings.value("SANDBENCH_VM_BOOT_TIMEOUT") or self.default_boot_timeout_s)

    def guest_memory_mib(self, limits: Limits) -> int:
        return limits.memory_mib or self.default_memory_mib

    @staticmethod
    def guest_vcpus(limits: Limits) -> int:
        """The containers' CPU limit as whole vCPUs: rounded up, at least one."""
        return max(1, math.ceil(limits.cpus)) if limits.cpus else 1

    def limits_applied(self, limits: Limits) -> dict[str, Any]:
        return {
            "cpus": self.guest_vcpus(limits),
            "memory_mib": self.guest_memory_mib(limits),
            "how": f"guest vCPUs and RAM ({self.resource_flags}); CPU limit rounded up to "
            "whole vCPUs, the memory limit is the guest's RAM",
        }

    def memory_reserved_mib(self, limits: Limits) -> int | None:
        return self.guest_memory_mib(limits)

    def vm_facts(self) -> dict[str, Any]:
        return {
            "guest_memory_mib": self.default_memory_mib,
            "vcpus": 1,
            "resources": "from the run's limits: vCPUs = cpus rounded up, guest RAM = memory",
            "network": "tap",
            "data_volume": "raw image file on the benchmark volume, virtio-blk",
        }

    def leftovers(self) -> list[Leftover]:
        """VMM processes recorded in this environment's state directories (their command line
        names the directory, so a recycled pid is never killed), their taps and the
        directories themselves."""
        root = state_root(self.name)
        found: list[Leftover] = []
        for d in sorted(root.iterdir()) if root.is_dir() else []:
            if _owner_alive(d):
                continue  # a sandbox of a run still going (this one or another)
            pid = _recorded_pid(d)
            if pid is not None:
                found.append(Leftover("process", f"{pid} ({d.name})", partial(_kill, pid)))
            tap = vmnet.tap_name(d.name) if _safe_id(d.name) else None
            if tap and Path(f"/sys/class/net/{tap}").exists():
                found.append(Leftover("tap", tap, partial(vmnet.destroy_dev, tap)))
            found.append(Leftover("state", str(d), partial(shutil.rmtree, d, True)))
        return found


def _safe_id(name: str) -> bool:
    try:
        paths.check_id(name)
    except ValueError:
        return False
    return True


def _write_owner(d: Path) -> None:
    me = psutil.Process()
    (d / "owner").write_text(f"{me.pid} {me.create_time()!r}\n")


def _owner_alive(d: Path) -> bool:
    """Whether the process that made state directory d still runs (pid and start time)."""
    try:
        pid_s, start_s = (d / "owner").read_text().split()
        return psutil.Process(int(pid_s)).create_time() == float(start_s)
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return True  # being written: not ours to judge
    except psutil.Error:
        return False


def _recorded_pid(d: Path) -> int | None:
    """The pid in d/pid if that process is alive and its command line names d."""
    try:
        pid = int((d / "pid").read_text().strip())
        cmd = " ".join(psutil.Process(pid).cmdline())
    except (OSError, ValueError, psutil.Error):
        return None
    return pid if f"{d}/" in cmd else None


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(psutil.Error):
        psutil.Process(pid).wait(STOP_TIMEOUT_S)


class AgentVmSandbox(Sandbox):
    network_path = "tap"
    volume_kind = "virtio-disk"
    data_dir = "/data"
    scratch_dir = "/tmp"
    bind_address = "0.0.0.0"
    #: What the VMM is called in messages.
    vmm: str = "VMM"
    #: PID 1 on a root disk: "agent" or "systemd".
    guest_init: str = "agent"

    def __init__(
        self,
        env: AgentVmEnvironment,
        spec: SandboxSpec,
        *,
        agent_socket: str,
        vsock_port: int | None = None,
    ) -> None:
        super().__init__(paths.new_id(), env.name)
        self.env = env
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self.argv: list[str] = list(spec.argv or IDLE_ARGV)
        self.tap: vmnet.Tap | None = None
        self.drives: list[Drive] = []
        self.data_disk: Path | None = None
        self.dir = state_root(env.name) / self.name
        self.dir.mkdir(parents=True, mode=0o700)
        _write_owner(self.dir)
        self.socket = self.dir / agent_socket
        self.log = spec.log or (self.dir / "console.log")
        self.agent = AgentClient(self.socket, alive=self._alive, vsock_port=vsock_port)
        self.boot_timeout_s = env.boot_timeout_s
        self.memory_mib = env.guest_memory_mib(spec.limits)
        self.vcpus = env.guest_vcpus(spec.limits)
        try:
            t0 = time.perf_counter_ns()
            self.prepare_vmm()
            if spec.volume is not None:
                self.data_disk = disk.volume_disk(spec.volume, self.name, spec.volume_size_mib)
                self.drives.append(Drive("data", self.data_disk, "data"))
            self.tap = vmnet.create(self.name)
            self.prepare_time_s = (time.perf_counter_ns() - t0) / 1e9
        except BaseException:
            self._stop()
            raise
        self._address = self.tap.guest_ip
        self.host_address = self.tap.host_ip

    # -- what a VMM driver provides ---------------------------------------------------------
    @abstractmethod
    def prepare_vmm(self) -> None:
        """Find the binary, kernel and initramfs; add the root drive if the guest has one."""

    @abstractmethod
    def vmm_kernel_args(self) -> list[str]:
        """Kernel arguments this VMM's guest needs before the tool's own."""

    @abstractmethod
    def vmm_command(self, argv: list[str]) -> list[str]:
        """The VMM's command line (argv: the guest's first process)."""

    @abstractmethod
    def vmm_configure(self, argv: list[str]) -> None:
        """After the spawn: wait for the VMM to answer and set the machine up, not running."""

    @abstractmethod
    def vmm_start(self) -> None:
        """Let the configured machine run."""

    @abstractmethod
    def vmm_pause(self) -> None: ...

    @abstractmethod
    def vmm_resume(self) -> None: ...

    # -- shared ----------------------------------------------------------------------------
    def device_of(self, role: str) -> str | None:
        """The guest's name for a drive (virtio-blk disks are vda, vdb, ... in drive order)."""
        for i, d in enumerate(self.drives):
            if d.role == role:
                return f"vd{chr(ord('a') + i)}"
        return None

    def kernel_args(self, argv: list[str]) -> list[str]:
        assert self.tap is not None
        args = [*self.vmm_kernel_args(), "quiet", *self.tap.kernel_args()]
        args.append(f"sandbench.hostname={self.name}")
        root, data = self.device_of("root"), self.device_of("data")
        if root is not None:
            args += [f"sandbench.root={root}", f"sandbench.init={self.guest_init}"]
        if data is not None:
            args.append(f"sandbench.data={data}")
        args.append(f"sandbench.argv={encode_argv(argv)}")
        if len(" ".join(args)) > CMDLINE_MAX:
            raise SandboxError("the first process's argv is too long for the kernel command line")
        return args

    def evidence(self, **more: Any) -> dict[str, Any]:
        """The VMM's command, exit status and console tail, for a failure."""
        saved = self.dir / "cmdline"
        cmd = saved.read_text().split("\n") if saved.exists() else []
        rc = self.proc.poll() if self.proc is not None else None
        return command_evidence([c for c in cmd if c], rc, tail_file(self.log, 2000), "",
                                console_log=str(self.log), **more)  # fmt: skip

    def failure_evidence(self) -> dict[str, Any]:
        return self.evidence(state=self.describe_state())

    def fail(self, message: str, timeout: bool = False) -> SandboxError:
        text = f"{self.env_name}: {message}; console: {tail_file(self.log)}"
        return (StepTimeout if timeout else SandboxError)(text, self.evidence())

    @contextlib.contextmanager
    def _vmm_step(self) -> Iterator[None]:
        """A VMM step's error raised as this sandbox's failure: with the VMM's command, exit
        status and console tail (a StepTimeout stays one)."""
        try:
            yield
        except StepTimeout as e:
            raise self.fail(str(e), timeout=True) from None
        except SandboxError as e:
            raise self.fail(str(e)) from None

    def _alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _spawn(self, cmd: list[str]) -> None:
        """Start the VMM process (its own session, output to the console log), recorded in
        the sandbox's directory for evidence and for clean."""
        (self.dir / "cmdline").write_text("\n".join(cmd) + "\n")
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        (self.dir / "pid").write_text(f"{self.proc.pid}\n")

    def _end_vmm(self) -> None:
        """End the VMM process (TERM, then KILL); the tap, the disks and the directory stay."""
        self.agent.close()
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=STOP_TIMEOUT_S)

    # -- checkpoint and restore: the machine's state to a file, a new VMM process from it ----
    def vmm_save(self, image_dir: Path) -> None:
        """Pause the machine and write its whole state into image_dir."""
        raise SandboxError(f"{self.env_name} has no checkpoint path")

    def vmm_load(self, image_dir: Path) -> None:
        """Start a new VMM process from the state in image_dir and let the machine run."""
        raise SandboxError(f"{self.env_name} has no restore path")

    def checkpoint(self, image_dir: Path) -> None:
        with self._vmm_step():
            self.vmm_save(image_dir)
        self._end_vmm()

    def restore(self, image_dir: Path) -> None:
        with self._vmm_step():
            self.vmm_load(image_dir)

    def discard(self) -> None:
        self._end_vmm()

    def launch(self, argv: list[str] | None = None) -> None:
        args = argv or self.spec.argv or IDLE_ARGV
        self.argv = list(args)  # the first process: a restore starts the same machine again
        self._spawn(self.vmm_command(args))
        with self._vmm_step():
            self.vmm_configure(args)
        self.mark("created")
        with self._vmm_step():
            self.vmm_start()

    def wait_ready(self, timeout: float | None = None) -> float:
        """Bounded wait until the guest agent answers; seconds waited."""
        try:
            return self.agent.wait_ready(timeout or self.boot_timeout_s)
        except StepTimeout as e:
            raise self.fail(str(e), timeout=True) from None

    def exec(self, argv: list[str], timeout: float = 60.0) -> Completed:
        self.wait_ready()
        return self.agent.run(argv, self.spec.env, timeout)

    def background(self, argv: list[str]) -> int:
        """Start argv detached inside the guest (stdio /dev/null); its guest pid."""
        self.wait_ready()
        return self.agent.background(argv, self.spec.env)

    def limits_enforced(self) -> dict[str, Any]:
        return {
            "cpus": self.vcpus,
            "memory_mib": self.memory_mib,
            "how": f"guest vCPUs and RAM ({self.env.resource_flags})",
        }

    def host_pids(self) -> list[int]:
        # The VMM's private memory includes the guest's RAM (as the paper counted it).
        return [self.proc.pid] if self._alive() and self.proc is not None else []

    def describe_state(self) -> str:
        if self.proc is None:
            return "not launched"
        rc = self.proc.poll()
        return f"{self.vmm} pid {self.proc.pid} " + ("running" if rc is None else f"exited {rc}")

    def _pause(self) -> bool:
        """The VMM's own pause (vCPUs stopped, guest clock handled by the VMM); the base
        falls back to signals when the VMM does not answer."""
        if not self._alive():
            return False
        try:
            self.vmm_pause()
        except (OSError, SandboxError):
            return False
        return True

    def _resume(self) -> None:
        if self._alive():
            self.vmm_resume()

    def _stop(self) -> None:
        self._end_vmm()
        if self.tap is not None:
            vmnet.destroy(self.tap)
        if self.data_disk is not None:
            self.data_disk.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)
