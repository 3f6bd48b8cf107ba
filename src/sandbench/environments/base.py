"""The contract every environment implements, so that a benchmark is written once."""

from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""

    @classmethod
    def yes(cls) -> Availability:
        return cls(True, "")

    @classmethod
    def no(cls, reason: str) -> Availability:
        return cls(False, reason)


@dataclass(frozen=True)
class Completed:
    """Outcome of a command run inside a sandbox."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> Completed:
        if self.returncode != 0:
            from sandbench.errors import SandboxError

            tail = (self.stderr or self.stdout).strip()[-500:]
            raise SandboxError(f"{self.argv[0]} exited {self.returncode}: {tail}")
        return self


@dataclass(frozen=True)
class Limits:
    """Resources every sandbox gets, the same for each environment (None = unlimited)."""

    cpus: float | None = None
    memory_mib: int | None = None


@dataclass
class SandboxSpec:
    """What to start. `argv` is the sandbox's first process; None means an idle process."""

    image: str = "minimal"
    argv: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    #: Host directory mounted read-write at /data (the disk benchmark's volume), if any.
    volume: Path | None = None
    #: Where the first process's stdout/stderr go (a file the tool owns); None = discarded.
    log: Path | None = None


class Sandbox(ABC):
    """A running sandbox. Use it as a context manager so that stop always runs."""

    _address: str = ""
    #: Address of the host side of the sandbox's link, reachable from inside it.
    host_address: str
    #: Network path used, recorded with results (veth, docker-bridge, netstack+veth, ...).
    network_path: str = "veth"

    def __init__(self, name: str, env_name: str) -> None:
        self.name = name
        self.env_name = env_name
        self._stopped = False

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

    @abstractmethod
    def _stop(self) -> None:
        """Stop and remove everything this sandbox created. Must tolerate partial starts."""

    def helper(self, name: str) -> str:
        """Path of a static helper (probe, syscall timer) as seen inside the sandbox."""
        return f"/sb/{name}"

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
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

    def shared_pids(self) -> list[int]:
        """Daemons shared by all sandboxes (dockerd, containerd): measured once, not per box."""
        return []

    def close(self) -> None:  # noqa: B027 - most environments hold nothing run-wide
        """Release environment-wide resources (a daemon the tool started) at the end of a run."""


def run_cmd(
    argv: list[str], timeout: float, check: bool = True, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """subprocess.run with a bound; a timeout or failure becomes a SandboxError naming argv."""
    from sandbench.errors import SandboxError, StepTimeout

    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        raise StepTimeout(f"{' '.join(argv[:3])} did not finish within {timeout:g} s") from None
    except FileNotFoundError:
        raise SandboxError(f"{argv[0]}: not found") from None
    if check and cp.returncode != 0:
        tail = (cp.stderr or cp.stdout).strip()[-500:]
        raise SandboxError(f"{' '.join(argv[:3])} exited {cp.returncode}: {tail}")
    return cp


def tail_file(path: Path, n: int = 400) -> str:
    """The end of a log file, for error messages that say what the runtime said."""
    try:
        return path.read_text(errors="replace").strip()[-n:]
    except OSError:
        return "(no log)"
