"""The contract every environment implements, so that a benchmark is written once."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
import weakref
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from sandbench.errors import SandboxError

# The contract's value types live on the ground floor; re-exported here for the drivers.
from sandbench.sandbox_values import Availability as Availability
from sandbench.sandbox_values import Completed as Completed
from sandbench.sandbox_values import Leftover as Leftover
from sandbench.sandbox_values import Limits as Limits
from sandbench.sandbox_values import SandboxSpec as SandboxSpec

#: The first process of an idle sandbox: the probe helper waiting forever.
IDLE_ARGV = ["/sb/probe", "idle"]

#: Phases of a start, in order; startup_time is their sum (one clock).
PHASES = ("prepare", "create", "start", "network")

_LIVE: weakref.WeakSet[Sandbox] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def live_sandboxes() -> list[Sandbox]:
    """Sandboxes created and not yet stopped in this process (the runner freezes those of
    environments other than the one being measured)."""
    with _LIVE_LOCK:
        return list(_LIVE)


class Sandbox(ABC):
    """A running sandbox. Use it as a context manager so that stop always runs."""

    _address: str = ""
    #: Address of the host side of the sandbox's link, reachable from inside it.
    host_address: str
    #: Network path used, recorded with results (veth, docker-bridge, netstack+veth, ...).
    network_path: str = "veth"

    #: Where the benchmark volume (spec.volume) appears for commands run through exec.
    data_dir: str = "/data"
    #: A writable directory inside the sandbox for scratch files.
    scratch_dir: str = "/tmp"
    #: The address a server inside the sandbox binds to so that the host reaches it.
    bind_address: str = "0.0.0.0"
    #: How the benchmark volume reaches the sandbox: "bind-mount", "host-directory",
    #: "virtio-disk" (a raw image file on the volume's file system), ...
    volume_kind: str = "bind-mount"
    #: Seconds a start may take before the probe must have connected (VMs under emulation
    #: boot for minutes); 0 = the run's probe timeout.
    boot_timeout_s: float = 0.0
    #: Whether O_DIRECT I/O on data_dir reaches the host's block device. False where the
    #: environment serves it from a cache of its own (gVisor's sentry page cache): the disk
    #: benchmark flags such samples "page_cache" with direct_io_note as the reason.
    direct_io: bool = True
    direct_io_note: str = ""
    #: Phases of PHASES this environment cannot separate, each with the phase it is folded
    #: into, e.g. {"create": "start"} for a runtime whose one command creates and starts.
    folded_phases: dict[str, str] = {}

    def __init__(self, name: str, env_name: str) -> None:
        self.name = name
        self.env_name = env_name
        self._stopped = False
        self._frozen = False
        self._native_paused = False
        self._signalled = False
        self._cg_frozen: Path | None = None
        #: perf_counter_ns marks set by the driver during launch ("created", "started").
        self.marks: dict[str, int] = {}
        with _LIVE_LOCK:
            _LIVE.add(self)

    def mark(self, what: str) -> None:
        """Record the monotonic time of a point of the start: drivers call mark("created")
        in launch() when their create step returned (a runtime with one command that creates
        and starts declares folded_phases instead); the startup benchmark takes the end of
        launch() as "started", so every environment's phases have the same boundaries."""
        self.marks[what] = time.perf_counter_ns()

    def limits_enforced(self) -> dict[str, Any]:
        """The limits this sandbox actually runs under and how they are enforced
        (recorded in meta.json and the report); {} = none."""
        return {}

    def guest_boot_report(self) -> dict[str, Any]:
        """A VM's own account of its boot (systemd-analyze), empty for everything else."""
        return {}

    def describe_state(self) -> str:
        """The sandbox's state as its runtime reports it, for a failure's evidence."""
        return ""

    def failure_evidence(self) -> dict[str, Any]:
        """What shows why a wait on this sandbox failed (a probe that never connected): its
        state, and for a VM the VMM's command, status and console tail. Never raises."""
        try:
            return {"state": self.describe_state()}
        except Exception as exc:  # noqa: BLE001 - evidence, never a new failure
            return {"state": f"(could not describe the sandbox: {exc})"}

    #: Also stop the host processes with SIGSTOP after the runtime's own pause: gVisor's
    #: sentry keeps running while paused (timers, netstack: about 3 % of a core each on
    #: systrap here), which would disturb the environment being measured.
    stop_after_pause: bool = False

    def _pause(self) -> bool:
        """The runtime's own pause (runc/runsc pause, docker/podman pause, QMP stop); True
        when it paused. The default has none: freeze() then stops the processes itself."""
        return False

    def _resume(self) -> None:  # noqa: B027 - the default pause does nothing to undo
        """Undo _pause()."""

    def freezer_cgroup(self) -> str | None:
        """The cgroup (relative to each hierarchy's root, under sandbench/) that holds all of
        this sandbox's processes and nothing else, where freezing is one write; None = none
        (the runtime's pause or signals are used)."""
        return None

    def freeze(self) -> None:
        """Keep this sandbox from running while another environment is measured: its own
        cgroup's freezer where it has one (one write, atomic against forks, and a gVisor
        sentry stops with its tasks), else the runtime's own pause, and SIGSTOP of every host
        process where it has neither, where the pause failed, or where a paused sandbox still
        runs (stop_after_pause)."""
        if self._frozen or self._stopped:
            return
        rel = self.freezer_cgroup()
        if rel is not None:
            from sandbench import cgroups

            try:
                self._cg_frozen = cgroups.freeze(rel)
            except Exception:  # noqa: BLE001 - fall back to the runtime's pause
                self._cg_frozen = None
            if self._cg_frozen is not None:
                self._frozen = True
                self._native_paused = self._signalled = False
                return
        try:
            self._native_paused = self._pause()
        except Exception:  # noqa: BLE001 - fall back to signals, which every sandbox takes
            self._native_paused = False
        self._frozen = True
        self._signalled = not self._native_paused or self.stop_after_pause
        if self._signalled:
            for pid in self._pids_quiet():
                with contextlib.suppress(psutil.Error):
                    psutil.Process(pid).suspend()

    def thaw(self) -> None:
        if not self._frozen:
            return
        self._frozen = False
        if self._cg_frozen is not None:
            from sandbench import cgroups

            frozen, self._cg_frozen = self._cg_frozen, None
            cgroups.thaw(frozen)
            return
        if self._signalled:
            for pid in self._pids_quiet():
                with contextlib.suppress(psutil.Error):
                    psutil.Process(pid).resume()
        if self._native_paused:
            self._resume()

    @property
    def frozen(self) -> bool:
        return self._frozen

    def _pids_quiet(self) -> list[int]:
        try:
            return self.host_pids()
        except Exception:  # noqa: BLE001 - a dead sandbox has nothing to freeze
            return []

    @property
    def address(self) -> str:
        """Address the host uses to reach the sandbox."""
        return self._address

    #: Seconds spent in prepare (network set-up), reported beside the startup time.
    prepare_time_s: float = 0.0

    @abstractmethod
    def launch(self, argv: list[str] | None = None) -> None:
        """Run the launch command; argv (or spec.argv, or an idle process) is the first
        process. Returns when the runtime reports the sandbox started."""

    def wait_ready(self) -> float | None:
        """Block until exec works (a VM's agent answers) and return the seconds waited; start()
        calls it after launch(). Containers are ready when launch returns."""
        return None

    @abstractmethod
    def exec(self, argv: list[str], timeout: float = 60.0) -> Completed:
        """Run argv inside the sandbox and wait for it."""

    @abstractmethod
    def host_pids(self) -> list[int]:
        """Host processes that exist because of this sandbox (for memory accounting)."""

    def monitor_pids(self) -> list[int]:
        """Those of host_pids() that are the sandboxing tool's own per-sandbox monitors
        (firejail's parent, lxc-start, systemd-nspawn), not the workload: the memory
        benchmark counts them apart as the sandbox's monitor overhead. [] = none."""
        return []

    @abstractmethod
    def _stop(self) -> None:
        """Stop and remove everything this sandbox created. Must tolerate partial starts."""

    # -- checkpoint and restore (the restore benchmark; Environment.restore_unavailable) --
    #: How checkpoint and restore are made here (commands and flags), kept with the samples.
    checkpoint_how: str = ""

    def checkpoint(self, image_dir: Path) -> None:
        """Save the running workload's whole state into image_dir (an empty directory on
        the benchmark volume); the workload is gone afterwards and lives on in the image,
        while the sandbox's own resources (network namespace, bundle, disks) stay."""
        raise SandboxError(f"{self.env_name} has no checkpoint path")

    def restore(self, image_dir: Path) -> None:
        """Bring the workload back from image_dir into this sandbox's resources; returns
        when the runtime says it runs again (readiness is the benchmark's to observe)."""
        raise SandboxError(f"{self.env_name} has no restore path")

    def discard(self) -> None:
        """End a restored workload but keep the sandbox's resources, so that the same image
        can be restored again (the warm restore)."""
        raise SandboxError(f"{self.env_name} has no restore path")

    def helper(self, name: str) -> str:
        """Path of a static helper (probe, syscall timer) as seen inside the sandbox."""
        return f"/sb/{name}"

    def stop(self) -> None:
        if not self._stopped:
            if self._frozen:
                self.thaw()  # a stopped process ignores SIGTERM until continued
            self._stopped = True
            with _LIVE_LOCK:
                _LIVE.discard(self)
            self._stop()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Environment(ABC):
    name: str
    #: Short description for doctor and the report.
    description: str = ""
    #: "container", "gvisor", "vm", "host" - lets the report group and colour.
    family: str = "container"
    #: One of "host", "process sandbox", "container", "user-space kernel",
    #: "system container", "VM" (agreed contract; the report groups rows by it).
    isolation_class: str = "container"
    #: The runtime of the paper this environment measures ("runc", "gvisor", "kata", "qemu",
    #: "firecracker"; the paper's Docker ran runc), "" for one the paper did not run: the
    #: scorecard compares its version with the paper's when a claim does not hold.
    paper_lineage: str = ""
    #: Why this environment has no native way to run a command in a running sandbox
    #: (the exec benchmark then says "not applicable" with it); "" = it has one.
    exec_not_applicable: str = ""

    def restore_unavailable(self, image: str) -> str:
        """Why a sandbox of this environment, from `image`, cannot be checkpointed and
        restored here, with what would make it possible; "" = Sandbox.checkpoint, restore
        and discard work."""
        return f"{self.name} has no checkpoint/restore path in sandbench"

    @abstractmethod
    def available(self) -> Availability:
        """Whether this machine can run it, with a reason a person can act on when not.
        Must be bounded in time: a hanging runtime is found out by a probe with a timeout."""

    @abstractmethod
    def facts(self) -> dict[str, Any]:
        """Versions, binary paths, platform, acceleration: recorded with every result."""

    @abstractmethod
    def prepare(self, spec: SandboxSpec) -> Sandbox:
        """Everything before the launch command (network, bundle), not yet running. The
        startup benchmark times from `launch()`; the sandbox's stop() undoes a prepare too."""

    def start(self, spec: SandboxSpec) -> Sandbox:
        """Prepare and launch. On failure, everything already created is removed."""
        sb = self.prepare(spec)
        try:
            sb.launch()
            sb.wait_ready()
        except BaseException:
            sb.stop()
            raise
        return sb

    def flags(self) -> list[str]:
        """Flags carried by every sample of this environment (e.g. 'emulated')."""
        return []

    def limits_applied(self, limits: Limits) -> dict[str, Any]:
        """How this environment enforces the run's limits, for meta.json and the report:
        e.g. {"cpus": 2.0, "memory_mib": 2048, "how": "cgroup v1 (runc)"}; {} = not at all."""
        return {}

    def memory_reserved_mib(self, limits: Limits) -> int | None:
        """Memory each sandbox reserves up front whether it uses it or not (a VM's guest
        RAM), so that a benchmark starting many can bound how many fit; None = none."""
        return None

    def leftovers(self) -> list[Leftover]:
        """What killed runs of this environment left on the host, matched only by
        sandbench's own mark; `sandbench clean` removes these."""
        return []

    def shared_pids(self) -> list[int]:
        """Daemons shared by all sandboxes (dockerd, containerd): measured once, not per box."""
        return []

    def setup(self) -> None:  # noqa: B027 - most environments need nothing run-wide
        """Run-wide set-up that no measured interval should pay for: a daemon, its network.
        The runner calls it before each benchmark's session in this environment (so it must
        be cheap once done); close() undoes it. Otherwise the first start of a run would
        carry it, and its startup round would measure the set-up, not the sandbox."""

    def close(self) -> None:  # noqa: B027 - most environments hold nothing run-wide
        """Release environment-wide resources (a daemon the tool started) at the end of a run."""


def engine_flags(spec: SandboxSpec, data_dir: str) -> list[str]:
    """The `create` flags Docker and Podman share for a spec: CPU and memory limits, the
    benchmark volume bind-mounted at data_dir, and the environment variables."""
    flags: list[str] = []
    lim = spec.limits
    if lim.cpus is not None:
        flags += ["--cpus", f"{lim.cpus:g}"]
    if lim.memory_mib is not None:
        flags += ["--memory", f"{lim.memory_mib}m"]
    if spec.volume is not None:
        flags += ["--mount", f"type=bind,source={spec.volume},target={data_dir}"]
    for k, v in sorted(spec.env.items()):
        flags += ["--env", f"{k}={v}"]
    return flags


def run_cmd(
    argv: list[str], timeout: float, check: bool = True, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """subprocess.run with a bound; a timeout or failure becomes a SandboxError naming argv."""
    from sandbench import spawn
    from sandbench.errors import SandboxError, StepTimeout, command_evidence

    try:
        cp = spawn.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        raise StepTimeout(f"{' '.join(argv[:3])} did not finish within {timeout:g} s",
                          command_evidence(argv, None, e.stdout, e.stderr,
                                           timeout_s=timeout)) from None
    except FileNotFoundError:
        raise SandboxError(f"{argv[0]}: not found", command_evidence(argv, None, "", "")) from None
    if check and cp.returncode != 0:
        tail = (cp.stderr or cp.stdout).strip()[-500:]
        raise SandboxError(f"{' '.join(argv[:3])} exited {cp.returncode}: {tail}",
                           command_evidence(argv, cp.returncode, cp.stdout, cp.stderr))
    return cp


def tail_file(path: Path, n: int = 400) -> str:
    """The end of a log file, for error messages that say what the runtime said."""
    try:
        return path.read_text(errors="replace").strip()[-n:]
    except OSError:
        return "(no log)"
