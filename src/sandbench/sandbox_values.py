"""The value types of the sandbox contract (what an environment can say about itself, the
outcome of a command, the resources and what to start, a leftover to remove), on the ground
floor: cgroups, net, volume, cleanup and vm/ use them without importing the environments.
`sandbench.environments.base` re-exports them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
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

    @classmethod
    def tools(cls, *needed: tuple[str, str]) -> Availability:
        """yes when every (binary, Debian package) is on PATH, else no naming the first
        missing binary and the package that installs it."""
        import shutil

        for tool, pkg in needed:
            if shutil.which(tool) is None:
                return cls.no(f"{tool} not found: apt-get install {pkg}")
        return cls.yes()


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
            raise SandboxError(f"{self.argv[0]} exited {self.returncode}: {tail}",
                               self.evidence())
        return self

    def evidence(self, **more: Any) -> dict[str, Any]:
        from sandbench.errors import command_evidence

        return command_evidence(self.argv, self.returncode, self.stdout, self.stderr, **more)


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
    #: Size the volume must offer inside the sandbox (a VM's data disk image is made this
    #: big, as a file on the volume's file system); None = what the volume has.
    volume_size_mib: int | None = None
    #: Where the first process's stdout/stderr go (a file the tool owns); None = discarded.
    log: Path | None = None
    #: Apply the default seccomp profile (Docker's and Podman's) where the environment can;
    #: a study option turns it off everywhere to measure what it costs.
    seccomp: bool = True


@dataclass(frozen=True)
class Leftover:
    """Something a killed run left, found by the environment that makes such things. It
    matches only objects carrying sandbench's mark (name pattern plus owner record, label,
    state root, containerd namespace, its own daemon's descendants)."""

    kind: str  # "container", "process", "netns", "cgroup", ...
    ident: str  # what a person reads: an id, a path, a pid and its name
    remove: Callable[[], None] = field(compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.kind} {self.ident}"
